"""Softmax cross-entropy from lm_head features and kernel, in vocabulary chunks.

`ℓᵢ = logsumexp_v (Hᵢ W)_v − Hᵢ · W[:, yᵢ]` for features `H` `[N, D]` and kernel `W`
`[D, V]`. The log-sum-exp runs as a `lax.scan` over blocks of `chunk` kernel columns
with a running maximum `m` and sum `σ = Σ exp(z − m)`; the target logit is a gather.
The scan body is rematerialised (`jax.checkpoint`), so the backward pass recomputes each
`[N, chunk]` block instead of storing all of them: peak memory holds `O(N · chunk)`
logits, never `[N, V]`. Same value and gradient as the direct form (same flops plus one
recomputed forward); every transform (grad, jvp, hessian) applies.

Numerics: the running maximum is a constant of the log-sum-exp (`lse = m + log σ` for
any `m`), so it is held out of differentiation (`stop_gradient`), which is exact.
A ragged last block is padded with columns whose logits are the dtype's lowest value
(`exp` underflows to 0 exactly). Products use `Precision.HIGHEST`.
"""

import jax
import jax.numpy as jnp

from lmopt.losses_factored import target_logits

HIGHEST = jax.lax.Precision.HIGHEST


def _blocks(w_DxV, chunk: int):
  """`W` as `[K, D, chunk]` blocks (zero-padded) and the `[K, chunk]` mask of real columns."""
  dim, vocab = w_DxV.shape
  num_blocks = -(-vocab // chunk)
  padded = jnp.pad(w_DxV, ((0, 0), (0, num_blocks * chunk - vocab)))
  w_KxDxC = padded.reshape(dim, num_blocks, chunk).transpose(1, 0, 2)
  valid_KxC = (jnp.arange(num_blocks * chunk) < vocab).reshape(num_blocks, chunk)
  return w_KxDxC, valid_KxC


def logsumexp(h_NxD, w_DxV, chunk: int):
  """`logsumexp(H W, axis=-1)` `[N]` over vocab blocks of `chunk` columns."""
  w_KxDxC, valid_KxC = _blocks(w_DxV, chunk)
  lowest = jnp.finfo(h_NxD.dtype).min

  @jax.checkpoint
  def step(carry, block):
    m_N, sigma_N = carry
    w_DxC, valid_C = block
    z_NxC = jnp.where(valid_C, jnp.matmul(h_NxD, w_DxC, precision=HIGHEST), lowest)
    m_new = jax.lax.stop_gradient(jnp.maximum(m_N, jnp.max(z_NxC, axis=-1)))
    sigma_N = sigma_N * jnp.exp(m_N - m_new) + jnp.sum(jnp.exp(z_NxC - m_new[:, None]), axis=-1)
    return (m_new, sigma_N), None

  n = h_NxD.shape[0]
  init = (jnp.full((n,), lowest, h_NxD.dtype), jnp.zeros((n,), h_NxD.dtype))
  (m_N, sigma_N), _ = jax.lax.scan(step, init, (w_KxDxC, valid_KxC))
  return m_N + jnp.log(sigma_N)


def ce_per_token(h_NxD, w_DxV, y_N, chunk: int):
  """Per-token cross-entropy `[...]` from features `[..., D]`, kernel `[D, V]`, targets `[...]`."""
  lse_N = logsumexp(h_NxD.reshape(-1, h_NxD.shape[-1]), w_DxV, chunk)
  return lse_N.reshape(y_N.shape) - target_logits(h_NxD, w_DxV, y_N)
