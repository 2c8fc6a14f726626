"""K-FAC (kfac-jax, the reference implementation) beside AdamW and Gauss-Newton.

  pip install -e '.[bench]' && python -m benchmarks.kfac [--small]

Runs kfac-jax's optimizer (adaptive learning rate, momentum and damping, as in its
examples) on each model with the same initial parameters and the same full batch of
builtin-corpus windows as lmopt's `levenberg_marquardt` and AdamW, recording the loss
after a fixed number of steps and the time per step. Where kfac-jax's graph matcher
does not accept a model, the row says so with its error, rather than being dropped.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lmopt import sharding, train
from lmopt.config import DataConfig, LossConfig, ModelConfig, OptimizerConfig
from lmopt.data import load_data
from lmopt.losses import next_token_split
from lmopt.optim import build_optimizer
from lmopt.workload import Workload

MODELS = ("linear_mixer", "masked_mixer", "transformer")


def kfac_run(workload, tokens, steps):
  """Loss after `steps` kfac-jax steps, and seconds per step (after the first)."""
  import kfac_jax

  inputs, targets = next_token_split(jnp.asarray(tokens))
  name = workload.loss_config.name

  def loss_fn(params, batch):
    logits = workload.logits_fn(params, batch[0])
    if name == "ce":
      kfac_jax.register_softmax_cross_entropy_loss(logits, batch[1])
    else:
      onehots = workload.loss_config.onehot_scale * jax.nn.one_hot(batch[1], logits.shape[-1])
      # lmopt's MSE is the mean over vocab; kfac-jax's squared error is 1/2 sum.
      kfac_jax.register_squared_error_loss(logits, onehots, weight=2.0 / logits.shape[-1])
    return jnp.mean(workload.output_loss(logits, batch[1]))

  optimizer = kfac_jax.Optimizer(
      value_and_grad_func=jax.value_and_grad(loss_fn), l2_reg=0.0,
      use_adaptive_learning_rate=True, use_adaptive_momentum=True, use_adaptive_damping=True,
      initial_damping=1.0, num_burnin_steps=0, multi_device=False)
  params = workload.init(jax.random.key(0))
  rng = jax.random.key(1)
  state = optimizer.init(params, rng, (inputs, targets))
  times = []
  for step in range(steps):
    t0 = time.perf_counter()
    params, state, _ = optimizer.step(params, state, jax.random.fold_in(rng, step),
                                      batch=(inputs, targets), global_step_int=step)
    jax.block_until_ready(params)
    times.append(time.perf_counter() - t0)
  return float(workload.loss(params, inputs, targets)), float(np.median(times[1:]))


def lmopt_run(workload, tokens, name, steps, **settings):
  mesh = sharding.data_mesh()
  tx = build_optimizer(OptimizerConfig(name=name, **settings), workload,
                       jax.eval_shape(workload.init, jax.random.key(0)))
  state = train.init_state(workload, tx, 0, mesh)
  records = []
  state, _ = train.fit(train.make_train_step(workload, tx), state, lambda i: tokens, mesh,
                       num_steps=steps, on_step=lambda s, r: records.append(r.seconds) and False)
  times = np.diff([0.0, *records])
  inputs, targets = next_token_split(jnp.asarray(tokens))
  return float(workload.loss(state.params, inputs, targets)), float(np.median(times))


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv)
  dim, seq_len, windows, steps = (16, 16, 8, 5) if args.small else (64, 32, 32, 50)
  data = load_data(DataConfig(vocab_size=300, seq_len=seq_len, batch_size=windows,
                              builtin_stories=100))
  tokens = np.asarray(data.batches.batch(0))
  rows = []
  for loss in ("ce", "mse"):
    for model in MODELS:
      workload = Workload(ModelConfig(name=model, vocab_size=300, dim=dim, depth=2,
                                      seq_len=seq_len), LossConfig(loss, 1000.0))
      row = {"model": model, "loss": loss,
             "initial": float(workload.loss(workload.init(jax.random.key(0)),
                                            *next_token_split(jnp.asarray(tokens))))}
      row["adamw"], row["adamw_s"] = lmopt_run(workload, tokens, "adamw", steps,
                                               learning_rate=1e-2)
      row["lm"], row["lm_s"] = lmopt_run(workload, tokens, "levenberg_marquardt", steps)
      try:
        row["kfac"], row["kfac_s"] = kfac_run(workload, tokens, steps)
      except Exception as e:  # noqa: BLE001 -- any kfac-jax failure is a result to record
        row["kfac"] = f"kfac-jax failed ({type(e).__name__}): " + str(e).splitlines()[0][:100]
      rows.append(row)
  columns = ["model", "loss", "initial", "adamw", "lm", "kfac", "adamw_s", "lm_s", "kfac_s"]
  table = (f"Loss after {steps} full-batch steps ({windows} windows of {seq_len} tokens, dim "
           f"{dim}, vocab 300; AdamW lr 1e-2, LM at registry defaults, kfac-jax adaptive); "
           "`*_s` = median seconds per step:\n\n" + common.markdown(rows, columns))
  common.save("kfac", rows, table, "python -m benchmarks.kfac" + (" --small" if args.small else ""))


if __name__ == "__main__":
  main()
