"""Runs several optimizers on identical data, initialisation, budget and loss.

  python -m launch.compare                      # the default comparison (a few minutes on CPU)
  python -m launch.compare --optimizers=adamw,gauss_newton --batch_size=0 --steps=50 \
      --target_loss=100 --workdir=runs/compare

Every run starts from the same parameters (`--seed`) and sees the same batches in
the same order; budgets are `--steps` and, optionally, `--max_seconds` per
optimizer (compilation excluded and reported apart). A run whose loss turns
non-finite or exceeds `--diverge_factor` times its initial loss stops there and
is marked diverged; the others continue. Per-optimizer settings override the
shared flags with `--set=OPTIMIZER.FIELD=VALUE` (repeatable), on top of
`DEFAULTS` below. Writes `results.json`, `results.md` and `loss_curves.png`.
"""

import dataclasses
import math
import os
import tempfile

import jax
from absl import flags
from tqdm import tqdm

from launch import flags as launch_flags
from launch import report, runs
from lmopt import io
from lmopt.config import ConfigError, OptimizerConfig, require, require_choice
from lmopt.optim import OPTIMIZERS

DEFAULT_OPTIMIZERS = ("adamw,lbfgs,normal_solve,newton_root,newton_root_components,newton_system,"
                      "gauss_newton,levenberg_marquardt")
flags.DEFINE_list("optimizers", DEFAULT_OPTIMIZERS, "Comma list of optimizer names.")
flags.DEFINE_multi_string("set", [], "Per-optimizer setting OPTIMIZER.FIELD=VALUE, e.g. "
                          "adamw.learning_rate=3e-3 (repeatable).")
flags.DEFINE_float("max_seconds", 0.0, "Wall-time budget per optimizer (0 = steps only).")
flags.DEFINE_float("target_loss", None, "Report steps/seconds to reach this training loss.")
flags.DEFINE_bool("lr_sweep", True, "Try learning rates x{0.1, 0.3, 1, 3, 10} for first-order "
                  "methods and keep the best final training loss.")
flags.DEFINE_float("diverge_factor", 10.0, "Stop a run whose loss exceeds this x its initial loss.")

FLAGS = flags.FLAGS
DEFAULT_WORKDIR = "runs/compare"
OUTPUTS = ("results.json", "results.md", "loss_curves.png", "tokenizer.json")
FIRST_ORDER = ("sgd", "adamw", "muon")
SWEEP = (0.1, 0.3, 1.0, 3.0, 10.0)

# Settings that make each method sensible out of the box (the shared flags' values
# apply otherwise). Root finding and the exact solve act on lm_head, as in the research.
DEFAULTS = {
    "sgd": {"learning_rate": 10.0},  # MSE with s=1000: curvatures are ~1e-6 to 1e-1
    "adamw": {"learning_rate": 3e-2},
    "muon": {"learning_rate": 3e-2},
    "normal_solve": {"params": "lm_head", "solve_method": "eigh"},
    "newton_root": {"params": "lm_head"},
    "newton_root_components": {"params": "lm_head"},
    "newton_root_recalculated": {"params": "lm_head"},
    "newton_system": {"params": "lm_head"},
}


def _parse_value(kind, text: str):
  if kind is bool:
    if text.lower() not in ("true", "false"):
      raise ValueError(text)
    return text.lower() == "true"
  return kind(text)


def parse_settings(entries) -> dict:
  """`["adamw.learning_rate=3e-3", ...]` -> `{"adamw": {"learning_rate": 0.003}}`."""
  fields = {f.name: type(f.default) for f in dataclasses.fields(OptimizerConfig)}
  settings = {}
  for entry in entries:
    key, sep, value = entry.partition("=")
    name, dot, field = key.partition(".")
    require(sep and dot, f"--set={entry!r} is not accepted; use OPTIMIZER.FIELD=VALUE")
    require_choice("set", name, OPTIMIZERS)
    require_choice("set", field, tuple(fields))
    kind = fields[field]
    try:
      settings.setdefault(name, {})[field] = _parse_value(kind, value)
    except ValueError:
      raise ConfigError(f"--set={entry!r}: {field} must be a {kind.__name__}") from None
  return settings


def optimizer_configs() -> dict:
  """One validated OptimizerConfig per requested name, defaults < --set overrides."""
  require(FLAGS.optimizers, "--optimizers is empty; give a comma list of optimizer names")
  overrides = parse_settings(FLAGS.set)
  configs = {}
  for name in FLAGS.optimizers:
    require_choice("optimizers", name, OPTIMIZERS)
    configs[name] = launch_flags.optimizer_config(
        name, **{**DEFAULTS.get(name, {}), **overrides.get(name, {})})
  return configs


def first_reach(curve: dict, target):
  """(steps, seconds) at which the curve first reaches `target`, or (None, None)."""
  if target is None:
    return None, None
  for step, seconds, loss in zip(curve["step"], curve["seconds"], curve["loss"]):
    if loss <= target:
      return step, seconds
  return None, None


def run_one(setup, config: OptimizerConfig, bar) -> dict:
  """One optimizer under the shared flags' budget, with its steps/seconds to the target."""
  run = runs.run_curve(setup, config, steps=FLAGS.steps, seed=FLAGS.seed,
                       diverge_factor=FLAGS.diverge_factor, max_seconds=FLAGS.max_seconds,
                       on_step=lambda: bar.update(1))
  run["steps_to_target"], run["seconds_to_target"] = first_reach(run["curve"], FLAGS.target_loss)
  return run


def best_of_sweep(setup, config: OptimizerConfig, bar) -> dict:
  candidates = [run_one(setup, dataclasses.replace(config, learning_rate=config.learning_rate * f),
                        bar) for f in SWEEP]
  score = lambda r: r["train_loss"] if (math.isfinite(r["train_loss"]) and not r["diverged"]) \
      else math.inf
  best = min(candidates, key=score)
  best["lr_sweep"] = {str(r["settings"]["learning_rate"]): r["train_loss"] for r in candidates}
  return best


def main(argv):
  del argv
  launch_flags.check_common(default_workdir=DEFAULT_WORKDIR)
  require(FLAGS.max_seconds >= 0, f"--max_seconds={FLAGS.max_seconds} must be >= 0")
  require(FLAGS.diverge_factor > 1, f"--diverge_factor={FLAGS.diverge_factor} must exceed 1")
  workdir = os.path.abspath(FLAGS.workdir or DEFAULT_WORKDIR)
  io.check_workdir(workdir)
  existing = io.existing_outputs(workdir, OUTPUTS[:3])
  require(not existing or FLAGS.overwrite,
          f"--workdir={workdir} already holds {', '.join(existing)}; pass --overwrite to replace")
  configs = optimizer_configs()
  setup = runs.prepare()
  for config in configs.values():
    setup.optimizer(config)  # unknown subsets and bad settings fail before any run

  sweeps = {n: FLAGS.lr_sweep and n in FIRST_ORDER for n in configs}
  total = FLAGS.steps * sum(len(SWEEP) if s else 1 for s in sweeps.values())
  results = []
  with tqdm(total=total, desc="compare", unit="step") as bar:
    for name, config in configs.items():
      bar.set_postfix(optimizer=name)
      results.append(best_of_sweep(setup, config, bar) if sweeps[name] else
                     run_one(setup, config, bar))

  table = report.markdown_table(results)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "results.json"), results)
  io.write_text_atomic(os.path.join(workdir, "results.md"), table)
  with tempfile.NamedTemporaryFile(dir=workdir, suffix=".png", delete=False) as tmp:
    title = (f"{setup.workload.model_config.name}, {FLAGS.loss}, dim {FLAGS.dim}, "
             f"vocab {FLAGS.vocab_size}, batch {'full' if setup.full_batch else FLAGS.batch_size}")
    report.plot_curves(results, tmp.name, title)
  os.replace(tmp.name, os.path.join(workdir, "loss_curves.png"))
  setup.save_tokenizer(workdir)
  print(table)
  print(f"wrote {workdir}/results.json, results.md, loss_curves.png")


if __name__ == "__main__":
  jax.config.parse_flags_with_absl()
  launch_flags.run(main)
