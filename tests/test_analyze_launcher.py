"""launch.analyze end to end on a tiny config, and bad input exiting 2 with the workdir untouched."""

import json
import os

import pytest

from launch import analyze
from tests.launch_util import TINY, assert_one_line_error, run_in_process, snapshot

FAST = [*TINY, "--lanczos_iters=12", "--top_k=2", "--slq_iters=6", "--slq_probes=2",
        "--max_steps=500", "--adamw_lrs=100", "--adamw_steps=100", "--cg_iters=16"]


def test_analyze_writes_consistent_outputs(tmp_path):
  workdir = str(tmp_path / "run")
  assert run_in_process(analyze.main, [*FAST, f"--workdir={workdir}", "--sweep",
                                       "--sweep_dims=8,16", "--sweep_vocab_sizes=300",
                                       "--sweep_seq_lens=12"]) == 0
  assert sorted(os.listdir(workdir)) == ["analysis.json", "analysis.md", "spectrum.png"]
  with open(os.path.join(workdir, "analysis.json")) as f:
    result = json.load(f)
  head = result["lm_head"]
  assert head["dim"] == 16 and head["kappa"] == pytest.approx(head["lmax"] / head["lmin"])
  assert head["kappa"] >= 1 and head["optimal_loss"] < head["initial_loss"]
  methods = {m["method"]: m for m in head["methods"]}
  assert set(methods) == {"gd", "heavy_ball", "adamw", "newton", "newton_cg"}
  gd = methods["gd"]
  assert gd["reached"] and gd["measured_steps"] == head["gd_exact_steps"]
  assert gd["measured_steps"] <= head["gd_predicted_steps"] <= head["gd_rule_of_thumb_steps"]
  assert methods["newton"]["measured_steps"] == 1
  spec = result["curvature"]
  assert spec["kind"] == "ggn" and len(spec["top"]) == 2
  assert spec["top"][0] >= spec["top"][1] and min(spec["bottom"]) > -1e-6 * spec["top"][0]
  assert spec["lm_head_check"]["relative_error"] < 1e-3
  assert [(r["vary"], r["value"]) for r in result["sweep"]] == [
      ("dim", 8), ("dim", 16), ("vocab_size", 300), ("seq_len", 12)]
  assert result["sweep"][1]["kappa"] == pytest.approx(head["kappa"], rel=1e-6)
  with open(os.path.join(workdir, "analysis.md")) as f:
    assert "κ" in f.read()
  # a second run is refused unless --overwrite
  before = snapshot(workdir)
  assert run_in_process(analyze.main, [*FAST, f"--workdir={workdir}"]) == 2
  assert snapshot(workdir) == before


@pytest.mark.parametrize("args, fragment", [
    (["--epsilon=2"], "--epsilon"),
    (["--top_k=20"], "--top_k"),
    (["--loss=ce"], "--loss"),
    (["--sweep", "--sweep_dims=8,x"], "--sweep_dims"),
    (["--sweep", "--sweep_vocab_sizes=100"], "--sweep_vocab_sizes"),
    (["--params=nope"], "--params"),
    (["--curvature=fisher"], "--curvature"),
    (["--lanczos_iters=0"], "--lanczos_iters"),
])
def test_bad_input_exits_2_and_leaves_workdir_untouched(tmp_path, capsys, args, fragment):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("x")
  before = snapshot(str(workdir))
  capsys.readouterr()
  code = run_in_process(analyze.main, [*FAST, f"--workdir={workdir}", *args])
  assert_one_line_error(capsys, code, fragment)
  assert snapshot(str(workdir)) == before
