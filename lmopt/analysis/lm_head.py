"""The exact curvature of the lm_head MSE problem, and exact GD step counts on it.

With the other parameters fixed, the MSE against `Y = s · onehot(y)` is linear least
squares in `W = lm_head/kernel` `[D, V]`: `f(W) = ‖XW − Y‖²_F / (N V)` over the `N`
feature rows `X` `[N, D]`. Its Hessian is `H_D ⊗ I_V` with the Kronecker factor
`H_D = (2 / (N V)) XᵀX` `[D, D]`, so the whole spectrum (each eigenvalue `V` times) and
the condition number come from one dense `D × D` eigendecomposition of the Gram
statistics (`lmopt.lstsq`). Writing `E = W − W*` (`W*` the minimum-norm solution),
`f(W) = f* + ½ tr(Eᵀ H_D E)` (`excess_loss`, free of the cancellation in `f − f*`).

Numerics: use float64 statistics (inside `jax.enable_x64(True)`), eigenvalues at or
below `lstsq.solvers.eigen_cutoff` (`max(rcond², D eps) λ_max`) count as zero: they
set the rank, and the smallest eigenvalue above them sets `κ`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmopt.lstsq import solvers
from lmopt.lstsq import stats as stats_lib

HIGHEST = jax.lax.Precision.HIGHEST


def head_stats(workload, params, windows_NxL: np.ndarray, chunk: int = 256,
               dtype=jnp.float64) -> stats_lib.GramStats:
  """Gram statistics of lm_head features and next-token targets over all `windows`.

  Streams `chunk` windows at a time (the last chunk zero-padded and masked, one
  compilation); features in the model dtype, statistics accumulated in `dtype`.
  """
  cfg = workload.model_config
  onehot_scale = workload.loss_config.onehot_scale

  @jax.jit
  def add(stats, tokens_BxL, mask_B):
    x_BxLxD = workload.features_fn(params, tokens_BxL)
    mask_N = jnp.repeat(mask_B, x_BxLxD.shape[1])
    return stats_lib.accumulate(stats, x_BxLxD.reshape(-1, cfg.dim).astype(dtype),
                                tokens_BxL[:, 1:].reshape(-1), onehot_scale, mask_N)

  stats = stats_lib.zeros(cfg.dim, cfg.vocab_size, dtype)
  chunk = min(chunk, len(windows_NxL))
  for start in range(0, len(windows_NxL), chunk):
    part = windows_NxL[start:start + chunk]
    pad = chunk - len(part)
    tokens = np.pad(part, ((0, pad), (0, 0)))
    mask = np.concatenate([np.ones(len(part)), np.zeros(pad)]).astype(np.dtype(dtype))
    stats = add(stats, tokens, mask)
  return stats


class HeadProblem(NamedTuple):
  """`hessian` `H_D` `[D, D]`, its ascending `eigenvalues` `[D]` and `vectors` `[D, D]`,
  the minimum-norm `solution` `W*` `[D, V]`, the `optimum` `f*` and the zero `cutoff`."""

  hessian: jax.Array
  eigenvalues: jax.Array
  vectors: jax.Array
  solution: jax.Array
  optimum: jax.Array
  cutoff: jax.Array


def head_problem(stats: stats_lib.GramStats, rcond: float | None = None) -> HeadProblem:
  """The problem's curvature and optimum from its statistics (in their dtype)."""
  eig = solvers.gram_eigen(stats)
  scale = 2.0 / (stats.count * stats.vocab)
  solution = solvers.eigen_solve(eig, 0.0, rcond)
  return HeadProblem(scale * stats.xtx, scale * eig.values, eig.vectors, solution,
                     stats_lib.loss_from_stats(stats, solution),
                     scale * solvers.eigen_cutoff(eig, rcond))


class Conditioning(NamedTuple):
  """Largest and smallest nonzero Hessian eigenvalue, `kappa = lmax / lmin`, the rank."""

  lmax: float
  lmin: float
  kappa: float
  rank: int


def conditioning(problem: HeadProblem) -> Conditioning:
  values = np.asarray(problem.eigenvalues, np.float64)
  kept = values[values > float(problem.cutoff)]
  return Conditioning(float(kept[-1]), float(kept[0]), float(kept[-1] / kept[0]), len(kept))


def excess_loss(w_DxV, hessian_DxD, solution_DxV):
  """`f(W) − f* = ½ tr(Eᵀ H_D E)`, `E = W − W*` (a `loss_fn(params, inputs, targets)`)."""
  e_DxV = w_DxV - solution_DxV
  return 0.5 * jnp.sum(e_DxV * jnp.matmul(hessian_DxD, e_DxV, precision=HIGHEST))


def newton(problem: HeadProblem) -> optax.GradientTransformation:
  """Exact Newton: `d = −H_D⁺ g` (pseudo-inverse over eigenvalues above the cutoff)."""
  keep = problem.eigenvalues > problem.cutoff
  inverse = jnp.where(keep, 1.0 / jnp.where(keep, problem.eigenvalues, 1.0), 0.0)
  q = problem.vectors

  def update(grad_DxV, state, params=None):
    del params
    coef = inverse[:, None] * jnp.matmul(q.T, grad_DxV, precision=HIGHEST)
    return -jnp.matmul(q, coef, precision=HIGHEST), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _spectral_parts(problem: HeadProblem, w0_DxV):
  """Host float64 `(λ [D] with zeros below the cutoff, ‖rows of Qᵀ E_0‖² [D])`."""
  values = np.asarray(problem.eigenvalues, np.float64)
  values = np.where(values > float(problem.cutoff), values, 0.0)
  e0 = np.asarray(problem.vectors, np.float64).T @ np.asarray(w0_DxV - problem.solution,
                                                              np.float64)
  return values, np.sum(e0**2, axis=1)


def gd_excess(problem: HeadProblem, w0_DxV, step: float, ks) -> np.ndarray:
  """Excess loss after `k` GD steps of size `step` from `W_0`, in exact arithmetic.

  In the eigenbasis `E_k = (I − η H_D)^k E_0`, so `f_k − f* = ½ Σ_i λ_i (1 − η λ_i)^{2k} c_i`
  with `c_i = ‖(Qᵀ E_0)_i‖²`. `ks`: `[K]` step counts.
  """
  values, energy = _spectral_parts(problem, w0_DxV)
  log_factor = 2.0 * np.log(np.maximum(np.abs(1.0 - step * values), 1e-300))
  ks = np.asarray(ks, np.float64)[:, None]
  return 0.5 * np.sum(values * energy * np.exp(ks * log_factor), axis=1)


def gd_steps_exact(problem: HeadProblem, w0_DxV, step: float, eps: float,
                   max_steps: int = 10**12):
  """Fewest GD steps to `f_k − f* <= eps (f_0 − f*)` from the spectrum (None if > max_steps).

  The excess never increases when `η <= 2 / λ_max`, so a bisection finds it.
  """
  target = eps * gd_excess(problem, w0_DxV, step, [0])[0]
  if gd_excess(problem, w0_DxV, step, [max_steps])[0] > target:
    return None
  low, high = -1, max_steps  # excess(low) > target >= excess(high)
  while high - low > 1:
    mid = (low + high) // 2
    low, high = (mid, high) if gd_excess(problem, w0_DxV, step, [mid])[0] > target else (low, mid)
  return high
