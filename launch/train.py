"""Trains one model with one optimizer.

  python -m launch.train --workdir=runs/adamw --model=linear_mixer --optimizer=adamw --steps=200

Writes `config.json`, `metrics.jsonl` (one line per step; validation loss every
`--eval_every` steps), `summary.json` and orbax checkpoints into `--workdir`.
Rerun on the same workdir to resume from the latest checkpoint (the same flags
are required, except `--steps`); `--overwrite` starts afresh.
"""

import dataclasses
import os

import jax
from absl import flags
from tqdm import tqdm

from launch import flags as launch_flags
from launch import runs
from lmopt import io, train
from lmopt.config import ConfigError

flags.DEFINE_integer("eval_every", 50, "Validation loss every this many steps.")
flags.DEFINE_integer("checkpoint_every", 100, "Checkpoint every this many steps (and at the end).")

FLAGS = flags.FLAGS
OUTPUTS = ("config.json", "metrics.jsonl", "summary.json", "tokenizer.json", io.CHECKPOINTS)
RESUME_FREE = ("steps", "eval_every", "checkpoint_every")


def run_settings() -> dict:
  """Everything that defines the run (what a resume must match)."""
  return {"model": dataclasses.asdict(launch_flags.model_config()),
          "loss": dataclasses.asdict(launch_flags.loss_config()),
          "data": dataclasses.asdict(launch_flags.data_config()),
          "optimizer": dataclasses.asdict(
              launch_flags.optimizer_config(FLAGS.optimizer, total_steps=0)),
          "seed": FLAGS.seed}


def check_resume(workdir: str, settings: dict) -> bool:
  """True when `workdir` holds a checkpoint of a run with the same settings."""
  has_checkpoint = os.path.isdir(os.path.join(workdir, io.CHECKPOINTS)) and os.listdir(
      os.path.join(workdir, io.CHECKPOINTS))
  if FLAGS.overwrite or not has_checkpoint:
    if not FLAGS.overwrite and io.existing_outputs(workdir, OUTPUTS):
      raise ConfigError(f"--workdir={workdir} holds results of another run without a "
                        "checkpoint; pass --overwrite to replace them")
    return False
  saved = io.read_json(os.path.join(workdir, "config.json"))
  differing = sorted(k for k in settings if saved.get(k) != settings[k])
  if differing:
    raise ConfigError(f"--workdir={workdir} holds a run with different {', '.join(differing)} "
                      "settings; use the same flags to resume or pass --overwrite")
  return True


def main(argv):
  del argv
  launch_flags.check_common()
  for flag in ("eval_every", "checkpoint_every"):
    launch_flags.cfg.require_positive(flag, getattr(FLAGS, flag))
  workdir = os.path.abspath(FLAGS.workdir)
  io.check_workdir(workdir)
  settings = run_settings()
  resume = check_resume(workdir, settings)
  setup = runs.prepare(tokenizer_dir=workdir if resume else None)
  tx = setup.optimizer(launch_flags.optimizer_config(FLAGS.optimizer))

  if not resume:
    io.remove_outputs(workdir, OUTPUTS)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "config.json"), settings)
  setup.save_tokenizer(workdir)

  manager = io.checkpoint_manager(workdir)
  state = train.init_state(setup.workload, tx, FLAGS.seed, setup.mesh)
  initial_loss = setup.train_loss(state.params)
  metrics = io.MetricsWriter(os.path.join(workdir, "metrics.jsonl"))
  if resume:
    state = io.restore_checkpoint(manager, runs.abstract(state))
    metrics.truncate_after(int(state.step))
  start = int(state.step)
  remaining = max(FLAGS.steps - start, 0)

  bar = tqdm(total=FLAGS.steps, initial=start, desc=FLAGS.optimizer, unit="step")
  tokens_per_step = setup.tokens_per_step

  def on_step(state, record):
    line = runs.metrics_line(record)
    if record.step % FLAGS.eval_every == 0 or record.step == FLAGS.steps:
      line["valid_loss"] = setup.valid_loss(state.params)
    if not (line["finite_loss"] and line["finite_grad"] and line["finite_update"]):
      bad = [k[len("finite_"):] for k in ("finite_loss", "finite_grad", "finite_update")
             if not line[k]]
      tqdm.write(f"step {record.step}: non-finite {', '.join(bad)}; update not applied")
    metrics.write(line)
    if record.step % FLAGS.checkpoint_every == 0 or record.step == FLAGS.steps:
      io.save_checkpoint(manager, record.step, state)
    bar.set_postfix(loss=f"{line['loss']:.4g}",
                    tok_s=f"{tokens_per_step * (record.step - start) / max(record.seconds, 1e-9):.3g}")
    bar.update(1)
    return False

  seconds = compile_seconds = 0.0
  if remaining:
    state, compile_seconds, seconds = runs.fit_timed(setup, tx, state, remaining, on_step)
  bar.close()
  summary = runs.summary(setup, state, optimizer=FLAGS.optimizer, initial_loss=initial_loss,
                         seconds=seconds, compile_seconds=compile_seconds)
  io.write_json(os.path.join(workdir, "summary.json"), summary)
  print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
  jax.config.parse_flags_with_absl()
  launch_flags.run(main)
