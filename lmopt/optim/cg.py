"""Truncated (Steihaug) preconditioned conjugate gradient on pytrees, as one `lax.while_loop`.

Approximately solves `A x = b` for a symmetric `A` given only `matvec(v) = A v`
(Nocedal & Wright, Alg. 7.1, "line-search Newton-CG"). Unlike
`jax.scipy.sparse.linalg.cg` (which suffices for SPD systems and which the tests
use as a reference) it reports the iterations used and stops at negative
curvature `pᵀAp <= 0`, which the Newton methods need on an indefinite Hessian.

Numerics: inner products in the dtype of the leaves; relative tolerance on the
unpreconditioned residual, `‖b − A x‖ <= tol ‖b‖`.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class CGResult(NamedTuple):
  """`x`: the solution estimate (a descent direction for `m(x) = ½xᵀAx − bᵀx`).

  `iterations`: matrix-vector products used in the loop (int32).
  `negative_curvature`: whether a direction with `pᵀAp <= 0` stopped the loop.
  """

  x: optax.Updates
  iterations: jax.Array
  negative_curvature: jax.Array


def _vdot(a, b):
  return optax.tree.vdot(a, b)


def _where(pred, a, b):
  return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def steihaug_cg(matvec: Callable, b, *, max_iters: int, tol: float, x0=None,
                precond: Callable | None = None) -> CGResult:
  """Truncated preconditioned CG for a symmetric, possibly indefinite `A`.

  Args:
    matvec: `v -> A v` on pytrees shaped like `b`.
    b: right-hand side (for Newton: `−g`).
    max_iters: cap on the loop's matrix-vector products (static).
    tol: relative residual tolerance.
    x0: warm start; kept only if it lowers the model, `m(x0) < 0 = m(0)` (costs one product).
    precond: `r -> M⁻¹ r` for an SPD `M` (default identity).

  Stops at the tolerance, the cap, or at the first direction with `pᵀAp <= 0`,
  returning the iterate reached before it. If that iterate is not a descent
  direction (`bᵀx <= 0`, e.g. negative curvature on the very first direction
  from `x0 = 0`), returns the preconditioned steepest-descent direction `M⁻¹ b`.
  """
  precond = precond or (lambda r: r)
  b_norm = jnp.sqrt(_vdot(b, b))
  if x0 is None:
    x, r = optax.tree.zeros_like(b), b
  else:
    r_warm = jax.tree.map(jnp.subtract, b, matvec(x0))
    keep = -0.5 * _vdot(x0, optax.tree.add(b, r_warm)) < 0  # m(x0) = −½ x0ᵀ(b + r0)
    x = _where(keep, x0, optax.tree.zeros_like(b))
    r = _where(keep, r_warm, b)
  y = precond(r)
  converged = jnp.sqrt(_vdot(r, r)) <= tol * b_norm
  init = (jnp.zeros((), jnp.int32), x, r, y, _vdot(r, y), converged, jnp.zeros((), bool))

  def cond(carry):
    k, *_, done, _ = carry
    return (k < max_iters) & ~done

  def body(carry):
    k, x, r, p, ry, _, _ = carry
    ap = matvec(p)
    pap = _vdot(p, ap)
    negative = pap <= 0
    alpha = ry / pap
    x_new = optax.tree.add_scale(x, alpha, p)
    r_new = optax.tree.add_scale(r, -alpha, ap)
    y_new = precond(r_new)
    ry_new = _vdot(r_new, y_new)
    p_new = optax.tree.add_scale(y_new, ry_new / ry, p)
    converged = jnp.sqrt(_vdot(r_new, r_new)) <= tol * b_norm
    stop = negative | ~jnp.isfinite(pap)
    return (k + 1, _where(stop, x, x_new), r_new, p_new, ry_new, stop | converged, negative)

  k, x, *_, negative = jax.lax.while_loop(cond, body, init)
  x = _where(_vdot(b, x) > 0, x, precond(b))
  return CGResult(x, k, negative)
