"""Keeps the causal token-mixing weights above the diagonal exactly zero.

The forward pass masks them, so their gradient is zero; but transforms that mix
entries of a matrix update (Muon's orthogonalisation, a dense preconditioner) can
still produce non-zero values there. Every registered optimizer ends with this.
"""

import jax
import optax

from lmopt.models import CAUSAL_KERNEL, causal_mask


def _is_causal_kernel(path) -> bool:
  return getattr(path[-1], "key", None) == CAUSAL_KERNEL


def mask_causal_updates() -> optax.GradientTransformation:
  """Multiplies the updates of every `causal_kernel` `[L, L]` by its lower-triangular mask."""

  def update_fn(updates, state, params=None):
    del params

    def mask(path, u):
      return u * causal_mask(u.shape[0], u.dtype) if _is_causal_kernel(path) else u

    return jax.tree_util.tree_map_with_path(mask, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
