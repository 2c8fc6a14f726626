"""Newton–Raphson root finding on the loss: `f(θ) = ℓ(θ) − c`, first derivatives only.

`c` (`loss_constant`) is a guessed irreducible loss; a root must exist or the iteration
is sent off course. Four transformations, over the per-token losses `ℓ [B, T]`
(`N = B·T` components, `r = ℓ − c`, `gᵢ = ∇ℓᵢ`, `J = [gᵢ]` the `[N, P]` Jacobian):

* `newton_root`: one scalar `f = mean(ℓ) − c`, `g = ∇ mean(ℓ)`; `Δ = −f g / ‖g‖²`
  (the minimal-norm Newton step; equals `optax.polyak_sgd(max_learning_rate=inf, f_min=c)`).
* `newton_root_components`: `Δ = −Σᵢ rᵢ gᵢ / ‖gᵢ‖²`, every `gᵢ` at the same point
  (for linear residuals: one Jacobi sweep on `J Jᵀ u = r`).
* `newton_root_recalculated`: the same per-component steps applied one after another,
  each at the updated point, tokens in row-major `(b, t)` order (a `lax.scan`; for linear
  residuals: one Kaczmarz / Gauss–Seidel sweep).
* `newton_system`: `Δ = −Jᵀ u`, `(J Jᵀ + λI) u = r` (`= −J⁺ r` at `λ = 0`, the
  minimal-norm Newton / Gauss–Newton step for the system), matrix-free by CG on
  `u ↦ J(Jᵀu) + λu` (`jax.linearize` + its transpose); a dense `J` only when
  `N·P ≤ dense_max_size`.

`form="matrix_pinv"` (scalar and component steps) is the research's literal update: each
parameter leaf's gradient is kept as a matrix `G` (`[prod(shape[:-1]), shape[-1]]`) and
stepped by `−f (G⁺)ᵀ` (`jnp.linalg.pinv`, relative cutoff `rcond`, default
`10·max(shape)·eps`). For a rank-1 `G`
(a vector leaf, or one token's `lm_head` gradient `x ⊗ ∂ℓ/∂z`) this is `−f G/‖G‖²`, but
each leaf takes its own full step (linearised change `−f·Σ_leaves rank(G)` instead of
`−f`), and for a rank-k `G` (the whole-loss gradient) the singular values are inverted,
`σ ↦ 1/σ` instead of `σ ↦ σ/‖G‖²`, so the small ones dominate the step.

Contract: the factories take the static `per_token_loss(params, inputs, targets) -> [B, T]`;
`update(updates, state, params, *, inputs, targets, **ignored)` reads only the batch
(`targets [B, T]`; `inputs` batched along `inputs_axes`, e.g. `(None, 0)` for
`subset.on_subset`'s `(frozen, inputs)`) and ignores the incoming updates (it computes its
own gradients) and any other extra args. Returns updates, never parameters.

Step control (off by default, so the divergence can be reproduced): `max_step_norm > 0`
rescales `Δ` to at most that global norm; `backtrack_steps = K > 0` tries `α = 1, ½, …, 2⁻ᴷ`
and takes the first with a smaller merit (`|f|` for `newton_root`, `‖ℓ − c‖` otherwise), or
no step (counted in `rejected`). A non-finite loss or step gives zero updates and counts in
`nonfinite`. Arithmetic is in the parameter dtype (use float64 for tight checks); a
component with `‖gᵢ‖² ≤ finfo.tiny` takes no step.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lmopt.config import OptimizerConfig, require_choice
from lmopt.optim import subset
from lmopt.optim.cg import steihaug_cg

FORMS = ("min_norm", "matrix_pinv")


class NewtonRootState(NamedTuple):
  """Step count and diagnostics of the last step (values before the step)."""
  count: jax.Array  # int32 steps taken
  residual: jax.Array  # |f| (newton_root) or ‖ℓ − c‖ (others)
  grad_norm: jax.Array  # ‖∇ mean ℓ‖
  step_norm: jax.Array  # ‖Δ‖ applied (after cap, backtracking and guards)
  step_size: jax.Array  # backtracking factor α taken (0 when rejected or non-finite)
  cg_iterations: jax.Array  # int32 newton_system: CG matrix-vector products of the last solve
  cg_residual: jax.Array  # newton_system: ‖(JJᵀ+λI)u − r‖ / ‖r‖ after the solve
  nonfinite: jax.Array  # int32 steps zeroed for a non-finite loss or step
  rejected: jax.Array  # int32 steps where backtracking found no decrease


def _init_state(params) -> NewtonRootState:
  dtype = jax.tree.leaves(params)[0].dtype
  zero = jnp.zeros([], dtype)
  count = jnp.zeros([], jnp.int32)
  return NewtonRootState(count, zero, zero, zero, zero, count, zero, count, count)


def _example(tree, axes, b):
  """Example `b` of a batch, keeping a batch axis of size 1 (`axes`: vmap-style prefix)."""
  def take(ax, sub):
    if ax is None:
      return sub
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, b, 1, axis=ax), sub)
  return jax.tree.map(take, axes, tree, is_leaf=lambda a: a is None)


def _example_jacobian(per_token_loss, params, inputs, targets, inputs_axes, b):
  """`(ℓ [T], J)` of example `b` alone, `J` leaves `[T, *shape]` (one `jax.jacrev`)."""
  def losses(p):
    ell_T = per_token_loss(p, _example(inputs, inputs_axes, b), _example(targets, 0, b))[0]
    return ell_T, ell_T
  jac, ell_T = jax.jacrev(losses, has_aux=True)(params)
  return ell_T, jac


def _token_jacobian(per_token_loss, params, inputs, targets, inputs_axes):
  """`(ℓ [N], J)` with `J` leaves `[N, *shape]`: `jax.jacrev` per example, `jax.vmap` over examples.

  Token `(b, t)` depends on example `b` only, so this costs `N` single-example backward
  passes (not `N` full-batch ones); memory is `N·P`.
  """
  one = functools.partial(_example_jacobian, per_token_loss, params, inputs, targets, inputs_axes)
  ell_BxT, jac = jax.vmap(one)(jnp.arange(targets.shape[0]))
  flat = lambda a: a.reshape((-1,) + a.shape[2:])
  return flat(ell_BxT), jax.tree.map(flat, jac)


def _min_norm_direction(g, f):
  """`−f g / ‖g‖²` (zero when `‖g‖² ≤ tiny`)."""
  sq = optax.tree.norm(g, squared=True)
  scale = jnp.where(sq > jnp.finfo(sq.dtype).tiny, f / jnp.where(sq > 0, sq, 1), 0)
  return optax.tree.scale(-scale, g)


def _matrix_pinv_direction(g, f, rcond):
  """Per leaf `−f (G⁺)ᵀ`, `G` the leaf as a `[prod(shape[:-1]), shape[-1]]` matrix."""
  def leaf(a):
    matrix = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    finite = jnp.all(jnp.isfinite(matrix))  # LAPACK's SVD must never see inf/NaN
    pinv_t = jnp.linalg.pinv(jnp.where(finite, matrix, 0), rtol=rcond).T
    return (-f * jnp.where(finite, pinv_t, jnp.nan)).reshape(a.shape)
  return jax.tree.map(leaf, g)


def _direction_fn(form: str, rcond):
  if form not in FORMS:
    raise ValueError(f"form={form!r} is not accepted; use one of {', '.join(FORMS)}")
  if form == "matrix_pinv":
    return lambda g, f: _matrix_pinv_direction(g, f, rcond)
  return _min_norm_direction


def _control(step, params, merit0, merit_fn, max_step_norm, backtrack_steps):
  """Caps `‖step‖`, backtracks on `merit_fn`; returns `(step, α, rejected)`."""
  if max_step_norm > 0:
    norm = optax.tree.norm(step)
    step = optax.tree.scale(jnp.minimum(1, max_step_norm / jnp.where(norm > 0, norm, 1)), step)
  one = jnp.ones([], merit0.dtype)
  if backtrack_steps <= 0:
    return step, one, jnp.zeros([], jnp.int32)
  merit_at = lambda j: merit_fn(optax.tree.add_scale(params, 0.5**j, step))

  def cond(carry):
    j, merit = carry
    return (j < backtrack_steps) & ~(merit < merit0)

  j, merit = jax.lax.while_loop(cond, lambda c: (c[0] + 1, merit_at(c[0] + 1)),
                                (jnp.zeros([], jnp.int32), merit_at(0)))
  accepted = merit < merit0
  alpha = jnp.where(accepted, 0.5**j, 0).astype(merit0.dtype)
  return optax.tree.scale(alpha, step), alpha, (~accepted).astype(jnp.int32)


def _transform(step_fn: Callable, merit_fn: Callable, max_step_norm: float,
               backtrack_steps: int) -> optax.GradientTransformationExtraArgs:
  """Wraps `step_fn(params, inputs, targets) -> (Δ, merit0, ‖g‖, (cg_iterations, cg_residual))`
  with the step control, the non-finite guard and the state."""

  def update_fn(updates, state, params=None, *, inputs=None, targets=None, **extra):
    del updates, extra
    step, merit0, grad_norm, (cg_iterations, cg_residual) = step_fn(params, inputs, targets)
    merit = lambda p: merit_fn(p, inputs, targets)
    step, alpha, rejected = _control(step, params, merit0, merit, max_step_norm, backtrack_steps)
    finite = jnp.isfinite(merit0) & jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(step)]))
    step = jax.tree.map(lambda a: jnp.where(finite, a, jnp.zeros_like(a)), step)
    dtype = state.residual.dtype
    new_state = NewtonRootState(
        count=state.count + 1,
        residual=merit0.astype(dtype),
        grad_norm=grad_norm.astype(dtype),
        step_norm=optax.tree.norm(step).astype(dtype),
        step_size=jnp.where(finite, alpha, 0).astype(dtype),
        cg_iterations=jnp.asarray(cg_iterations, jnp.int32),
        cg_residual=jnp.asarray(cg_residual, dtype),
        nonfinite=state.nonfinite + (~finite).astype(jnp.int32),
        rejected=state.rejected + rejected)
    return step, new_state

  return optax.GradientTransformationExtraArgs(_init_state, update_fn)


def _residual_norm(per_token_loss, loss_constant):
  return lambda p, x, y: jnp.linalg.norm((per_token_loss(p, x, y) - loss_constant).reshape(-1))


def newton_root(per_token_loss: Callable, loss_constant: float = 0.0, *, form: str = "min_norm",
                rcond: float | None = None, max_step_norm: float = 0.0, backtrack_steps: int = 0,
                inputs_axes=0) -> optax.GradientTransformationExtraArgs:
  """Scalar Newton–Raphson on `f = mean(ℓ) − c`: `Δ = −f g/‖g‖²` (see the module docstring)."""
  del inputs_axes  # the whole-batch loss needs no per-example split
  direction = _direction_fn(form, rcond)
  mean_loss = lambda p, x, y: jnp.mean(per_token_loss(p, x, y))

  def step_fn(params, inputs, targets):
    value, g = jax.value_and_grad(mean_loss)(params, inputs, targets)
    f = value - loss_constant
    return direction(g, f), jnp.abs(f), optax.tree.norm(g), (0, 0.0)

  merit = lambda p, x, y: jnp.abs(mean_loss(p, x, y) - loss_constant)
  return _transform(step_fn, merit, max_step_norm, backtrack_steps)


def newton_root_components(per_token_loss: Callable, loss_constant: float = 0.0, *,
                           form: str = "min_norm", rcond: float | None = None,
                           max_step_norm: float = 0.0, backtrack_steps: int = 0,
                           inputs_axes=0, example_chunk: int = 8
                           ) -> optax.GradientTransformationExtraArgs:
  """`Δ = −Σᵢ (ℓᵢ − c) gᵢ/‖gᵢ‖²`, all `gᵢ` at the same point, in one jit (vmap + jacrev).

  Examples are processed `example_chunk` at a time, so a full batch of `N` tokens needs
  `example_chunk · T · P` memory for the per-token gradients instead of `N · P`.
  """
  direction = _direction_fn(form, rcond)

  total = lambda tree: jax.tree.map(lambda a: jnp.sum(a, axis=0), tree)

  def example_step(params, inputs, targets, b):
    ell_T, jac = _example_jacobian(per_token_loss, params, inputs, targets, inputs_axes, b)
    return ell_T, total(jax.vmap(direction)(jac, ell_T - loss_constant)), total(jac)

  def step_fn(params, inputs, targets):
    # Examples in chunks of `example_chunk` (lax.map): memory chunk·T·P, not N·P.
    one = functools.partial(example_step, params, inputs, targets)
    ell_BxT, steps, grads = jax.lax.map(one, jnp.arange(targets.shape[0]),
                                        batch_size=example_chunk)
    r_N = ell_BxT.reshape(-1) - loss_constant
    grad = jax.tree.map(lambda a: a / r_N.shape[0], total(grads))
    return total(steps), jnp.linalg.norm(r_N), optax.tree.norm(grad), (0, 0.0)

  return _transform(step_fn, _residual_norm(per_token_loss, loss_constant), max_step_norm,
                    backtrack_steps)


def newton_root_recalculated(per_token_loss: Callable, loss_constant: float = 0.0, *,
                             form: str = "min_norm", rcond: float | None = None,
                             max_step_norm: float = 0.0, backtrack_steps: int = 0,
                             inputs_axes=0) -> optax.GradientTransformationExtraArgs:
  """Per-component steps one after another (`lax.scan` over the `N` tokens, row-major)."""
  direction = _direction_fn(form, rcond)

  def step_fn(params, inputs, targets):
    num_b, num_t = targets.shape[:2]
    mean_and_losses = lambda p: (jnp.mean(ell := per_token_loss(p, inputs, targets)), ell)
    (_, ell), grad = jax.value_and_grad(mean_and_losses, has_aux=True)(params)

    def body(total, i):
      b, t = i // num_t, i % num_t
      x_b, y_b = _example(inputs, inputs_axes, b), _example(targets, 0, b)
      token_loss = lambda p: per_token_loss(p, x_b, y_b)[0, t]
      value, g = jax.value_and_grad(token_loss)(optax.tree.add(params, total))
      return optax.tree.add(total, direction(g, value - loss_constant)), None

    step, _ = jax.lax.scan(body, optax.tree.zeros_like(params), jnp.arange(num_b * num_t))
    residual = jnp.linalg.norm((ell - loss_constant).reshape(-1))
    return step, residual, optax.tree.norm(grad), (0, 0.0)

  return _transform(step_fn, _residual_norm(per_token_loss, loss_constant), max_step_norm,
                    backtrack_steps)


def newton_system(per_token_loss: Callable, loss_constant: float = 0.0, *, damping: float = 0.0,
                  cg_iters: int = 50, cg_tol: float = 1e-6, dense_max_size: int = 0,
                  max_step_norm: float = 0.0, backtrack_steps: int = 0,
                  inputs_axes=0) -> optax.GradientTransformationExtraArgs:
  """`Δ = −Jᵀu`, `(JJᵀ + λI) u = r`, `r = ℓ − c` (`−J⁺r` at `λ = 0`).

  Matrix-free: CG (`lmopt.optim.cg.steihaug_cg`, at most `cg_iters` products, relative
  `cg_tol`) on `u ↦ J(Jᵀu) + λu` from one `jax.linearize` and its transpose. When `N·P ≤ dense_max_size`
  `J` is built (per-example jacrev) and solved exactly: `lstsq` (minimal norm) at `λ = 0`,
  else `solve(JJᵀ + λI, r)`.
  """

  def dense_step(params, inputs, targets):
    ell_N, jac = _token_jacobian(per_token_loss, params, inputs, targets, inputs_axes)
    jac_NxP = jax.vmap(lambda row: ravel_pytree(row)[0])(jac)
    r_N = ell_N - loss_constant
    if damping > 0:
      gram = jac_NxP @ jac_NxP.T + damping * jnp.eye(r_N.shape[0], dtype=r_N.dtype)
      delta_P = -jac_NxP.T @ jnp.linalg.solve(gram, r_N)
    else:
      delta_P = -jnp.linalg.lstsq(jac_NxP, r_N)[0]
    step = ravel_pytree(params)[1](delta_P)
    return step, jnp.linalg.norm(r_N), jnp.linalg.norm(jnp.mean(jac_NxP, axis=0)), (0, 0.0)

  def cg_step(params, inputs, targets):
    ell, jvp_fn = jax.linearize(lambda p: per_token_loss(p, inputs, targets), params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    r = ell - loss_constant
    jtu = lambda u: vjp_fn(u)[0]
    matvec = lambda u: jvp_fn(jtu(u)) + damping * u
    solve = steihaug_cg(matvec, r, max_iters=cg_iters, tol=cg_tol)
    u = solve.x
    r_norm = jnp.linalg.norm(r.reshape(-1))
    solve_residual = jnp.linalg.norm((matvec(u) - r).reshape(-1)) / jnp.where(r_norm > 0, r_norm, 1)
    grad = jtu(jnp.full_like(r, 1.0 / r.size))
    return (optax.tree.scale(-1, jtu(u)), r_norm, optax.tree.norm(grad),
            (solve.iterations, solve_residual))

  def step_fn(params, inputs, targets):
    num_p = sum(a.size for a in jax.tree.leaves(params))
    if targets.size * num_p <= dense_max_size:
      return dense_step(params, inputs, targets)
    return cg_step(params, inputs, targets)

  return _transform(step_fn, _residual_norm(per_token_loss, loss_constant), max_step_norm,
                    backtrack_steps)


def _from_config(factory: Callable, config: OptimizerConfig, workload, **kwargs):
  """Builds `factory` from the config, on `config.params` (via `subset.on_subset`)."""
  def build(per_token_loss, inputs_axes=0):
    return factory(per_token_loss, config.loss_constant, max_step_norm=config.max_step_norm,
                   backtrack_steps=config.backtrack_steps, inputs_axes=inputs_axes, **kwargs)
  if config.params == "all":
    return build(workload.per_token_loss)
  keys = tuple(config.params.split(","))
  return subset.on_subset(lambda per_token_loss: build(per_token_loss, inputs_axes=(None, 0)),
                          keys, per_token_loss=workload.per_token_loss)


def _form_kwargs(config: OptimizerConfig) -> dict:
  require_choice("newton_form", config.newton_form, FORMS)
  return {"form": config.newton_form}


def newton_root_from_config(config: OptimizerConfig, workload):
  return _from_config(newton_root, config, workload, **_form_kwargs(config))


def newton_root_components_from_config(config: OptimizerConfig, workload):
  return _from_config(newton_root_components, config, workload, **_form_kwargs(config))


def newton_root_recalculated_from_config(config: OptimizerConfig, workload):
  return _from_config(newton_root_recalculated, config, workload, **_form_kwargs(config))


def newton_system_from_config(config: OptimizerConfig, workload):
  return _from_config(newton_system, config, workload, damping=config.damping,
                      cg_iters=config.cg_iters, cg_tol=config.cg_tol)
