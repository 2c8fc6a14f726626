"""Exact least-squares solves `W = argmin ‖XW − Y‖²_F (+ λ‖W‖²)` with `Y = s * onehot(y)`.

Two families, by what they read:

* From the data `X` `[N, D]` (memory `O(N D)`; condition number κ(X)):
  - `pinv`: thin SVD `X = U S Vᵀ`, `W = V diag(f(S)) UᵀY`, `f(σ) = σ / (σ² + λ)` for
    `σ > rcond · σ_max`, else 0. Minimum-norm; the reference method.
  - `lstsq`: thin QR `X = QR`, then `jnp.linalg.lstsq(R, QᵀY, rcond)` (SVD of the small
    `R`). Minimum-norm, rank-revealing.
  - `qr`: thin QR then a triangular solve `R W = QᵀY`. Needs full column rank and
    `N ≥ D`; a singular `R` gives non-finite values (callers check).
  For `λ > 0`, `lstsq` and `qr` solve the augmented problem `[X; √λ I] W ≈ [Y; 0]`.
* From Gram statistics `G = XᵀX`, `C = XᵀY` (`stats.GramStats`, memory `O(D² + DV)`,
  streamable; condition number κ(X)², so float32 loses digits twice as fast):
  - `cholesky`: `(G + λI) W = C` by Cholesky; λ = 0 is allowed for well-conditioned G,
    a singular G gives NaN.
  - `eigh`: `G = QΛQᵀ`, `W = Q diag(1 / (Λ + λ)) QᵀC` over eigenvalues above
    `max(rcond², D · eps) · Λ_max` (float rounding of G leaves eigenvalues below
    `eps · Λ_max` meaningless, so the floor is always applied). Minimum-norm.
  - `normal_inverse`: the textbook `(XᵀX + λI)⁻¹ XᵀY` with an explicit inverse. Kept on
    purpose: in float32 it fails once κ(X)² approaches 1/eps ≈ 1.7e7.

`rcond=None` means numpy's default, `eps · max(N, D)` (relative to σ_max): in float32 at
data-set scale (N ~ 1e5) that cuts at ~1e-2 and can drop real directions, so pass an
explicit `rcond` there (numpy itself computes float32 input in float64). Every
matrix product uses `Precision.HIGHEST`. All functions are pure and jit-able with
`method`, `vocab`, `onehot_scale`, `ridge` and `rcond` static.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lmopt.lstsq import stats as stats_lib

HIGHEST = jax.lax.Precision.HIGHEST
DATA_METHODS = ("pinv", "lstsq", "qr")
GRAM_METHODS = ("cholesky", "eigh", "normal_inverse")
METHODS = DATA_METHODS + GRAM_METHODS


def _default_rcond(rcond: float | None, rows: int, cols: int, dtype) -> float:
  return float(jnp.finfo(dtype).eps) * max(rows, cols) if rcond is None else rcond


def _augment(x_NxD, ridge: float):
  """`[X; √λ I]` `[N + D, D]` (the targets of the extra rows are zero)."""
  if ridge == 0.0:
    return x_NxD
  eye = jnp.sqrt(jnp.asarray(ridge, x_NxD.dtype)) * jnp.eye(x_NxD.shape[1], dtype=x_NxD.dtype)
  return jnp.concatenate([x_NxD, eye], axis=0)


def _project_targets(basis_MxK, y_N, vocab, onehot_scale):
  """`Bᵀ [Y; 0]` for a basis whose first N rows correspond to the data rows."""
  return stats_lib.onehot_project(basis_MxK[:y_N.shape[0]], y_N, vocab, onehot_scale)


def _pinv(x_NxD, y_N, vocab, onehot_scale, ridge, rcond):
  u_NxK, s_K, vt_KxD = jnp.linalg.svd(x_NxD, full_matrices=False)
  cutoff = _default_rcond(rcond, *x_NxD.shape, x_NxD.dtype) * jnp.max(s_K)
  keep = s_K > cutoff
  filt_K = jnp.where(keep, s_K / jnp.where(keep, s_K**2 + ridge, 1.0), 0.0)
  uty_KxV = stats_lib.onehot_project(u_NxK, y_N, vocab, onehot_scale)
  return jnp.matmul(vt_KxD.T, filt_K[:, None] * uty_KxV, precision=HIGHEST)


def _lstsq(x_NxD, y_N, vocab, onehot_scale, ridge, rcond):
  q_MxK, r_KxD = jnp.linalg.qr(_augment(x_NxD, ridge), mode="reduced")
  qty_KxV = _project_targets(q_MxK, y_N, vocab, onehot_scale)
  rcond = _default_rcond(rcond, *x_NxD.shape, x_NxD.dtype)
  return jnp.linalg.lstsq(r_KxD, qty_KxV, rcond=rcond)[0]


def _qr(x_NxD, y_N, vocab, onehot_scale, ridge, rcond):
  del rcond
  x_MxD = _augment(x_NxD, ridge)
  if x_MxD.shape[0] < x_MxD.shape[1]:
    raise ValueError(f"method 'qr' needs at least as many rows as features, got {x_MxD.shape}; "
                     "use pinv or lstsq")
  q_MxD, r_DxD = jnp.linalg.qr(x_MxD, mode="reduced")
  qty_DxV = _project_targets(q_MxD, y_N, vocab, onehot_scale)
  return jax.scipy.linalg.solve_triangular(r_DxD, qty_DxV, lower=False)


_DATA_SOLVERS = {"pinv": _pinv, "lstsq": _lstsq, "qr": _qr}


def solve_data(method: str, x_NxD, y_N, vocab: int, onehot_scale: float, *, ridge: float = 0.0,
               rcond: float | None = None):
  """`W` `[D, V]` from the features `x_NxD` and target ids `y_N` by a data method."""
  if method not in _DATA_SOLVERS:
    raise ValueError(f"data method {method!r} is not accepted; use one of {DATA_METHODS}")
  return _DATA_SOLVERS[method](x_NxD, y_N, vocab, onehot_scale, ridge, rcond)


class GramEigen(NamedTuple):
  """`G = Q diag(values) Qᵀ` and the projected targets `QᵀC` `[D, V]`."""

  values: jax.Array
  vectors: jax.Array
  projected: jax.Array


def gram_eigen(stats: stats_lib.GramStats) -> GramEigen:
  """One symmetric eigendecomposition of `XᵀX`, reusable for any ridge."""
  values_D, q_DxD = jnp.linalg.eigh(stats.xtx, symmetrize_input=True)
  return GramEigen(values_D, q_DxD, jnp.matmul(q_DxD.T, stats.xty, precision=HIGHEST))


def eigen_cutoff(eig: GramEigen, rcond: float | None = None):
  """Eigenvalues at or below this count as zero: `max(rcond², D · eps) · Λ_max`."""
  dim = eig.values.shape[0]
  floor = float(jnp.finfo(eig.values.dtype).eps) * dim
  rel = floor if rcond is None else max(rcond**2, floor)
  return rel * jnp.max(eig.values)


def eigen_coefficients(eig: GramEigen, ridge, rcond: float | None = None):
  """`diag(1 / (Λ + λ)) QᵀC` `[D, V]`: the solution in the eigenbasis (`W = Q A`)."""
  keep = eig.values > eigen_cutoff(eig, rcond)
  inv_D = jnp.where(keep, 1.0 / jnp.where(keep, eig.values + ridge, 1.0), 0.0)
  return inv_D[:, None] * eig.projected


def eigen_solve(eig: GramEigen, ridge, rcond: float | None = None):
  """`W = Q diag(1 / (Λ + λ)) QᵀC` `[D, V]` (ridge may be traced)."""
  return jnp.matmul(eig.vectors, eigen_coefficients(eig, ridge, rcond), precision=HIGHEST)


def _cholesky(stats, ridge, rcond):
  del rcond
  a_DxD = stats.xtx + ridge * jnp.eye(stats.dim, dtype=stats.xtx.dtype)
  factor = jax.scipy.linalg.cho_factor(a_DxD, lower=True)
  return jax.scipy.linalg.cho_solve(factor, stats.xty)


def _normal_inverse(stats, ridge, rcond):
  del rcond
  a_DxD = stats.xtx + ridge * jnp.eye(stats.dim, dtype=stats.xtx.dtype)
  return jnp.matmul(jnp.linalg.inv(a_DxD), stats.xty, precision=HIGHEST)


def _eigh(stats, ridge, rcond):
  return eigen_solve(gram_eigen(stats), ridge, rcond)


_GRAM_SOLVERS = {"cholesky": _cholesky, "eigh": _eigh, "normal_inverse": _normal_inverse}


def solve_gram(method: str, stats: stats_lib.GramStats, *, ridge: float = 0.0,
               rcond: float | None = None):
  """`W` `[D, V]` from streamed statistics by a Gram method (in the statistics' dtype)."""
  if method not in _GRAM_SOLVERS:
    raise ValueError(f"Gram method {method!r} is not accepted; use one of {GRAM_METHODS}")
  return _GRAM_SOLVERS[method](stats, ridge, rcond)


def solve(method: str, x_NxD, y_N, vocab: int, onehot_scale: float, *, ridge: float = 0.0,
          rcond: float | None = None):
  """Any method on in-memory data; Gram methods first form the statistics (features' dtype)."""
  if method in GRAM_METHODS:
    gram = stats_lib.batch_stats(x_NxD, y_N, vocab, onehot_scale)
    return solve_gram(method, gram, ridge=ridge, rcond=rcond)
  if method in DATA_METHODS:
    return solve_data(method, x_NxD, y_N, vocab, onehot_scale, ridge=ridge, rcond=rcond)
  raise ValueError(f"solve method {method!r} is not accepted; use one of {', '.join(METHODS)}")
