"""`normal_solve`: one step = the exact least-squares `lm_head` for the batch it is given.

Under the MSE against `s * onehot(y)`, the loss is linear least squares in the lm_head
kernel `W` `[D, V]` given the features `X` (lm_head inputs, all positions of the batch
stacked). The step replaces `W` by `solvers.solve(config.solve_method, X, y, ...)` with
`config.ridge` and `config.rcond`, and leaves every other parameter untouched.

The train step passes the *current batch* as `inputs` / `targets`: in full-batch mode
(`batch_size=0`) that is the training set, so one step is the data-set-wide optimum;
with mini-batches each step is the optimum of that batch alone (later steps overwrite
earlier ones). For data sets that do not fit one batch, `launch/solve.py` streams the
statistics instead.

Numerics: the solve runs in the parameters' dtype (float32 unless the model is
float64); a non-finite solution (e.g. `cholesky`/`qr`/`normal_inverse` on a singular
problem) gives a zero update and increments `nonfinite`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lmopt.config import ConfigError, OptimizerConfig
from lmopt.lstsq import solvers
from lmopt.lstsq import stats as stats_lib


class NormalSolveState(NamedTuple):
  count: jax.Array  # int32 []: steps taken
  nonfinite: jax.Array  # int32 []: solves refused for non-finite values
  loss_before: jax.Array  # per-token MSE of the old lm_head on the last batch (from statistics)
  loss_after: jax.Array  # the same for the solution


def normal_solve(config: OptimizerConfig, workload) -> optax.GradientTransformationExtraArgs:
  """Builds the exact lm_head solve; needs `--loss=mse` and a known `solve_method`."""
  method, ridge, rcond = config.solve_method, config.ridge, config.rcond
  if workload.loss_config.name != "mse":
    raise ConfigError(f"--optimizer=normal_solve needs --loss=mse, got {workload.loss_config.name!r}")
  if method not in solvers.METHODS:
    raise ConfigError(f"--method={method!r} is not accepted; use one of {', '.join(solvers.METHODS)}")
  vocab = workload.model_config.vocab_size
  scale = workload.loss_config.onehot_scale

  def init_fn(params):
    del params
    zero = jnp.zeros((), jnp.float32)
    return NormalSolveState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), zero, zero)

  def update_fn(updates, state, params=None, *, inputs=None, targets=None, **extra):
    del extra
    w_old = params["lm_head"]["kernel"]
    x_NxD = workload.features_fn(params, inputs).reshape(-1, w_old.shape[0])
    y_N = targets.reshape(-1)
    gram = stats_lib.batch_stats(x_NxD, y_N, vocab, scale)
    if method in solvers.GRAM_METHODS:
      w_new = solvers.solve_gram(method, gram, ridge=ridge, rcond=rcond)
    else:
      w_new = solvers.solve_data(method, x_NxD, y_N, vocab, scale, ridge=ridge, rcond=rcond)
    finite = jnp.all(jnp.isfinite(w_new))
    delta = jnp.where(finite, w_new - w_old, 0.0).astype(w_old.dtype)
    new_updates = jax.tree.map(jnp.zeros_like, updates)
    new_updates["lm_head"] = {**new_updates["lm_head"], "kernel": delta}
    loss = lambda w: stats_lib.loss_from_stats(gram, w).astype(jnp.float32)
    new_state = NormalSolveState(state.count + 1, state.nonfinite + (~finite).astype(jnp.int32),
                                 loss(w_old), loss(w_old + delta))
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
