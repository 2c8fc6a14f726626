"""The MSE against scaled one-hots from lm_head features and kernel, without logits.

With features `H` `[N, D]` (lm_head inputs), kernel `W` `[D, V]`, targets `y` `[N]`
and `z = H W` (never formed), the per-token MSE of `losses.mse_per_token` is

  `ℓᵢ = (‖Hᵢ W‖² − zᵢ² + (zᵢ − s)²) / V`,  `‖Hᵢ W‖² = Hᵢ (W Wᵀ) Hᵢᵀ`,  `zᵢ = Hᵢ · W[:, yᵢ]`,

and their mean is `(tr(Wᵀ (HᵀH) W) − 2 tr(Wᵀ HᵀY) + s² N) / (N V)`, i.e.
`lstsq.stats.loss_from_stats` of the batch's Gram statistics (shared with the
least-squares solvers). Cost `O(N D² + D² V + N D)` instead of `O(N D V)`; the largest
arrays are `[N, D]`, `[D, V]` and `[D, D]` (gradients included: the target terms are a
gather and its transpose, a scatter-add). Everything is plain `jnp`, so `jax.grad`,
`jax.jvp` (Hessian-vector products) and `jax.hessian` apply.

Numerics: computed in the features' dtype with `Precision.HIGHEST` products. The terms
that cancel are of size `s²/V` per token, so the absolute error scales with `s²/V`,
not with the loss. Observed in float32 (2048 tokens, dim 96, vocab 64, at the
least-squares optimum of nearly separable features, loss down to `6e-3 s²/V`): per-token
errors up to `7.5e-7 s²/V` (relative `1.3e-4`), mean error up to `2.2e-7 s²/V` (relative
`3.6e-5`); at losses near `s²/V` (training) relative errors stay below `4e-7`.
`tests/test_losses_factored.py` bounds the error by `2⁻¹⁸ (s² + ‖HᵢW‖²)/V` per token
and `2⁻²⁰ (s² + mean ‖HᵢW‖²)/V` for the mean. Use a float64 model (the same case holds to
1e-9 relative) where smaller losses must be resolved.
"""

import jax
import jax.numpy as jnp

from lmopt.lstsq import stats

HIGHEST = jax.lax.Precision.HIGHEST


def _flatten(h_NxD, y_N):
  return h_NxD.reshape(-1, h_NxD.shape[-1]), y_N.reshape(-1)


def target_logits(h_NxD, w_DxV, y_N):
  """`zᵢ = (H W)[i, yᵢ] = Hᵢ · W[:, yᵢ]` by a gather of kernel columns. `[..., D] -> [...]`."""
  return jnp.sum(h_NxD * jnp.take(w_DxV.T, y_N, axis=0), axis=-1)


def mse_per_token(h_NxD, w_DxV, y_N, onehot_scale: float):
  """Per-token MSE `[...]` from features `[..., D]`, kernel `[D, V]` and targets `[...]`.

  `(Hᵢ M Hᵢᵀ − zᵢ² + (zᵢ − s)²) / V` with `M = W Wᵀ` `[D, D]`: the `(zᵢ − s)²` term is
  exact, as in the direct form; only `Hᵢ M Hᵢᵀ − zᵢ²` (the off-target energy) cancels.
  """
  m_DxD = jnp.matmul(w_DxV, w_DxV.T, precision=HIGHEST)
  norms = jnp.sum(h_NxD * jnp.matmul(h_NxD, m_DxD, precision=HIGHEST), axis=-1)
  z = target_logits(h_NxD, w_DxV, y_N)
  return (norms - jnp.square(z) + jnp.square(z - onehot_scale)) / w_DxV.shape[1]


def mse_mean(h_NxD, w_DxV, y_N, onehot_scale: float):
  """Mean per-token MSE `[]` from the batch's Gram statistics (`stats.loss_from_stats`).

  Equals `mean(mse_per_token(...))` to rounding; summing the Gram matrix first keeps the
  cancellation to one subtraction of three totals (smaller error than summing tokens).
  """
  h_NxD, y_N = _flatten(h_NxD, y_N)
  gram = stats.batch_stats(h_NxD, y_N, w_DxV.shape[1], onehot_scale)
  return stats.loss_from_stats(gram, w_DxV)
