"""Exact least-squares solve of lm_head (or of every linear-mixer weight) on the training set.

  python -m launch.solve --workdir=runs/solve --vocab_size=4096 --dim=256 --method=pinv \
      --reference
  python -m launch.solve --workdir=runs/solve_ridge --method=eigh --ridge_path=13
  python -m launch.solve --workdir=runs/als --layers=all --sweeps=3

`--layers=lm_head` streams Gram statistics of the lm_head features over the training
set in chunks of `--batch_size` windows (memory `O(dim² + dim·vocab)`; the data methods
pinv/lstsq/qr also keep the `[tokens, dim]` features) and solves once. `--dtype=float64`
runs model, statistics and solve in float64; float32 accumulates the statistics with
Kahan compensation. Train/valid losses are per-token MSE over *all* windows, computed
from the statistics. `--reference` adds the gap to a float64 numpy solve (LAPACK
`lstsq` on the QR-reduced problem). `--layers=all` runs the alternating exact solve of
`lmopt.lstsq.alternating` on the full training batch for `--sweeps` sweeps.

Writes `config.json` and `summary.json` into `--workdir`; a workdir holding them is
refused unless `--overwrite`.
"""

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from launch import flags as launch_flags
from launch import runs
from lmopt import io, sharding
from lmopt.config import ConfigError, require
from lmopt.lstsq import alternating, ridge, solvers
from lmopt.lstsq import sharding as stats_sharding
from lmopt.lstsq import stats as stats_lib

flags.DEFINE_enum("method", "pinv", solvers.METHODS, "Least-squares method (lmopt.lstsq.solvers).")
flags.DEFINE_float("ridge", 0.0, "Ridge lambda added to XᵀX (absolute, units of XᵀX).")
flags.DEFINE_float("rcond", 1e-6, "Relative singular-value cutoff of pinv/lstsq/eigh.")
flags.DEFINE_enum("layers", "lm_head", ("lm_head", "all"),
                  "lm_head: one exact solve; all: alternating solve of every linear-mixer weight.")
flags.DEFINE_integer("sweeps", 3, "Sweeps of the alternating solve (--layers=all).")
flags.DEFINE_integer("ridge_path", 0, "Ridge values to sweep from one eigendecomposition and "
                     "pick by validation loss (needs --method=eigh); 0 = off.")
flags.DEFINE_bool("reference", False, "Report the gap to a float64 numpy reference solve.")

FLAGS = flags.FLAGS
OUTPUTS = ("config.json", "summary.json")


@dataclasses.dataclass
class Streamed:
  stats: stats_lib.GramStats
  features: jax.Array | None  # [tokens, dim] when kept
  targets: jax.Array | None  # [tokens]
  compile_seconds: float
  seconds: float


def stream_stats(setup, params, windows_NxL: np.ndarray, keep_features: bool) -> Streamed:
  """Gram statistics of the lm_head features of all windows, in mesh-sharded chunks."""
  workload, mesh = setup.workload, setup.mesh
  vocab, scale = workload.model_config.vocab_size, workload.loss_config.onehot_scale
  dtype = params["lm_head"]["kernel"].dtype
  stats_fn = stats_sharding.make_stats_fn(mesh, vocab, scale, dtype)
  chunk = min(setup.batch_size, -(-len(windows_NxL) // mesh.size) * mesh.size)
  pad = (-len(windows_NxL)) % chunk
  windows = np.concatenate([windows_NxL, np.zeros((pad, windows_NxL.shape[1]), np.int32)])
  valid_B = np.arange(len(windows)) < len(windows_NxL)

  def chunk_stats(params, tokens_BxL, valid_B):
    features = workload.features_fn(params, tokens_BxL)
    x_NxD = features.reshape(-1, features.shape[-1])
    mask_N = jnp.repeat(valid_B, features.shape[1]).astype(dtype)
    return stats_fn(x_NxD, tokens_BxL[:, 1:].reshape(-1), mask_N), x_NxD

  put = lambda i: (sharding.put_batch(windows[i:i + chunk], mesh),
                   sharding.put_batch(valid_B[i:i + chunk], mesh))
  start = time.perf_counter()
  compiled = jax.jit(chunk_stats).lower(params, *put(0)).compile()
  total = stats_lib.compensated_zeros(workload.model_config.dim, vocab, dtype)
  add = jax.jit(stats_lib.add_compensated).lower(total, total.total).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  kept = []
  for i in range(0, len(windows), chunk):
    part, x_NxD = compiled(params, *put(i))
    total = add(total, part)
    if keep_features:
      kept.append(x_NxD)
  jax.block_until_ready(total)
  seconds = time.perf_counter() - start
  features = targets = None
  if keep_features:
    rows = len(windows_NxL) * (windows.shape[1] - 1)
    features = jnp.concatenate(kept)[:rows]
    targets = jnp.asarray(windows_NxL[:, 1:].reshape(-1))
  return Streamed(total.total, features, targets, compile_seconds, seconds)


def numpy_reference(x_NxD: np.ndarray, y_N: np.ndarray, vocab: int, scale: float) -> np.ndarray:
  """float64 numpy minimum-norm solution: `np.linalg.lstsq(R, QᵀY)` with `X = QR` (no one-hot)."""
  q, r = np.linalg.qr(np.asarray(x_NxD, np.float64))
  qty = np.zeros((vocab, q.shape[1]))
  np.add.at(qty, y_N, q)
  return np.linalg.lstsq(r, scale * qty.T, rcond=None)[0]


def reference_gaps(streamed: Streamed, w_DxV, vocab: int, scale: float) -> dict:
  """Relative solution and loss gaps of `W` to the float64 numpy reference."""
  x = np.asarray(streamed.features, np.float64)
  y = np.asarray(streamed.targets)
  w_ref = numpy_reference(x, y, vocab, scale)
  gram = stats_lib.GramStats(x.T @ x, None, scale**2 * len(y), len(y))
  cross = np.zeros((vocab, x.shape[1]))
  np.add.at(cross, y, x)
  gram = gram._replace(xty=scale * cross.T)

  def loss(w):  # float64 numpy evaluation of stats.loss_from_stats
    w = np.asarray(w, np.float64)
    return float((np.sum(w * (gram.xtx @ w)) - 2 * np.sum(w * gram.xty) + gram.yty)
                 / (gram.count * vocab))

  w = np.asarray(w_DxV, np.float64)
  ref_loss = loss(w_ref)
  return {"reference_train_loss": ref_loss,
          "reference_loss_gap": (loss(w) - ref_loss) / ref_loss,
          "reference_solution_gap": float(np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref))}


def solve_lm_head(setup, params) -> dict:
  """Streams statistics, solves lm_head once, and reports losses (and reference gaps)."""
  vocab, scale = setup.workload.model_config.vocab_size, setup.workload.loss_config.onehot_scale
  method = FLAGS.method
  keep = method in solvers.DATA_METHODS or FLAGS.reference
  train = stream_stats(setup, params, setup.data.train, keep)
  valid = stream_stats(setup, params, setup.data.valid, False)
  extra = {}
  start = time.perf_counter()
  if FLAGS.ridge_path:
    path_fn = jax.jit(ridge.ridge_path, static_argnames="rcond")
    ridges = ridge.default_ridges(train.stats, FLAGS.ridge_path)
    compiled = path_fn.lower(train.stats, valid.stats, ridges, rcond=FLAGS.rcond).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    path, w_new = compiled(train.stats, valid.stats, ridges)
    extra["ridge_path"] = {"ridges": path.ridges, "train_loss": path.train_loss,
                           "valid_loss": path.valid_loss, "best_ridge": path.ridges[path.best]}
  elif method in solvers.GRAM_METHODS:
    fn = jax.jit(solvers.solve_gram, static_argnums=0, static_argnames=("ridge", "rcond"))
    compiled = fn.lower(method, train.stats, ridge=FLAGS.ridge, rcond=FLAGS.rcond).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    w_new = compiled(train.stats)
  else:
    fn = jax.jit(solvers.solve_data, static_argnums=(0, 3, 4), static_argnames=("ridge", "rcond"))
    args = (method, train.features, train.targets, vocab, scale)
    compiled = fn.lower(*args, ridge=FLAGS.ridge, rcond=FLAGS.rcond).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    w_new = compiled(train.features, train.targets)
  w_new = jax.block_until_ready(w_new)
  solve_seconds = time.perf_counter() - start
  if FLAGS.reference:
    extra.update(reference_gaps(train, w_new, vocab, scale))
  loss = lambda gram, w: float(stats_lib.loss_from_stats(gram, w))
  train_tokens = int(train.stats.count)
  return {
      "optimizer": "normal_solve", "steps": 1,
      "initial_loss": loss(train.stats, params["lm_head"]["kernel"]),
      "train_loss": loss(train.stats, w_new), "valid_loss": loss(valid.stats, w_new),
      "initial_valid_loss": loss(valid.stats, params["lm_head"]["kernel"]),
      "seconds": train.seconds + solve_seconds, "stats_seconds": train.seconds,
      "solve_seconds": solve_seconds,
      "compile_seconds": train.compile_seconds + compile_seconds,
      "train_tokens": train_tokens, "valid_tokens": int(valid.stats.count),
      "tokens_per_second": train_tokens / train.seconds if train.seconds else None,
      "nonfinite_steps": int(not np.all(np.isfinite(np.asarray(w_new)))), **extra}


def solve_all(setup, params) -> dict:
  """The alternating exact solve of every linear-mixer weight on the full training batch."""
  workload = setup.workload
  tokens = jnp.asarray(setup.data.train)
  result = alternating.alternating_solve(workload, params, tokens, FLAGS.sweeps, FLAGS.method,
                                         FLAGS.ridge, FLAGS.rcond)
  valid = jnp.asarray(setup.data.valid)
  valid_loss = jax.jit(alternating.mixer_loss, static_argnums=0)
  history = [step._asdict() for step in result.history]
  return {
      "optimizer": "alternating_solve", "steps": len(history),
      "initial_loss": result.initial_loss, "train_loss": history[-1]["loss"],
      "valid_loss": float(valid_loss(workload, result.params, valid, valid[:, 1:])),
      "initial_valid_loss": float(valid_loss(workload, params, valid, valid[:, 1:])),
      "seconds": history[-1]["seconds"], "compile_seconds": result.compile_seconds,
      "train_tokens": int(tokens[:, 1:].size), "refused_updates": sum(
          not step["accepted"] for step in history),
      "nonfinite_steps": 0, "history": history}


def check_flags() -> None:
  """Solve-specific checks; ConfigError (exit 2, nothing written) on bad input."""
  launch_flags.check_common()
  require(FLAGS.loss == "mse", f"--loss={FLAGS.loss!r} is not accepted by launch.solve; use mse "
          "(the exact solve is least squares)")
  require(FLAGS.ridge >= 0, f"--ridge={FLAGS.ridge} must be >= 0")
  require(FLAGS.rcond >= 0, f"--rcond={FLAGS.rcond} must be >= 0")
  require(FLAGS.sweeps > 0, f"--sweeps={FLAGS.sweeps} must be positive")
  require(FLAGS.ridge_path >= 0, f"--ridge_path={FLAGS.ridge_path} must be >= 0 (0 = off)")
  require(not FLAGS.ridge_path or (FLAGS.method == "eigh" and FLAGS.layers == "lm_head"),
          "--ridge_path needs --method=eigh and --layers=lm_head (one eigendecomposition)")
  require(FLAGS.layers == "lm_head" or FLAGS.model == "linear_mixer",
          f"--layers=all is only accepted with --model=linear_mixer, got {FLAGS.model!r}")
  require(not FLAGS.reference or FLAGS.layers == "lm_head",
          "--reference is only accepted with --layers=lm_head")


def main(argv):
  del argv
  check_flags()
  workdir = os.path.abspath(FLAGS.workdir)
  io.check_workdir(workdir)
  if not FLAGS.overwrite and io.existing_outputs(workdir, OUTPUTS):
    raise ConfigError(f"--workdir={workdir} already holds results; pass --overwrite to replace "
                      "them")
  with jax.enable_x64(FLAGS.dtype == "float64"):  # scoped: restored when the solve ends
    setup = runs.prepare()
    params = jax.jit(setup.workload.init)(jax.random.key(FLAGS.seed))
    result = (solve_lm_head if FLAGS.layers == "lm_head" else solve_all)(setup, params)
    num_params = setup.workload.num_params(params)
  settings = {"model": dataclasses.asdict(setup.workload.model_config),
              "loss": dataclasses.asdict(setup.workload.loss_config),
              "data": dataclasses.asdict(launch_flags.data_config()),
              "solve": {k: getattr(FLAGS, k) for k in ("method", "ridge", "rcond", "layers",
                                                       "sweeps", "ridge_path", "reference")},
              "seed": FLAGS.seed}
  summary = {"optimizer": result.pop("optimizer"), "model": FLAGS.model, "method": FLAGS.method,
             "layers": FLAGS.layers, "dtype": FLAGS.dtype, "ridge": FLAGS.ridge,
             "rcond": FLAGS.rcond, "num_params": num_params, **result}
  summary["diverged"] = bool(summary["nonfinite_steps"] or not math.isfinite(summary["train_loss"]))
  io.remove_outputs(workdir, OUTPUTS)
  os.makedirs(workdir, exist_ok=True)
  io.write_json(os.path.join(workdir, "config.json"), settings)
  io.write_json(os.path.join(workdir, "summary.json"), summary)
  print(" ".join(f"{k}={v}" for k, v in summary.items()
                 if not isinstance(v, (dict, list))))


if __name__ == "__main__":
  jax.config.parse_flags_with_absl()
  launch_flags.run(main)
