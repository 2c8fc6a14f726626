"""What the launchers share: data + workload + mesh set-up, evaluation, summaries."""

import dataclasses
import math

import jax
import numpy as np

from launch import flags as launch_flags
from lmopt import data as lmdata
from lmopt import sharding, train
from lmopt.optim import build_optimizer
from lmopt.workload import Workload

EVAL_WINDOWS = 256  # train/valid losses are measured on at most this many sequences


@dataclasses.dataclass
class Setup:
  """One workload on one data set, laid out on the local mesh."""

  workload: Workload
  data: object
  mesh: object
  batch_size: int

  def __post_init__(self):
    self._eval = train.make_eval_fn(self.workload)

  @property
  def abstract_params(self):
    return jax.eval_shape(self.workload.init, jax.random.key(0))

  def optimizer(self, opt_config):
    return build_optimizer(opt_config, self.workload, self.abstract_params)

  def batch_at(self, step: int) -> np.ndarray:
    return self.data.batches.batch(step)[:self.batch_size]  # full batch: a mesh multiple

  @property
  def full_batch(self) -> bool:
    return self.batch_size >= len(self.data.train)

  @property
  def tokens_per_step(self) -> int:
    return self.batch_size * (self.workload.model_config.seq_len - 1)

  def _loss(self, params, windows) -> float:
    return train.evaluate(self._eval, params, windows[:EVAL_WINDOWS], self.mesh, self.batch_size)

  def train_loss(self, params) -> float:
    return self._loss(params, self.data.train)

  def valid_loss(self, params) -> float:
    return self._loss(params, self.data.valid)

  def save_tokenizer(self, workdir: str) -> None:
    self.data.save_tokenizer(workdir)


def prepare(tokenizer_dir: str | None = None, model_config=None, loss_config=None,
            data_config=None) -> Setup:
  """Loads data and builds the workload from the flags (or the given configs).

  Raises ConfigError for bad input before anything is written.
  """
  model_config = model_config or launch_flags.model_config()
  loss_config = loss_config or launch_flags.loss_config()
  data_config = data_config or launch_flags.data_config()
  mesh = sharding.data_mesh()
  data = lmdata.load_data(data_config, tokenizer_dir)
  lmdata.check_token_range(data.train, model_config.vocab_size)
  batch_size = data_config.batch_size or (len(data.train) // mesh.size) * mesh.size
  sharding.check_divisible(batch_size, mesh)
  return Setup(Workload(model_config, loss_config), data, mesh, batch_size)


def abstract(tree):
  """Shape/dtype/sharding skeleton of a pytree of arrays (for checkpoint restore)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def metrics_line(record: train.StepRecord) -> dict:
  line = {"step": record.step, "seconds": record.seconds}
  for key, value in record.metrics.items():
    value = np.asarray(value)
    line[key] = bool(value) if value.dtype == bool else float(value)
  return line


def fit_timed(setup: Setup, tx, state, num_steps: int, on_step):
  """Runs `num_steps`; returns `(state, compile_seconds, train_seconds)`."""
  seconds = [0.0]

  def track(state, record):
    seconds[0] = record.seconds
    return on_step(state, record)

  state, compile_seconds = train.fit(train.make_train_step(setup.workload, tx), state,
                                     setup.batch_at, setup.mesh, num_steps=num_steps,
                                     on_step=track)
  return state, compile_seconds, seconds[0]


def summary(setup: Setup, state, *, optimizer: str, initial_loss: float, seconds: float,
            compile_seconds: float) -> dict:
  """The DESIGN.md summary of one run."""
  train_loss = setup.train_loss(state.params)
  steps = int(state.step)
  return {
      "optimizer": optimizer,
      "model": setup.workload.model_config.name,
      "steps": steps,
      "initial_loss": initial_loss,
      "train_loss": train_loss,
      "valid_loss": setup.valid_loss(state.params),
      "seconds": seconds,
      "compile_seconds": compile_seconds,
      "num_params": setup.workload.num_params(state.params),
      "nonfinite_steps": int(state.nonfinite),
      "diverged": bool(int(state.nonfinite) > 0 or not math.isfinite(train_loss)),
      "tokens_per_second": setup.tokens_per_step * steps / seconds if seconds else None,
  }


def run_curve(setup: Setup, config, *, steps: int, seed: int = 0, diverge_factor: float = math.inf,
              max_seconds: float = 0.0, on_step=None) -> dict:
  """Trains one optimizer from the initialisation of `seed`; its summary and loss curve.

  The curve holds, for each step k, the loss at the parameters after k steps on batch k
  (the value the train step reports before updating) and the training seconds spent to
  reach them; in full-batch mode a last point gives the loss after the final step. A run
  whose loss turns non-finite or exceeds `diverge_factor` times its first loss stops there
  and is marked diverged; `max_seconds` (0 = none) caps the training time. `on_step()`
  is called after every step (e.g. to advance a progress bar).
  """
  tx = setup.optimizer(config)
  state = train.init_state(setup.workload, tx, seed, setup.mesh)
  initial_loss = setup.train_loss(state.params)
  curve = {"step": [], "loss": [], "seconds": []}
  stopped = []  # a single True once the run diverged
  elapsed = [0.0]  # training seconds before the current step

  def track(state, record):
    loss = float(record.metrics["loss"])
    curve["step"].append(record.step - 1)
    curve["loss"].append(loss)
    curve["seconds"].append(elapsed[0])
    elapsed[0] = record.seconds
    if on_step is not None:
      on_step()
    if not math.isfinite(loss) or loss > diverge_factor * curve["loss"][0]:
      stopped.append(True)
      return True
    return bool(max_seconds) and record.seconds >= max_seconds

  state, compile_seconds, seconds = fit_timed(setup, tx, state, steps, track)
  run = summary(setup, state, optimizer=config.name, initial_loss=initial_loss, seconds=seconds,
                compile_seconds=compile_seconds)
  if setup.full_batch and not stopped:
    curve["step"].append(run["steps"])
    curve["loss"].append(run["train_loss"])
    curve["seconds"].append(seconds)
  run["diverged"] = run["diverged"] or bool(stopped)
  run["seconds_per_step"] = seconds / max(run["steps"], 1)
  run["settings"] = dataclasses.asdict(config)
  run["curve"] = curve
  return run
