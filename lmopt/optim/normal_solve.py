"""`normal_solve`: one step = the exact least-squares `lm_head` for the batch it is given.

Under the MSE against `s * onehot(y)`, the loss is linear least squares in the lm_head
kernel `W` `[D, V]` given the features `X` (lm_head inputs, all positions of the batch
stacked). The step replaces `W` by `solvers.solve(config.solve_method, X, y, ...)` with
`config.ridge` and `config.rcond`, and leaves every other parameter untouched.

The train step passes the *current batch* as `inputs` / `targets`. The Gram methods
(`cholesky`, `eigh`, `normal_inverse`) add each batch's statistics to a running,
Kahan-compensated sum kept in the state and solve with everything seen so far: after
one epoch of mini-batches the step is the data-set-wide optimum, exactly as in
full-batch mode (`batch_size=0`), where the first step already is. This assumes the
features do not change between steps, which holds when nothing else trains the
other parameters. The data methods (`pinv`, `lstsq`, `qr`) need the rows themselves
and solve the current batch alone (later steps overwrite earlier ones);
`launch/solve.py` streams the statistics over any data set.

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
  loss_before: jax.Array  # per-token MSE of the old lm_head on the data solved for (from statistics)
  loss_after: jax.Array  # the same for the solution
  seen: stats_lib.CompensatedStats  # running statistics of every batch (Gram methods)


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
    w = params["lm_head"]["kernel"]
    zero = jnp.zeros((), jnp.float32)
    return NormalSolveState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), zero, zero,
                            stats_lib.compensated_zeros(w.shape[0], vocab, w.dtype))

  def update_fn(updates, state, params=None, *, inputs=None, targets=None, **extra):
    del extra
    w_old = params["lm_head"]["kernel"]
    x_NxD = workload.features_fn(params, inputs).reshape(-1, w_old.shape[0])
    y_N = targets.reshape(-1)
    gram = stats_lib.batch_stats(x_NxD, y_N, vocab, scale)
    seen = state.seen
    if method in solvers.GRAM_METHODS:
      batch_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in gram]))
      seen = jax.tree.map(lambda new, old: jnp.where(batch_finite, new, old),
                          stats_lib.add_compensated(seen, gram), seen)
      gram = seen.total
      w_new = solvers.solve_gram(method, gram, ridge=ridge, rcond=rcond)
    else:
      w_new = solvers.solve_data(method, x_NxD, y_N, vocab, scale, ridge=ridge, rcond=rcond)
    finite = jnp.all(jnp.isfinite(w_new))
    delta = jnp.where(finite, w_new - w_old, 0.0).astype(w_old.dtype)
    new_updates = jax.tree.map(jnp.zeros_like, updates)
    new_updates["lm_head"] = {**new_updates["lm_head"], "kernel": delta}
    loss = lambda w: stats_lib.loss_from_stats(gram, w).astype(jnp.float32)
    new_state = NormalSolveState(state.count + 1, state.nonfinite + (~finite).astype(jnp.int32),
                                 loss(w_old), loss(w_old + delta), seen)
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
