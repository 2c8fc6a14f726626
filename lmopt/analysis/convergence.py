"""Convergence diagnostics: observed order, linear rate, predicted and measured steps.

Error sequences `e_k` (e.g. the excess loss `f(x_k) − f*`) are short host arrays, so the
estimators are numpy. Predictions are for a quadratic with Hessian eigenvalues in
`[μ, L]`, `κ = L / μ`, and count steps to a relative excess loss `ε`,
`f(x_k) − f* <= ε (f(x_0) − f*)`:

* gradient descent with the optimal fixed step `η = 2 / (L + μ)` contracts every
  eigencomponent of the error by `|1 − η λ| <= ρ = (κ − 1) / (κ + 1)`, so the excess
  loss by `ρ²` per step: at most `log(1/ε) / (2 log(1/ρ)) ≈ (κ/4) log(1/ε)` steps
  (`gd_steps`, tight when the start has weight on both extreme eigenvectors). The
  textbook bound for a smooth strongly convex `f` with step `1/L`, `κ log(1/ε)`, is
  `rule_of_thumb_steps`.
* heavy-ball momentum with Polyak's parameters (`heavy_ball`): asymptotic rate
  `(√κ − 1) / (√κ + 1)` on the error, i.e. about `(√κ/4) log(1/ε)` steps.
* Newton–CG with `m` CG iterations per step (undamped): each step leaves at most
  `4 ((√κ − 1) / (√κ + 1))^{2m}` of the excess (the CG energy-norm bound), one step when
  the solve is exact.

`run_to_target` measures: it runs any optax transformation (the lmopt train-step
contract) until the loss reaches a target, as one `lax.while_loop`.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _usable(errors, floor: float):
  e = np.asarray(errors, dtype=np.float64)
  return e, np.isfinite(e) & (e > floor)


def observed_order(errors, floor: float = 0.0) -> float:
  """Median of `p_k = log(e_{k+1} / e_k) / log(e_k / e_{k−1})` over usable triples.

  `p ≈ 1`: linear, `p ≈ 2`: quadratic convergence. Errors `<= floor` (rounding level),
  non-finite ones and stalled pairs are skipped; NaN when no triple is usable.
  """
  e, ok = _usable(errors, floor)
  orders = []
  for k in range(1, len(e) - 1):
    if ok[k - 1] and ok[k] and ok[k + 1] and e[k] != e[k - 1]:
      orders.append(math.log(e[k + 1] / e[k]) / math.log(e[k] / e[k - 1]))
  return float(np.median(orders)) if orders else math.nan


def linear_rate(errors, floor: float = 0.0) -> float:
  """`ρ` of `e_k ≈ C ρ^k` by least squares on `log e_k` over usable entries (NaN if < 2)."""
  e, ok = _usable(errors, floor)
  k = np.nonzero(ok)[0]
  if len(k) < 2:
    return math.nan
  slope = np.polyfit(k.astype(np.float64), np.log(e[k]), 1)[0]
  return float(math.exp(slope))


def steps_for_rate(rate: float, eps: float) -> float:
  """Smallest `k` with `rate^k <= eps` (`inf` when `rate >= 1`, 0 when `eps >= 1`)."""
  if eps >= 1:
    return 0
  if rate <= 0:
    return 1
  if rate >= 1:
    return math.inf
  return math.ceil(math.log(eps) / math.log(rate) - 1e-12)


def gd_step(lmax: float, lmin: float) -> float:
  """The optimal fixed step `2 / (L + μ)` of gradient descent on a quadratic."""
  return 2.0 / (lmax + lmin)


def gd_rate(kappa: float) -> float:
  """Per-step contraction of the error norm under the optimal step, `(κ − 1) / (κ + 1)`."""
  return (kappa - 1.0) / (kappa + 1.0)


def gd_steps(kappa: float, eps: float) -> float:
  """Worst-case GD steps (optimal step) to a relative excess loss `eps`."""
  return steps_for_rate(gd_rate(kappa) ** 2, eps)


def rule_of_thumb_steps(kappa: float, eps: float) -> float:
  """`κ log(1/ε)`."""
  return kappa * math.log(1.0 / eps)


def heavy_ball(lmax: float, lmin: float) -> tuple[float, float]:
  """Polyak's optimal `(learning_rate, momentum)` = `(4 / (√L + √μ)², ((√κ − 1)/(√κ + 1))²)`."""
  root = math.sqrt(lmax / lmin)
  return 4.0 / (math.sqrt(lmax) + math.sqrt(lmin)) ** 2, ((root - 1.0) / (root + 1.0)) ** 2


def heavy_ball_steps(kappa: float, eps: float) -> float:
  """Asymptotic heavy-ball steps to a relative excess loss `eps`."""
  root = math.sqrt(kappa)
  return steps_for_rate(((root - 1.0) / (root + 1.0)) ** 2, eps)


def newton_cg_steps(kappa: float, cg_iters: int, eps: float) -> float:
  """Undamped Newton–CG steps to `eps` from the CG bound (`inf` when the bound is vacuous)."""
  root = math.sqrt(kappa)
  return steps_for_rate(4.0 * ((root - 1.0) / (root + 1.0)) ** (2 * cg_iters), eps)


def steps_to_target(losses, target: float):
  """First index `k` with `losses[k] <= target`, or None."""
  hits = np.nonzero(np.asarray(losses) <= target)[0]
  return int(hits[0]) if len(hits) else None


class Trajectory(NamedTuple):
  """`losses` `[max_steps + 1]` (`losses[k]` at step k; NaN after the stop), `steps` taken
  (int32) and whether the target was `reached`."""

  losses: jax.Array
  steps: jax.Array
  reached: jax.Array


def run_to_target(tx: optax.GradientTransformation, loss_fn: Callable, params, inputs, targets,
                  target: float, max_steps: int) -> Trajectory:
  """Runs `tx` on `loss_fn(params, inputs, targets)` until the loss is `<= target`.

  Every update gets the lmopt extra arguments (`value`, `grad`, `value_fn`, `inputs`,
  `targets`), so lmopt's second-order transforms run as well as optax's. A non-finite
  loss stops the run (not reached). Jit-able with `tx`, `loss_fn`, `max_steps` static.
  """
  tx = optax.with_extra_args_support(tx)
  value_and_grad = jax.value_and_grad(loss_fn)
  loss0, grad0 = value_and_grad(params, inputs, targets)
  losses = jnp.full((max_steps + 1,), jnp.nan, loss0.dtype).at[0].set(loss0)

  def running(carry):
    k, _, _, loss, _, _ = carry
    return (k < max_steps) & (loss > target) & jnp.isfinite(loss)

  def step(carry):
    k, x, state, value, grad, losses = carry
    updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=loss_fn,
                               inputs=inputs, targets=targets)
    x = optax.apply_updates(x, updates)
    value, grad = value_and_grad(x, inputs, targets)
    return k + 1, x, state, value, grad, losses.at[k + 1].set(value)

  carry = (jnp.zeros((), jnp.int32), params, tx.init(params), loss0, grad0, losses)
  steps, _, _, loss, _, losses = jax.lax.while_loop(running, step, carry)
  return Trajectory(losses, steps, loss <= target)
