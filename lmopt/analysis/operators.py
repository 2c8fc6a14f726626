"""Curvature operators of a workload as flat `[P] -> [P]` matvecs (for Lanczos).

Wraps `lmopt.optim.curvature` (Hessian by forward-over-reverse, GGN `Jᵀ H_ℓ J` by
jvp + closed-form output Hessian + vjp), linearised once at `params` on one batch, on
all parameters or a top-level subset (the other parameters frozen at their values, as
in `lmopt.optim.subset`). Vectors are in `jax.flatten_util.ravel_pytree` order of the
active parameters and in their dtype.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

from jax.flatten_util import ravel_pytree

from lmopt.optim import curvature, subset

KINDS = ("hessian", "ggn")


class FlatOperator(NamedTuple):
  """`matvec` on `[size]` vectors; `unravel` maps them back to the active parameters."""

  matvec: Callable
  size: int
  dtype: object
  unravel: Callable


def flatten(matvec: Callable, like) -> FlatOperator:
  """A pytree matvec `v -> A v` (pytrees like `like`) as a flat `[P] -> [P]` operator."""
  flat, unravel = ravel_pytree(like)
  return FlatOperator(lambda x: ravel_pytree(matvec(unravel(x)))[0], flat.size, flat.dtype,
                      unravel)


def model_operator(workload, params: dict, inputs, targets, kind: str = "ggn",
                   keys: Sequence[str] | None = None) -> FlatOperator:
  """`kind` (`hessian` or `ggn`) of `workload.loss` at `params` on one batch.

  Args:
    inputs: tokens `[B, L]`; targets: `[B, L-1]`.
    keys: top-level parameter names to act on (`None`: all).
  """
  if kind not in KINDS:
    raise ValueError(f"curvature {kind!r} is not accepted; use one of {', '.join(KINDS)}")
  keys = tuple(params) if keys is None else tuple(keys)
  subset.check_keys(params, keys)
  active, frozen = subset.split(params, keys)
  packed = (frozen, inputs)
  if kind == "hessian":
    op = curvature.hessian_operator(subset.bind_frozen(workload.loss), active, packed, targets)
  else:
    output_hvp = curvature.output_hessian_vp(workload.loss_config.name)
    op = curvature.ggn_operator(subset.bind_frozen(workload.logits_fn), workload.output_loss,
                                output_hvp, active, packed, targets)
  return flatten(op.matvec, active)
