"""launch.solve end to end: summary, reference gap, all-layer solve, refusals with exit 2."""

import json
import os

import jax
import numpy as np
import pytest

from launch import solve as solve_launcher
from tests.launch_util import TINY, assert_one_line_error, run_in_process, snapshot

SUMMARY_KEYS = {"optimizer", "model", "steps", "train_loss", "valid_loss", "initial_loss",
                "seconds", "compile_seconds", "num_params", "diverged", "method"}


def read_summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("dtype,method,loss_gap", [("float32", "pinv", 1e-5),
                                                   ("float64", "cholesky", 1e-12)])
def test_lm_head_solve_matches_the_numpy_reference(tmp_path, dtype, method, loss_gap):
  workdir = str(tmp_path / "solve")
  code = run_in_process(solve_launcher.main, [*TINY, f"--workdir={workdir}", f"--dtype={dtype}",
                                              f"--method={method}", "--reference"])
  assert code == 0 and not jax.config.jax_enable_x64  # float64 was scoped to the solve
  summary = read_summary(workdir)
  assert SUMMARY_KEYS <= set(summary) and not summary["diverged"]
  assert summary["method"] == method and summary["steps"] == 1
  np.testing.assert_allclose(summary["initial_loss"], 1000.0**2 / 300, rtol=0.05)  # ≈ s²/V
  assert summary["train_loss"] < summary["initial_loss"]
  assert abs(summary["reference_loss_gap"]) < loss_gap
  np.testing.assert_allclose(summary["train_loss"], summary["reference_train_loss"], rtol=1e-5)


def test_ridge_path_and_all_layer_solve(tmp_path):
  path_dir, all_dir = str(tmp_path / "path"), str(tmp_path / "all")
  assert run_in_process(solve_launcher.main, [*TINY, f"--workdir={path_dir}", "--method=eigh",
                                              "--ridge_path=5"]) == 0
  path = read_summary(path_dir)["ridge_path"]
  assert len(path["ridges"]) == 5
  np.testing.assert_allclose(min(path["valid_loss"]), read_summary(path_dir)["valid_loss"],
                             rtol=1e-5)
  assert run_in_process(solve_launcher.main, [*TINY, f"--workdir={all_dir}", "--layers=all",
                                              "--sweeps=2"]) == 0
  summary = read_summary(all_dir)
  losses = [summary["initial_loss"]] + [step["loss"] for step in summary["history"]]
  assert np.all(np.diff(losses) <= 0) and summary["steps"] == 2 * 3
  assert summary["train_loss"] < summary["history"][0]["loss"]  # beyond the lm_head solve


@pytest.mark.parametrize("flag,fragment", [
    ("--method=gauss", "--method"),
    ("--loss=ce", "--loss"),
    ("--ridge=-1", "--ridge"),
    ("--ridge_path=4", "--ridge_path"),
    ("--model=transformer --layers=all", "--layers=all"),
    ("--layers=all --reference", "--reference"),
    ("--sweeps=0", "--sweeps"),
])
def test_bad_input_exits_2_and_leaves_the_workdir_alone(tmp_path, capsys, flag, fragment):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("x")
  before = snapshot(str(workdir))
  code = run_in_process(solve_launcher.main, [*TINY, f"--workdir={workdir}", *flag.split()])
  assert_one_line_error(capsys, code, fragment)
  assert snapshot(str(workdir)) == before


def test_existing_results_need_overwrite(tmp_path, capsys):
  workdir = tmp_path / "done"
  workdir.mkdir()
  (workdir / "summary.json").write_text("{}")
  before = snapshot(str(workdir))
  code = run_in_process(solve_launcher.main, [*TINY, f"--workdir={workdir}"])
  assert_one_line_error(capsys, code, "--overwrite")
  assert snapshot(str(workdir)) == before
