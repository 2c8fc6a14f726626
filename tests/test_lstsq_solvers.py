"""Solvers against numpy.linalg.lstsq, rank deficiency, float32 conditioning, ridge path."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lstsq_cases import (
  conditioned_features,
  correlated_targets,
  dense_targets,
  mse,
  reference,
  rel_err,
)

from lmopt.lstsq import ridge, solvers
from lmopt.lstsq import stats as stats_lib

SCALE = 1000.0


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


_solve = jax.jit(solvers.solve, static_argnums=(0, 3, 4), static_argnames=("ridge", "rcond"))


def run(method, x, y, vocab, dtype, **kw):
  out = _solve(method, jnp.asarray(x, dtype), jnp.asarray(y), vocab, SCALE, **kw)
  chex.assert_shape(out, (x.shape[1], vocab))
  return np.asarray(out, np.float64)


@pytest.mark.parametrize("method", solvers.METHODS)
def test_matches_numpy_float64(x64, method):
  x = conditioned_features(60, 10, cond=1e3)
  y = correlated_targets(x, 16)
  w_ref, _ = reference(x, y, 16, SCALE)
  assert rel_err(run(method, x, y, 16, jnp.float64), w_ref) < 1e-8


@pytest.mark.parametrize("method", solvers.METHODS)
def test_matches_numpy_float32_well_conditioned(method):
  x = conditioned_features(80, 12, cond=10.0, seed=3)
  y = correlated_targets(x, 16, seed=3)
  w_ref, _ = reference(x, y, 16, SCALE)
  w = run(method, x, y, 16, jnp.float32)
  assert w.dtype == np.float64 and rel_err(w, w_ref) < 1e-4


def rank_deficient_cases():
  rng = np.random.default_rng(7)
  base = rng.normal(size=(40, 6))
  duplicated = np.concatenate([base, base[:, :2]], axis=1)
  zero_rows = base.copy()
  zero_rows[::3] = 0.0
  wide = rng.normal(size=(5, 12))
  return {"duplicated_columns": duplicated, "zero_rows": np.concatenate([zero_rows, duplicated],
                                                                         axis=1),
          "dim_gt_tokens": wide}


@pytest.mark.parametrize("case", sorted(rank_deficient_cases()))
@pytest.mark.parametrize("method", ["pinv", "lstsq", "eigh"])
def test_rank_deficient_gives_min_norm(x64, case, method):
  x = rank_deficient_cases()[case]
  y = np.random.default_rng(1).integers(0, 9, x.shape[0])
  w_ref, loss_ref = reference(x, y, 9, SCALE)
  w64 = run(method, x, y, 9, jnp.float64)
  tol = 1e-6 if method == "eigh" else 1e-8  # eigh squares the condition number
  assert rel_err(w64, w_ref) < tol
  w32 = run(method, x, y, 9, jnp.float32)
  chex.assert_tree_all_finite(w32)
  assert mse(x, w32, y, 9, SCALE) <= loss_ref * (1 + 1e-4) + 1e-6 * SCALE**2
  assert np.linalg.norm(w32) <= np.linalg.norm(w_ref) * (1 + 1e-3)


def test_qr_refuses_wide_problems():
  x = rank_deficient_cases()["dim_gt_tokens"]
  with pytest.raises(ValueError, match="pinv or lstsq"):
    run("qr", x, np.zeros(5, int), 4, jnp.float32)


def ill_conditioned_excess(methods, rcond=1e-7):
  """float32 excess loss `(L(W) − L*) / L*` on a cond-1e6 problem, per method (float64 scoring)."""
  x = conditioned_features(400, 16, cond=1e6)
  y = correlated_targets(x, 32)
  _, best = reference(x, y, 32, SCALE)
  out = {}
  for m in methods:
    w = run(m, x, y, 32, jnp.float32, rcond=rcond)
    out[m] = (mse(x, w, y, 32, SCALE) - best) / best if np.all(np.isfinite(w)) else np.inf
  return out


def test_float32_normal_inverse_fails_where_pinv_does_not(x64):
  gap = ill_conditioned_excess(("pinv", "lstsq", "qr", "normal_inverse"))
  assert gap["pinv"] < 1e-4 and gap["lstsq"] < 1e-4 and gap["qr"] < 1e-4
  assert gap["normal_inverse"] > 1e3 * gap["pinv"]
  assert gap["normal_inverse"] > 1e-2  # loses more than 1% of the optimum's loss


@hypothesis.settings(max_examples=6, deadline=None, derandomize=True)
@hypothesis.given(rows=st.integers(1, 30), dim=st.integers(1, 9), vocab=st.integers(2, 7),
                  log_cond=st.floats(0.0, 6.0), seed=st.integers(0, 2**16))
def test_property_min_norm_solutions(rows, dim, vocab, log_cond, seed):
  with jax.enable_x64(True):
    x = conditioned_features(rows, dim, cond=10.0**log_cond, seed=seed)
    y = np.random.default_rng(seed).integers(0, vocab, rows)
    w_ref, _ = reference(x, y, vocab, SCALE)
    for method in ("pinv", "lstsq"):
      w = run(method, x, y, vocab, jnp.float64)
      assert rel_err(w, w_ref) < 1e-8 * max(1.0, 10.0**log_cond)
    # normal equations hold for the Gram methods where κ(X)² is far from 1/eps
    if log_cond <= 3.0 and rows >= dim:
      for method in ("cholesky", "eigh", "normal_inverse"):
        w = run(method, x, y, vocab, jnp.float64)
        grad = x.T @ (x @ w - dense_targets(y, vocab, SCALE))
        assert np.linalg.norm(grad) <= 1e-7 * np.linalg.norm(x.T @ dense_targets(y, vocab, SCALE))


@pytest.mark.parametrize("method", solvers.METHODS)
def test_ridge_matches_closed_form(x64, method):
  x = conditioned_features(30, 8, cond=1e2, seed=5)
  y = correlated_targets(x, 6, seed=5)
  lam = 0.3
  w_ref = np.linalg.solve(x.T @ x + lam * np.eye(8), x.T @ dense_targets(y, 6, SCALE))
  assert rel_err(run(method, x, y, 6, jnp.float64, ridge=lam), w_ref) < 1e-9


def test_ridge_path_picks_lowest_validation_loss(x64):
  x = conditioned_features(120, 10, cond=1e4, seed=2)
  y = correlated_targets(x, 8, seed=2)
  gram = lambda rows: stats_lib.batch_stats(jnp.asarray(x[rows]), jnp.asarray(y[rows]), 8, SCALE)
  train, valid = gram(slice(0, 60)), gram(slice(60, None))
  ridges = ridge.default_ridges(train, 7)
  path, w_best = jax.jit(ridge.ridge_path)(train, valid, ridges)
  solve_at = jax.jit(lambda lam: solvers.eigen_solve(solvers.gram_eigen(train), lam))
  for k, lam in enumerate(ridges):
    w = solve_at(lam)
    np.testing.assert_allclose(path.train_loss[k], stats_lib.loss_from_stats(train, w), rtol=1e-9)
    np.testing.assert_allclose(path.valid_loss[k], stats_lib.loss_from_stats(valid, w), rtol=1e-9)
  assert int(path.best) == int(np.argmin(path.valid_loss))
  np.testing.assert_allclose(w_best, solve_at(ridges[path.best]), rtol=1e-9)
  assert np.all(np.diff(np.asarray(path.train_loss)) >= -1e-9)  # more ridge, more train loss


def test_jitted_solve_traces_once():
  x = jnp.asarray(conditioned_features(20, 4, cond=10.0), jnp.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def fn(x_NxD, y_N):
    return solvers.solve("pinv", x_NxD, y_N, 5, SCALE, rcond=1e-6)

  for seed in range(3):
    y = jax.random.randint(jax.random.key(seed), (20,), 0, 5)
    chex.assert_tree_all_finite(fn(x + seed, y))
