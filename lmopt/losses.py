"""Per-token next-token losses, their mean, and the MSE residual form.

Logits at position t score token t+1: with tokens `[B, L]`, models see all L
tokens, logits are sliced to positions `0..L-2` (`[B, L-1, V]`) and targets are
tokens `1..L-1` (`[B, L-1]`). Targets enter only through gathers and scatters;
no `[tokens, vocab]` one-hot is ever built.

* `mse`: `mean_v (logits_v - s * onehot(y)_v)^2` per token, `s = onehot_scale`.
  An all-zero output scores `s^2 / V` (244.14 for s=1000, V=4096).
* `ce`: softmax cross-entropy, `logsumexp(logits) - logits[y]`.

The same losses without `[tokens, vocab]` logits, from lm_head features and kernel
(`per_token_head_loss`, `mean_head_loss`): the factored MSE (`losses_factored`) and
the vocabulary-chunked cross-entropy (`losses_chunked`).
"""

import jax
import jax.numpy as jnp

from lmopt import losses_chunked, losses_factored


def next_token_split(tokens_BxL):
  """Returns `(inputs [B, L], targets [B, L-1])` for next-token prediction."""
  return tokens_BxL, tokens_BxL[:, 1:]


def _take_target(logits_NxV, targets_N):
  return jnp.take_along_axis(logits_NxV, targets_N[..., None], axis=-1)[..., 0]


def mse_per_token(logits_NxV, targets_N, onehot_scale: float):
  """`mean_v (z_v - s*onehot(y)_v)^2` per row, without a one-hot.

  Computed as `(sum_v z_v^2 - z_y^2 + (z_y - s)^2) / V`, which has no cancellation
  between `s^2` and the logits. Shapes: `[..., V]`, `[...]` -> `[...]`.
  """
  z_y = _take_target(logits_NxV, targets_N)
  total = jnp.sum(jnp.square(logits_NxV), axis=-1) - jnp.square(z_y) + jnp.square(z_y - onehot_scale)
  return total / logits_NxV.shape[-1]


def ce_per_token(logits_NxV, targets_N):
  """Softmax cross-entropy per row. Shapes: `[..., V]`, `[...]` -> `[...]`."""
  return jax.nn.logsumexp(logits_NxV, axis=-1) - _take_target(logits_NxV, targets_N)


def per_token_output_loss(name: str, logits_NxV, targets_N, onehot_scale: float):
  """Dispatches on the loss name (`mse` or `ce`)."""
  if name == "mse":
    return mse_per_token(logits_NxV, targets_N, onehot_scale)
  if name == "ce":
    return ce_per_token(logits_NxV, targets_N)
  raise ValueError(f"unknown loss {name!r}; use mse or ce")


def mse_residuals(logits_NxV, targets_N, onehot_scale: float):
  """`r = z - s*onehot(y)` (same shape as the logits) by a scatter-add.

  `mse = sum(r^2) / r.size`: the least-squares form used by Gauss-Newton.
  """
  flat_MxV = logits_NxV.reshape(-1, logits_NxV.shape[-1])
  rows = jnp.arange(flat_MxV.shape[0])
  flat_MxV = flat_MxV.at[rows, targets_N.reshape(-1)].add(-onehot_scale)
  return flat_MxV.reshape(logits_NxV.shape)


def uses_head_form(name: str, impl: str, vocab: int, ce_chunk: int, tokens: int, dim: int) -> bool:
  """Whether losses come from lm_head features and kernel instead of logits.

  `impl="factored"`: for `mse` when the batch has at least `dim` tokens (the factored
  form costs `O(N D² + D² V)` against `O(N D V)`, so it pays off from `N >= D`;
  `losses_factored`); for `ce` when the vocabulary spans more than one chunk,
  `0 < ce_chunk < vocab` (`losses_chunked`).
  """
  if impl != "factored":
    return False
  return tokens >= dim if name == "mse" else 0 < ce_chunk < vocab


def per_token_head_loss(name: str, features_NxD, kernel_DxV, targets_N, onehot_scale: float,
                        ce_chunk: int):
  """Per-token losses `[...]` from features `[..., D]` and the lm_head kernel `[D, V]`."""
  if name == "mse":
    return losses_factored.mse_per_token(features_NxD, kernel_DxV, targets_N, onehot_scale)
  if name == "ce":
    return losses_chunked.ce_per_token(features_NxD, kernel_DxV, targets_N, ce_chunk)
  raise ValueError(f"unknown loss {name!r}; use mse or ce")


def mean_head_loss(name: str, features_NxD, kernel_DxV, targets_N, onehot_scale: float,
                   ce_chunk: int):
  """Mean loss `[]` from features and kernel (the MSE from Gram statistics)."""
  if name == "mse":
    return losses_factored.mse_mean(features_NxD, kernel_DxV, targets_N, onehot_scale)
  return jnp.mean(per_token_head_loss(name, features_NxD, kernel_DxV, targets_N, onehot_scale,
                                      ce_chunk))
