"""launch.compare end to end on a tiny configuration, every registered optimizer."""

import os
import pathlib

import pytest

from launch import compare
from lmopt import io
from lmopt.optim import OPTIMIZERS
from tests.launch_util import TINY, assert_one_line_error, run_in_process, snapshot

# Tiny enough for a dense Hessian of lm_head (dim 4 x vocab 260).
COMPARE = [*TINY, "--dim=4", "--vocab_size=260", "--steps=3", "--set=exact_newton.params=lm_head",
           "--nolr_sweep"]
RUN_KEYS = {"optimizer", "model", "steps", "train_loss", "valid_loss", "initial_loss", "seconds",
            "compile_seconds", "num_params", "diverged", "curve", "steps_to_target",
            "seconds_to_target"}


@pytest.fixture(scope="module")
def all_optimizers(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("compare") / "all")
  target = 1e6 / 260 * 0.999  # just below the untrained level: reachable within a few steps
  code = run_in_process(compare.main, [*COMPARE, f"--workdir={workdir}",
                                       f"--optimizers={','.join(OPTIMIZERS)}",
                                       f"--target_loss={target}"])
  assert code == 0
  return workdir, io.read_json(os.path.join(workdir, "results.json")), target


def test_writes_every_output(all_optimizers):
  workdir, runs, _ = all_optimizers
  for name in ("results.json", "results.md", "loss_curves.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert [r["optimizer"] for r in runs] == list(OPTIMIZERS)
  table = pathlib.Path(workdir, "results.md").read_text()
  assert all(f"| {name} |" in table for name in OPTIMIZERS)


def test_results_have_the_documented_keys(all_optimizers):
  for run in all_optimizers[1]:
    assert RUN_KEYS <= set(run), run["optimizer"]
    assert set(run["curve"]) == {"step", "loss", "seconds"}


def test_every_curve_starts_at_the_same_loss(all_optimizers):
  starts = {r["optimizer"]: r["curve"]["loss"][0] for r in all_optimizers[1]}
  first = next(iter(starts.values()))
  assert all(abs(v - first) <= 1e-6 * abs(first) for v in starts.values()), starts
  initial = {r["initial_loss"] for r in all_optimizers[1]}
  assert len(initial) == 1


def test_steps_to_target_agree_with_the_curve(all_optimizers):
  _, runs, target = all_optimizers
  for run in runs:
    curve = run["curve"]
    reached = [s for s, l in zip(curve["step"], curve["loss"]) if l <= target]
    assert run["steps_to_target"] == (reached[0] if reached else None), run["optimizer"]
    if reached:
      assert run["seconds_to_target"] == curve["seconds"][curve["step"].index(reached[0])]


def test_a_diverging_run_is_marked_and_the_others_continue(tmp_path):
  workdir = str(tmp_path / "div")
  code = run_in_process(compare.main, [*TINY, f"--workdir={workdir}", "--steps=6", "--nolr_sweep",
                                       "--optimizers=sgd,adamw", "--set=sgd.learning_rate=1e3",
                                       "--set=sgd.momentum=0"])
  assert code == 0
  runs = {r["optimizer"]: r for r in io.read_json(os.path.join(workdir, "results.json"))}
  assert runs["sgd"]["diverged"] and len(runs["sgd"]["curve"]["step"]) < 7
  assert not runs["adamw"]["diverged"] and runs["adamw"]["steps"] == 6


def test_lr_sweep_keeps_the_best_learning_rate(tmp_path):
  workdir = str(tmp_path / "sweep")
  code = run_in_process(compare.main, [*TINY, f"--workdir={workdir}", "--steps=3",
                                       "--optimizers=adamw", "--set=adamw.learning_rate=0.01"])
  assert code == 0
  (run,) = io.read_json(os.path.join(workdir, "results.json"))
  assert len(run["lr_sweep"]) == len(compare.SWEEP)
  assert run["train_loss"] == min(run["lr_sweep"].values())
  assert run["lr_sweep"][str(run["settings"]["learning_rate"])] == run["train_loss"]


def test_a_used_workdir_is_refused_without_overwrite(all_optimizers, capsys):
  workdir = all_optimizers[0]
  before = snapshot(workdir)
  capsys.readouterr()
  code = run_in_process(compare.main, [*COMPARE, f"--workdir={workdir}", "--optimizers=adamw"])
  assert_one_line_error(capsys, code, "--overwrite")
  assert snapshot(workdir) == before


@pytest.mark.parametrize("args, fragment", [
    (["--optimizers=adamw,rmsprop"], "--optimizers='rmsprop'"),
    (["--set=adamw.lr=1"], "--set='lr'"),
    (["--set=adamw.learning_rate=fast"], "learning_rate must be a float"),
    (["--set=adamw-learning_rate"], "OPTIMIZER.FIELD=VALUE"),
])
def test_bad_compare_flags_exit_2(args, fragment, tmp_path, capsys):
  code = run_in_process(compare.main, [*TINY, f"--workdir={tmp_path}/run", *args])
  assert_one_line_error(capsys, code, fragment)
  assert not os.path.exists(tmp_path / "run")
