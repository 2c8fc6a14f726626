"""Lanczos with full reorthogonalisation: extreme eigenvalues and spectral densities.

Acts on a symmetric operator `A` `[n, n]` given only as `matvec(v) = A v` on flat vectors
`[n]` (`operators.py` flattens pytree curvature products). `m = num_iters` steps build
an orthonormal basis `Q` `[m, n]` of the Krylov space `K_m(A, v0)` and the tridiagonal
`T = Q A Qᵀ` (`alpha` on the diagonal, `beta` off it); eigenvalues of `T` (Ritz values)
approximate those of `A`.

Accuracy (exact arithmetic; full reorthogonalisation keeps floating point close to it,
with no spurious copies of converged eigenvalues):

* every Ritz value `θ_i` lies in `[λ_min, λ_max]` (Cauchy interlacing), and some
  eigenvalue of `A` lies within `|β_m s_{m,i}|` of it (`Ritz.bounds`, the residual norm
  `‖A q_i − θ_i q_i‖` of the Ritz vector). Extreme, well-separated eigenvalues converge
  first, at a rate set by their gap relative to the spread of the spectrum (Kaniel–Paige);
  clustered ends (e.g. many near-zero eigenvalues) converge slowly: read the bounds.
* Stochastic Lanczos quadrature (SLQ): for a probe `v` (`‖v‖ = 1`), the nodes `θ_i` and
  weights `τ_i = s_{1,i}²` are the `m`-point Gauss quadrature of the spectral measure
  `Σ_j (u_jᵀ v)² δ(λ − λ_j)`: `vᵀ A^k v = Σ_i τ_i θ_i^k` exactly for `k ≤ 2m − 1`.
  Averaging over Rademacher probes gives an unbiased density of `A`'s eigenvalues
  (normalised to total mass 1; multiply by `n` for counts), Gaussian-smoothed for plots.

Numerics: in the dtype of `v0`; each new vector is orthogonalised twice against the whole
basis (classical Gram–Schmidt twice, `O(m n)` per step). A residual below
`m · eps · ‖A‖` (an invariant subspace, e.g. `m > rank`) is a breakdown: `β` is set to
0 and the basis continues from a fresh random vector orthogonal to it, so `T` splits
into blocks whose Ritz values are still eigenvalue estimates (and carry no SLQ weight).
Requires `num_iters <= n`.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


class Lanczos(NamedTuple):
  """`alpha` `[m]`, `beta` `[m]` (`beta[i]` couples `q_i`, `q_{i+1}`; `beta[m-1]` is the
  final residual norm), orthonormal `basis` `[m, n]`."""

  alpha: jax.Array
  beta: jax.Array
  basis: jax.Array


class Ritz(NamedTuple):
  """Ritz `values` `[m]` ascending, `weights` `[m]` (SLQ: squared first components of
  `T`'s eigenvectors, summing to 1) and residual `bounds` `[m]` (`|β_m s_{m,i}|`)."""

  values: jax.Array
  weights: jax.Array
  bounds: jax.Array


class Extremes(NamedTuple):
  """`top` `[k]` descending and `bottom` `[k]` ascending Ritz values with their bounds."""

  top: jax.Array
  top_bounds: jax.Array
  bottom: jax.Array
  bottom_bounds: jax.Array


def _normalise(v):
  norm = jnp.linalg.norm(v)
  return v / jnp.where(norm > 0, norm, 1.0), norm


def _orthogonalise(w_N, basis_MxN):
  """`w` minus its projection on the rows of `basis` (zero rows are harmless), twice."""
  for _ in range(2):
    w_N = w_N - jnp.matmul(basis_MxN.T, jnp.matmul(basis_MxN, w_N, precision=HIGHEST),
                           precision=HIGHEST)
  return w_N


def lanczos(matvec: Callable, v0_N, num_iters: int, key) -> Lanczos:
  """`num_iters` Lanczos steps from `v0` (any nonzero `[n]`); `key` seeds restart vectors."""
  n = v0_N.shape[0]
  if not 0 < num_iters <= n:
    raise ValueError(f"num_iters={num_iters} must lie in [1, n={n}]")
  dtype = v0_N.dtype
  rtol = num_iters * float(jnp.finfo(dtype).eps)
  basis = jnp.zeros((num_iters + 1, n), dtype).at[0].set(_normalise(v0_N)[0])
  zeros = jnp.zeros((num_iters,), dtype)

  def restart(i, basis):
    fresh = jax.random.normal(jax.random.fold_in(key, i), (n,), dtype)
    return _normalise(_orthogonalise(fresh, basis))[0]

  def body(i, carry):
    basis, alpha, beta, scale = carry
    q = basis[i]
    aq = matvec(q)
    a = jnp.vdot(q, aq)
    scale = jnp.maximum(scale, jnp.linalg.norm(aq))  # a lower bound on ‖A‖
    nxt, b = _normalise(_orthogonalise(aq, basis))
    broke = b <= rtol * scale
    nxt = jax.lax.cond(broke, restart, lambda i, basis: nxt, i, basis)
    b = jnp.where(broke, 0.0, b).astype(dtype)
    return basis.at[i + 1].set(nxt), alpha.at[i].set(a), beta.at[i].set(b), scale

  carry = (basis, zeros, zeros, jnp.zeros((), dtype))
  basis, alpha, beta, _ = jax.lax.fori_loop(0, num_iters, body, carry)
  return Lanczos(alpha, beta, basis[:num_iters])


def tridiagonal(alpha_M, beta_M):
  """Dense `T` `[m, m]` from the diagonal `alpha` and the first `m − 1` entries of `beta`."""
  off = beta_M[:-1]
  return jnp.diag(alpha_M) + jnp.diag(off, 1) + jnp.diag(off, -1)


def ritz(result: Lanczos) -> Ritz:
  """Eigen-decomposition of `T`: Ritz values, SLQ weights and residual bounds."""
  values, vectors = jnp.linalg.eigh(tridiagonal(result.alpha, result.beta))
  return Ritz(values, vectors[0] ** 2, jnp.abs(result.beta[-1] * vectors[-1]))


def extreme_eigenvalues(matvec: Callable, n: int, key, num_iters: int, k: int,
                        dtype=jnp.float32) -> Extremes:
  """The `k` largest and `k` smallest Ritz values after `num_iters` steps from a random start."""
  if k > num_iters:
    raise ValueError(f"k={k} eigenvalues need num_iters >= k, got {num_iters}")
  start_key, restart_key = jax.random.split(key)
  r = ritz(lanczos(matvec, jax.random.normal(start_key, (n,), dtype), num_iters, restart_key))
  return Extremes(r.values[::-1][:k], r.bounds[::-1][:k], r.values[:k], r.bounds[:k])


def slq(matvec: Callable, n: int, key, num_iters: int, num_probes: int,
        dtype=jnp.float32) -> Ritz:
  """Stochastic Lanczos quadrature: one `Ritz` row per Rademacher probe, `[num_probes, m]`."""
  def one(probe_key):
    start_key, restart_key = jax.random.split(probe_key)
    v0 = jax.random.rademacher(start_key, (n,), dtype)
    return ritz(lanczos(matvec, v0, num_iters, restart_key))
  return jax.lax.map(one, jax.random.split(key, num_probes))


def density(quadrature: Ritz, grid_G, sigma: float):
  """Smoothed spectral density on `grid` `[G]`: mean over probes of `Σ_i τ_i N(x; θ_i, σ²)`.

  Integrates to 1 over the real line (the eigenvalue distribution of `A`).
  """
  z = (grid_G[:, None, None] - quadrature.values[None]) / sigma
  kernel = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
  return jnp.mean(jnp.sum(quadrature.weights[None] * kernel, axis=-1), axis=-1)
