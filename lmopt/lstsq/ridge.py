"""The ridge path: solutions for many ridge values from one eigendecomposition of `XᵀX`.

With `G = QΛQᵀ` and `P = QᵀC`, the ridge solution is `W(λ) = Q A(λ)`,
`A(λ) = diag(1 / (Λ + λ)) P`. Its training loss needs no data pass:
`tr(WᵀGW) = Σ_i Λ_i ‖A_i‖²`, `tr(WᵀC) = Σ_i ⟨A_i, P_i⟩`; the validation loss comes from
the validation statistics (`stats.loss_from_stats`, `O(D² V)` per ridge). The chosen
ridge is the one with the lowest validation loss. Eigenvalues under the cutoff of
`solvers.eigen_cutoff` are dropped for every λ, so λ = 0 gives the minimum-norm solution.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lmopt.lstsq import solvers
from lmopt.lstsq import stats as stats_lib


class RidgePath(NamedTuple):
  """Per ridge value `[K]`: train/valid per-token MSE; `best` indexes the lowest valid loss."""

  ridges: jax.Array
  train_loss: jax.Array
  valid_loss: jax.Array
  best: jax.Array


def _train_loss(eig: solvers.GramEigen, train: stats_lib.GramStats, coef_DxV):
  quad = jnp.sum(eig.values[:, None] * jnp.square(coef_DxV))
  cross = jnp.sum(coef_DxV * eig.projected)
  return (quad - 2.0 * cross + train.yty) / (train.count * train.vocab)


def ridge_path(train: stats_lib.GramStats, valid: stats_lib.GramStats, ridges_K,
               rcond: float | None = None):
  """Returns `(RidgePath, W_best [D, V])`; ridges are absolute (units of `XᵀX`)."""
  eig = solvers.gram_eigen(train)
  ridges_K = jnp.asarray(ridges_K, train.xtx.dtype)

  def losses(ridge):
    coef_DxV = solvers.eigen_coefficients(eig, ridge, rcond)
    w_DxV = jnp.matmul(eig.vectors, coef_DxV, precision=stats_lib.HIGHEST)
    return _train_loss(eig, train, coef_DxV), stats_lib.loss_from_stats(valid, w_DxV)

  train_K, valid_K = jax.lax.map(losses, ridges_K)
  best = jnp.argmin(jnp.where(jnp.isfinite(valid_K), valid_K, jnp.inf))
  return (RidgePath(ridges_K, train_K, valid_K, best),
          solvers.eigen_solve(eig, ridges_K[best], rcond))


def default_ridges(train: stats_lib.GramStats, num: int = 13):
  """`num` ridges from 0 and then log-spaced over `[1e-8, 1e2] · tr(G)/D`."""
  scale = jnp.trace(train.xtx) / train.dim
  return jnp.concatenate([jnp.zeros((1,), train.xtx.dtype),
                          scale * jnp.logspace(-8.0, 2.0, num - 1, dtype=train.xtx.dtype)])
