"""Curvature products: Hessian- and Gauss–Newton-vector products, dense Hessian, diagonals.

All functions are pure and jit-able; vectors `v` are pytrees shaped like `params`.

* Hessian `H = ∇²L(θ)`: forward-over-reverse, `Hv = jvp(grad L)(θ; v)`.
* Generalised Gauss–Newton `G = Jᵀ H_ℓ J` with `J = ∂z/∂θ` the Jacobian of the
  logits `z = logits_fn(θ, inputs)` `[B, L-1, V]` and `H_ℓ = ∇²_z mean(ℓ(z, y))` the
  Hessian of the mean per-token loss w.r.t. the logits, applied in closed form
  (`output_hessian_vp`). `Gv = vjp(H_ℓ jvp(v))`; `G` is PSD since `H_ℓ` is.
* Dense `H` (flattened, `[P, P]`) only below a parameter-count guard.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lmopt.config import ConfigError

MAX_DENSE_PARAMS = 4096


class Curvature(NamedTuple):
  """Loss, gradient and curvature operator at one point; `matvec(v)` reuses the linearisation."""

  loss: jax.Array
  grad: optax.Updates
  matvec: Callable[[optax.Updates], optax.Updates]


def hvp(loss_fn: Callable, params, v, *args):
  """`H v` by forward-over-reverse: `jax.jvp` of `jax.grad(loss_fn)` at `params`."""
  grad_fn = lambda p: jax.grad(loss_fn)(p, *args)
  return jax.jvp(grad_fn, (params,), (v,))[1]


def hessian_operator(loss_fn: Callable, params, *args) -> Curvature:
  """Loss, gradient and `v -> H v` (forward-over-reverse, linearised once for many products)."""
  value_and_grad = lambda p: jax.value_and_grad(loss_fn)(p, *args)
  (loss, grad), linear = jax.linearize(value_and_grad, params)
  return Curvature(loss, grad, lambda v: linear(v)[1])


def mse_output_hvp(logits, targets, u):
  """`H_ℓ u` for the MSE mean over tokens AND vocab: `H_ℓ = 2 / (N V) I` (independent of `s`)."""
  del logits, targets
  return u * (2.0 / u.size)


def ce_output_hvp(logits, targets, u):
  """`H_ℓ u` for the mean softmax cross-entropy: `(diag(p) − p pᵀ) u / N` per token."""
  del targets
  p = jax.nn.softmax(logits, axis=-1)
  pu = p * u
  num_tokens = u.size // u.shape[-1]
  return (pu - p * jnp.sum(pu, axis=-1, keepdims=True)) / num_tokens


def output_hessian_vp(loss_name: str) -> Callable:
  """The closed-form `(logits, targets, u) -> H_ℓ u` for `mse` or `ce`."""
  products = {"mse": mse_output_hvp, "ce": ce_output_hvp}
  if loss_name not in products:
    raise ValueError(f"no output Hessian for loss {loss_name!r}; use mse or ce")
  return products[loss_name]


def ggn_operator(logits_fn: Callable, output_loss: Callable, output_hvp: Callable, params,
                 inputs, targets) -> Curvature:
  """Loss, gradient and `v -> Jᵀ H_ℓ J v` from one linearisation of `logits_fn`.

  Args:
    logits_fn: `(params, inputs) -> z [..., V]`.
    output_loss: `(z, targets) -> [...]` per-token losses; the loss is their mean.
    output_hvp: `(z, targets, u) -> H_ℓ u` for that mean (see `output_hessian_vp`).
  """
  logits, jvp_fn = jax.linearize(lambda p: logits_fn(p, inputs), params)
  vjp_fn = jax.linear_transpose(jvp_fn, params)
  mean_loss = lambda z: jnp.mean(output_loss(z, targets))
  loss, dloss_dz = jax.value_and_grad(mean_loss)(logits)
  grad = vjp_fn(dloss_dz)[0]
  return Curvature(loss, grad, lambda v: vjp_fn(output_hvp(logits, targets, jvp_fn(v)))[0])


def ggn_vp(logits_fn: Callable, output_loss: Callable, output_hvp: Callable, params, v, inputs,
           targets):
  """One product `Jᵀ H_ℓ J v` (see `ggn_operator`)."""
  return ggn_operator(logits_fn, output_loss, output_hvp, params, inputs, targets).matvec(v)


def check_dense_size(num_params: int, max_params: int = MAX_DENSE_PARAMS) -> None:
  """Raises `ConfigError` when a `[P, P]` Hessian would be too large to form."""
  if num_params > max_params:
    raise ConfigError(f"a dense Hessian of {num_params} parameters exceeds the limit of "
                      f"{max_params}; use --optimizer=newton (matrix-free) or a smaller --params")


def dense_hessian(loss_fn: Callable, params, *args, max_params: int = MAX_DENSE_PARAMS):
  """`(H [P, P], g [P], loss)` of `loss_fn` in `ravel_pytree(params)` order, symmetrised."""
  flat, unravel = ravel_pytree(params)
  check_dense_size(flat.size, max_params)
  flat_loss = lambda x: loss_fn(unravel(x), *args)
  loss, grad = jax.value_and_grad(flat_loss)(flat)
  hess = jax.hessian(flat_loss)(flat)
  return 0.5 * (hess + hess.T), grad, loss


def hutchinson_diagonal(matvec: Callable, like, key, samples: int = 1):
  """Unbiased `diag(A)` estimate `mean_i z_i ⊙ A z_i`, `z_i` Rademacher pytrees like `like`."""
  leaves, treedef = jax.tree.flatten(like)

  def one(sample_key):
    keys = jax.random.split(sample_key, len(leaves))
    z = treedef.unflatten([jax.random.rademacher(k, x.shape, x.dtype)
                           for k, x in zip(keys, leaves)])
    return jax.tree.map(jnp.multiply, z, matvec(z))

  estimates = jax.vmap(one)(jax.random.split(key, samples))
  return jax.tree.map(lambda e: jnp.mean(e, axis=0), estimates)
