"""launch.train end to end: outputs, resume, and every bad input exiting 2 untouched."""

import json
import os
import pathlib

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from launch import train as train_launcher
from lmopt import io
from tests.launch_util import TINY, assert_one_line_error, run_in_process, run_module, snapshot

SUMMARY_KEYS = {"optimizer", "model", "steps", "train_loss", "valid_loss", "initial_loss",
                "seconds", "compile_seconds", "num_params", "diverged"}


def _params(workdir, step):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  return restored["params"] if isinstance(restored, dict) else restored[1]


def test_train_writes_outputs_and_lowers_the_loss(tmp_path):
  workdir = str(tmp_path / "run")
  code = run_in_process(train_launcher.main, [*TINY, f"--workdir={workdir}", "--steps=30",
                                              "--learning_rate=0.05", "--eval_every=10"])
  assert code == 0
  summary = io.read_json(os.path.join(workdir, "summary.json"))
  assert SUMMARY_KEYS <= set(summary)
  assert summary["steps"] == 30 and not summary["diverged"]
  assert summary["train_loss"] < summary["initial_loss"]
  lines = [json.loads(l) for l in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == list(range(1, 31))
  assert sum("valid_loss" in l for l in lines) == 3
  assert os.path.exists(os.path.join(workdir, "tokenizer.json"))


def test_resume_matches_an_uninterrupted_run(tmp_path):
  common = [*TINY, "--learning_rate=0.05", "--checkpoint_every=3"]
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  assert run_in_process(train_launcher.main, [*common, f"--workdir={straight}", "--steps=6"]) == 0
  assert run_in_process(train_launcher.main, [*common, f"--workdir={split}", "--steps=3"]) == 0
  assert run_in_process(train_launcher.main, [*common, f"--workdir={split}", "--steps=6"]) == 0
  chex.assert_trees_all_close(_params(straight, 6), _params(split, 6), rtol=1e-6)
  lines = [json.loads(l)["step"] for l in pathlib.Path(split, "metrics.jsonl").read_text().splitlines()]
  assert lines == list(range(1, 7))


def test_resume_with_other_flags_is_refused(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  assert run_in_process(train_launcher.main, [*TINY, f"--workdir={workdir}", "--steps=2"]) == 0
  before = snapshot(workdir)
  capsys.readouterr()
  code = run_in_process(train_launcher.main, [*TINY, f"--workdir={workdir}", "--steps=4",
                                              "--learning_rate=0.5"])
  assert_one_line_error(capsys, code, "different optimizer", "--overwrite")
  assert snapshot(workdir) == before


def _file_under(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  return str(blocker / "run")


BAD_INPUTS = {
    "model": (["--model=rnn"], "--model"),
    "optimizer": (["--optimizer=adam_plus"], "--optimizer"),
    "dataset": (["--dataset=web"], "--dataset"),
    "dim": (["--dim=0"], "--dim=0"),
    "steps": (["--steps=-1"], "--steps=-1"),
    "missing_file": (["--dataset=text:/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
    "vocab_too_small": (["--tokenizer=byte", "--vocab_size=100"], "--vocab_size"),
    "seq_len_too_long": (["--seq_len=100000"], "--seq_len"),
    "batch_too_large": (["--batch_size=100000"], "--batch_size"),
    "subset": (["--params=decoder"], "--params"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_and_leaves_the_workdir_alone(case, tmp_path, capsys):
  args, fragment = BAD_INPUTS[case]
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("untouched")
  before = snapshot(str(workdir))
  code = run_in_process(train_launcher.main, [*TINY, f"--workdir={workdir}", "--steps=2", *args])
  assert_one_line_error(capsys, code, fragment)
  assert snapshot(str(workdir)) == before


def test_unwritable_workdir_exits_2(tmp_path, capsys):
  workdir = _file_under(tmp_path)
  code = run_in_process(train_launcher.main, [*TINY, f"--workdir={workdir}", "--steps=2"])
  assert_one_line_error(capsys, code, "--workdir", "not writable")
  assert not os.path.exists(workdir)


def test_exit_code_from_the_command_line(tmp_path):
  result = run_module("launch.train", [f"--workdir={tmp_path}/run", "--model=rnn"])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert not os.path.exists(tmp_path / "run")


def test_loss_is_finite_and_checkpoint_restorable(tmp_path):
  workdir = str(tmp_path / "run")
  assert run_in_process(train_launcher.main, [*TINY, f"--workdir={workdir}", "--steps=2"]) == 0
  chex.assert_tree_all_finite(jax.tree.map(np.asarray, _params(workdir, 2)))
