"""Newton-type optax transformations: `newton`, `exact_newton`, `gauss_newton`, `levenberg_marquardt`.

Each factory takes the static functions it needs and returns an
`optax.GradientTransformationExtraArgs` whose `update(updates, state, params, *,
inputs, targets, **ignored)` returns the step `Δθ` (never parameters); the incoming
`updates` (the gradient) are not used, the transform recomputes loss and gradient
with its curvature. Unknown extra args (`value`, `grad`, `value_fn`, ...) are
ignored, so these chain with optax transforms, line searches included.

| name | curvature `C` | solve of `(C + λI) d = −g` | λ |
|---|---|---|---|
| `exact_newton` | dense `H` (`jax.hessian`, size guard) | Cholesky; if not PD, eigenvalues `max(|w|, ε·max|w|)` | fixed |
| `newton` | `H` by forward-over-reverse | Steihaug CG (negative-curvature stop, gradient fallback) | fixed |
| `gauss_newton` | GGN `Jᵀ H_ℓ J` (jvp + closed-form `H_ℓ` + vjp) | CG | fixed |
| `levenberg_marquardt` | GGN | CG | from `ρ = actual / predicted` |

Per step: the direction `d`; a step-norm cap (`‖d‖ <= max_step_norm` when > 0);
an optional backtracking line search (`optax.scale_by_backtracking_linesearch`,
step `α d`, `α <= 1`); then the loss at `θ + α d`. Predicted reduction of the
undamped quadratic model: `−(α gᵀd + ½ α² dᵀC d)`; actual: `L(θ) − L(θ + α d)`.
A step is dropped (zero update) when anything is non-finite (`nonfinite += 1`,
`λ ← 10 λ`) or, for LM and with a line search, when it does not lower the loss
(`rejected += 1`). LM (Nielsen's rule): accepted, `λ ← λ · max(⅓, 1 − (2ρ − 1)³)`;
rejected, `λ ← 4 λ`; λ clipped to `[1e-12, 1e12]`.
Numerics: everything in the parameter dtype; CG tolerance relative to `‖g‖`.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lmopt.config import OptimizerConfig
from lmopt.optim import cg, curvature, subset

MIN_DAMPING, MAX_DAMPING = 1e-12, 1e12
LINESEARCH_STEPS = 12


class SecondOrderState(NamedTuple):
  """Step count and per-step diagnostics (scalars are what `launch.train` logs).

  `damping`: λ for the next step; `loss`: loss before the last step;
  `cg_iterations`: CG products of the last step; `predicted_reduction`,
  `actual_reduction`: of the last step; `rejected`, `nonfinite`,
  `negative_curvature`: counts of steps so far; `step`: last direction (warm start);
  `linesearch`: optax's backtracking state.
  """

  count: jax.Array
  damping: jax.Array
  loss: jax.Array
  cg_iterations: jax.Array
  predicted_reduction: jax.Array
  actual_reduction: jax.Array
  rejected: jax.Array
  nonfinite: jax.Array
  negative_curvature: jax.Array
  step: optax.Updates | None
  linesearch: optax.OptState | None


class Direction(NamedTuple):
  loss: jax.Array
  grad: optax.Updates
  step: optax.Updates
  curvature: jax.Array  # dᵀ C d, undamped
  iterations: jax.Array
  negative_curvature: jax.Array


def _all_finite(*trees) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


def _where(pred, a, b):
  return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def _diagonal_preconditioner(diag, damping) -> Callable:
  """`r -> r / (|diag| + λ)`, the denominator floored at `1e-6 · max` (Jacobi)."""
  top = jnp.max(jnp.stack([jnp.max(jnp.abs(d)) for d in jax.tree.leaves(diag)]))
  floor = jnp.maximum(1e-6 * (top + damping), jnp.finfo(top.dtype).eps)
  inverse = jax.tree.map(lambda d: 1.0 / jnp.maximum(jnp.abs(d) + damping, floor), diag)
  return lambda r: jax.tree.map(jnp.multiply, inverse, r)


def _cg_direction(operator: Callable, *, cg_iters: int, cg_tol: float,
                  preconditioner: str | None, precond_samples: int, seed: int) -> Callable:
  """Direction from truncated CG on `(C + λI) d = −g`, `C` from `operator(params, inputs, targets)`."""
  if preconditioner not in (None, "hutchinson"):
    raise ValueError(f"preconditioner={preconditioner!r} is not accepted; use None or hutchinson")

  def direction(params, inputs, targets, damping, x0, count):
    curv = operator(params, inputs, targets)
    damped = lambda v: optax.tree.add_scale(curv.matvec(v), damping, v)
    precond = None
    if preconditioner:
      key = jax.random.fold_in(jax.random.key(seed), count)
      diag = curvature.hutchinson_diagonal(curv.matvec, params, key, precond_samples)
      precond = _diagonal_preconditioner(diag, damping)
    result = cg.steihaug_cg(damped, optax.tree.scale(-1.0, curv.grad), max_iters=cg_iters,
                            tol=cg_tol, x0=x0, precond=precond)
    d = result.x
    return Direction(curv.loss, curv.grad, d, optax.tree.vdot(d, curv.matvec(d)),
                     result.iterations, result.negative_curvature)

  return direction


def _dense_direction(loss_fn: Callable, *, eig_floor: float, max_params: int) -> Callable:
  """Direction from the dense Hessian: Cholesky of `H + λI`, else eigenvalue-modified."""

  def direction(params, inputs, targets, damping, x0, count):
    del x0, count
    hess, grad, loss = curvature.dense_hessian(loss_fn, params, inputs, targets,
                                               max_params=max_params)
    eye = jnp.eye(grad.size, dtype=grad.dtype)
    chol = jnp.linalg.cholesky(hess + damping * eye)
    positive = jnp.all(jnp.isfinite(chol))

    def cholesky_step():
      return -jax.scipy.linalg.cho_solve((chol, True), grad)

    def modified_step():
      w, v = jnp.linalg.eigh(hess)
      w = jnp.maximum(jnp.abs(w), eig_floor * jnp.max(jnp.abs(w))) + damping
      return -v @ ((v.T @ grad) / w)

    d = jax.lax.cond(positive, cholesky_step, modified_step)
    unravel = ravel_pytree(params)[1]
    return Direction(loss, unravel(grad), unravel(d), d @ hess @ d, jnp.zeros((), jnp.int32),
                     ~positive)

  return direction


def _strong(tree):
  """Drops weak types (optax's line-search init has some), so the state's types never drift."""
  return jax.tree.map(lambda x: jnp.asarray(x, x.dtype), tree)


def _cap(d, curv, max_step_norm: float):
  """Scales `d` (and `dᵀCd`) down to norm `max_step_norm` when that is > 0."""
  if max_step_norm <= 0:
    return d, curv
  norm = optax.tree.norm(d)
  scale = jnp.minimum(1.0, max_step_norm / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
  return optax.tree.scale(scale, d), curv * scale**2


def _transform(direction_fn: Callable, loss_at: Callable, *, damping: float, adaptive: bool,
               linesearch: bool, max_step_norm: float, warm_start: float
               ) -> optax.GradientTransformationExtraArgs:
  """The shared update around a `direction_fn` (see the module docstring)."""
  search = (optax.scale_by_backtracking_linesearch(
      LINESEARCH_STEPS, decrease_factor=0.5, max_learning_rate=1.0) if linesearch else None)
  reject_increase = adaptive or linesearch

  def init_fn(params):
    dtype = jnp.result_type(*jax.tree.leaves(params))
    zero, izero = jnp.zeros((), dtype), jnp.zeros((), jnp.int32)
    return SecondOrderState(
        count=izero, damping=jnp.asarray(damping, dtype), loss=zero, cg_iterations=izero,
        predicted_reduction=zero, actual_reduction=zero, rejected=izero, nonfinite=izero,
        negative_curvature=izero,
        step=optax.tree.zeros_like(params) if warm_start else None,
        linesearch=_strong(search.init(params)) if search else None)

  def update_fn(updates, state, params, *, inputs=None, targets=None, **extra):
    del updates, extra
    dtype = state.damping.dtype
    lam = state.damping
    x0 = optax.tree.scale(warm_start, state.step) if warm_start else None
    dirn = direction_fn(params, inputs, targets, lam, x0, state.count)
    d, dcd = _cap(dirn.step, dirn.curvature, max_step_norm)
    slope = optax.tree.vdot(dirn.grad, d)
    if search:
      _, ls_state = search.update(d, state.linesearch, params, value=dirn.loss, grad=dirn.grad,
                                  value_fn=lambda p: loss_at(p, inputs, targets))
      alpha, new_loss = ls_state.learning_rate.astype(dtype), ls_state.value
    else:
      ls_state, alpha = None, jnp.ones((), dtype)
      new_loss = loss_at(optax.tree.add(params, d), inputs, targets)
    predicted = -(alpha * slope + 0.5 * alpha**2 * dcd)
    actual = dirn.loss - new_loss
    finite = _all_finite(d, dirn.loss, new_loss, predicted)
    lowered = actual > 0
    accept = finite & (lowered | (not reject_increase))
    lam_ok = lam
    if adaptive:
      rho = jnp.where(predicted > 0, actual / predicted, 0.0)
      lam_ok = jnp.where(lowered, lam * jnp.maximum(1 / 3, 1 - (2 * rho - 1) ** 3), 4 * lam)
      lam_ok = jnp.clip(lam_ok, MIN_DAMPING, MAX_DAMPING)
    lam_new = jnp.where(finite, lam_ok, jnp.minimum(10 * jnp.maximum(lam, MIN_DAMPING), MAX_DAMPING))
    step = optax.tree.scale(alpha, d)
    new_updates = _where(accept, step, optax.tree.zeros_like(step))
    as_int = lambda b: b.astype(jnp.int32)
    new_state = SecondOrderState(
        count=state.count + 1,
        damping=lam_new.astype(dtype),
        loss=dirn.loss.astype(dtype),
        cg_iterations=jnp.asarray(dirn.iterations, jnp.int32),
        predicted_reduction=predicted.astype(dtype),
        actual_reduction=actual.astype(dtype),
        rejected=state.rejected + as_int(finite & ~accept),
        nonfinite=state.nonfinite + as_int(~finite),
        negative_curvature=state.negative_curvature + as_int(dirn.negative_curvature),
        step=_where(_all_finite(dirn.step), dirn.step, state.step) if warm_start else None,
        linesearch=ls_state)
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def newton(loss_fn: Callable, *, damping: float = 1e-3, cg_iters: int = 20, cg_tol: float = 1e-5,
           max_step_norm: float = 0.0, linesearch: bool = False, warm_start: float = 0.0,
           preconditioner: str | None = None, precond_samples: int = 1, seed: int = 0
           ) -> optax.GradientTransformationExtraArgs:
  """Truncated Newton (Hessian-free): Steihaug CG on `(H + λI) d = −g`, `H` by jvp-of-grad.

  Args:
    loss_fn: `(params, inputs, targets) -> []`.
    damping: fixed λ >= 0 (raised tenfold after a non-finite step).
    cg_iters, cg_tol: CG iteration cap and relative residual tolerance.
    max_step_norm: cap on `‖d‖` (0: none).
    linesearch: backtracking (Armijo) line search from `α = 1`; loss-raising steps rejected.
    warm_start: CG starts from `warm_start · d_prev` (0: from zero).
    preconditioner: `"hutchinson"`: Jacobi on a Hutchinson estimate of `diag(H)`
      (`precond_samples` products, keys `fold_in(key(seed), count)`).
  """
  operator = lambda p, x, y: curvature.hessian_operator(loss_fn, p, x, y)
  direction = _cg_direction(operator, cg_iters=cg_iters, cg_tol=cg_tol,
                            preconditioner=preconditioner, precond_samples=precond_samples,
                            seed=seed)
  return _transform(direction, loss_fn, damping=damping, adaptive=False, linesearch=linesearch,
                    max_step_norm=max_step_norm, warm_start=warm_start)


def exact_newton(loss_fn: Callable, *, damping: float = 0.0, eig_floor: float = 1e-6,
                 max_params: int = curvature.MAX_DENSE_PARAMS, max_step_norm: float = 0.0,
                 linesearch: bool = False) -> optax.GradientTransformationExtraArgs:
  """Newton with the dense Hessian (`P <= max_params`, else `ConfigError` at init).

  Solves `(H + λI) d = −g` by Cholesky when `H + λI` is positive definite; otherwise
  with the eigenvalue-modified Hessian `V (max(|w|, eig_floor · max|w|) + λ) Vᵀ`
  (counted as negative curvature).
  """
  direction = _dense_direction(loss_fn, eig_floor=eig_floor, max_params=max_params)
  tx = _transform(direction, loss_fn, damping=damping, adaptive=False, linesearch=linesearch,
                  max_step_norm=max_step_norm, warm_start=0.0)

  def init_fn(params):
    curvature.check_dense_size(sum(x.size for x in jax.tree.leaves(params)), max_params)
    return tx.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)


def _ggn_parts(logits_fn: Callable, output_loss: Callable, output_hvp: Callable):
  """`(operator, loss_at)` of the generalised Gauss–Newton model."""
  operator = functools.partial(curvature.ggn_operator, logits_fn, output_loss, output_hvp)
  loss_at = lambda p, x, y: jnp.mean(output_loss(logits_fn(p, x), y))
  return operator, loss_at


def _ggn_cg_direction(logits_fn: Callable, output_loss: Callable, output_hvp: Callable,
                      **cg_options):
  """`(direction, loss_at)` of CG on the GGN `Jᵀ H_ℓ J` (shared by GN and LM)."""
  operator, loss_at = _ggn_parts(logits_fn, output_loss, output_hvp)
  return _cg_direction(operator, **cg_options), loss_at


def gauss_newton(logits_fn: Callable, output_loss: Callable, output_hvp: Callable, *,
                 damping: float = 1e-3, cg_iters: int = 20, cg_tol: float = 1e-5,
                 max_step_norm: float = 0.0, linesearch: bool = False, warm_start: float = 0.0,
                 preconditioner: str | None = None, precond_samples: int = 1, seed: int = 0
                 ) -> optax.GradientTransformationExtraArgs:
  """Gauss–Newton: CG on `(Jᵀ H_ℓ J + λI) d = −g` (options as `newton`).

  Args:
    logits_fn: `(params, inputs) -> z`; output_loss: `(z, targets) -> per-token loss`
      (the objective is its mean); output_hvp: `(z, targets, u) -> H_ℓ u` of that mean,
      e.g. `curvature.output_hessian_vp("ce")`.
  """
  direction, loss_at = _ggn_cg_direction(logits_fn, output_loss, output_hvp, cg_iters=cg_iters,
                                         cg_tol=cg_tol, preconditioner=preconditioner,
                                         precond_samples=precond_samples, seed=seed)
  return _transform(direction, loss_at, damping=damping, adaptive=False, linesearch=linesearch,
                    max_step_norm=max_step_norm, warm_start=warm_start)


def levenberg_marquardt(logits_fn: Callable, output_loss: Callable, output_hvp: Callable, *,
                        damping: float = 1e-3, cg_iters: int = 20, cg_tol: float = 1e-5,
                        max_step_norm: float = 0.0, warm_start: float = 0.0,
                        preconditioner: str | None = None, precond_samples: int = 1,
                        seed: int = 0) -> optax.GradientTransformationExtraArgs:
  """Gauss–Newton with λ adapted from `ρ = actual / predicted`; loss-raising steps rejected.

  `damping` is the initial λ; other arguments as `gauss_newton`.
  """
  direction, loss_at = _ggn_cg_direction(logits_fn, output_loss, output_hvp, cg_iters=cg_iters,
                                         cg_tol=cg_tol, preconditioner=preconditioner,
                                         precond_samples=precond_samples, seed=seed)
  return _transform(direction, loss_at, damping=damping, adaptive=True, linesearch=False,
                    max_step_norm=max_step_norm, warm_start=warm_start)


def _on_params(config: OptimizerConfig, build: Callable, **fns: Callable):
  """`build(**fns)` on all parameters, or on the `config.params` subset via `on_subset`."""
  if config.params == "all":
    return build(**fns)
  return subset.on_subset(build, tuple(config.params.split(",")), **fns)


def _cg_options(config: OptimizerConfig) -> dict:
  return {"damping": config.damping, "cg_iters": config.cg_iters, "cg_tol": config.cg_tol,
          "max_step_norm": config.max_step_norm, "warm_start": config.cg_warm_start,
          "preconditioner": None if config.preconditioner == "none" else config.preconditioner}


def _ggn_statics(workload) -> dict:
  return {"output_loss": workload.output_loss,
              "output_hvp": curvature.output_hessian_vp(workload.loss_config.name)}


def newton_from_config(config: OptimizerConfig, workload) -> optax.GradientTransformationExtraArgs:
  """`newton` with a backtracking line search on `workload.loss`."""
  build = functools.partial(newton, linesearch=True, **_cg_options(config))
  return _on_params(config, build, loss_fn=workload.loss)


def exact_newton_from_config(config: OptimizerConfig, workload
                             ) -> optax.GradientTransformationExtraArgs:
  """`exact_newton` (dense Hessian) with a backtracking line search."""
  build = functools.partial(exact_newton, damping=config.damping,
                            max_step_norm=config.max_step_norm, linesearch=True)
  return _on_params(config, build, loss_fn=workload.loss)


def gauss_newton_from_config(config: OptimizerConfig, workload
                             ) -> optax.GradientTransformationExtraArgs:
  """`gauss_newton` with a backtracking line search; `H_ℓ` in closed form for the workload's loss."""
  build = functools.partial(gauss_newton, linesearch=True, **_cg_options(config),
                            **_ggn_statics(workload))
  return _on_params(config, build, logits_fn=workload.logits_fn)


def levenberg_marquardt_from_config(config: OptimizerConfig, workload
                                    ) -> optax.GradientTransformationExtraArgs:
  """`levenberg_marquardt` from `config.damping` (initial λ)."""
  build = functools.partial(levenberg_marquardt, **_cg_options(config), **_ggn_statics(workload))
  return _on_params(config, build, logits_fn=workload.logits_fn)
