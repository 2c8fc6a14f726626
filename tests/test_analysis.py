"""Lanczos vs dense eigendecompositions, curvature operators, convergence estimators."""

import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmopt.analysis import convergence, lanczos, lm_head, operators
from lmopt.config import LossConfig, ModelConfig
from lmopt.lstsq import stats as stats_lib
from lmopt.optim import curvature, second_order
from lmopt.workload import Workload


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _symmetric(eigenvalues, seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
  return (q * np.asarray(eigenvalues)) @ q.T


def _matvec(a):
  a = jnp.asarray(a)
  return lambda v: a @ v


@jax.jit
def _extremes(a_NxN, key):
  return lanczos.extreme_eigenvalues(lambda v: a_NxN @ v, a_NxN.shape[0], key, 50, 3, a_NxN.dtype)


# Lanczos ---------------------------------------------------------------------------------


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16))
def test_extreme_eigenvalues_match_eigh(seed):
  rng = np.random.default_rng(seed)
  n = 80
  a = rng.normal(size=(n, n))
  a = (a + a.T) / 2
  with jax.enable_x64(True):
    ext = _extremes(jnp.asarray(a), jax.random.key(seed))
  exact = np.linalg.eigh(a)[0]
  np.testing.assert_allclose(ext.top, exact[::-1][:3], rtol=1e-8)
  np.testing.assert_allclose(ext.bottom, exact[:3], rtol=1e-8)


def test_top_eigenvalues_tight_and_ritz_bounds_valid(x64):
  eigenvalues = np.concatenate([np.linspace(0.1, 1.0, 295), [2.0, 3.0, 5.0, 8.0, 13.0]])
  a = _symmetric(eigenvalues, 0)
  result = lanczos.lanczos(_matvec(a), jnp.ones(300), 40, jax.random.key(0))
  ritz = lanczos.ritz(result)
  np.testing.assert_allclose(ritz.values[::-1][:5], [13, 8, 5, 3, 2], rtol=1e-12)
  # every Ritz value lies within its residual bound of an eigenvalue, and inside the spectrum
  gaps = np.min(np.abs(np.asarray(ritz.values)[:, None] - eigenvalues[None]), axis=1)
  assert np.all(gaps <= np.asarray(ritz.bounds) + 1e-12)
  assert np.all((ritz.values >= 0.1 - 1e-12) & (ritz.values <= 13 + 1e-12))
  basis = np.asarray(result.basis)
  np.testing.assert_allclose(basis @ basis.T, np.eye(40), atol=1e-12)


def test_breakdown_on_low_rank_operator_restarts(x64):
  a = _symmetric(np.concatenate([np.arange(1.0, 6.0), np.zeros(45)]), 1)
  result = lanczos.lanczos(_matvec(a), jnp.ones(50), 12, jax.random.key(0))
  chex.assert_tree_all_finite(result)
  assert np.sum(np.asarray(result.beta) == 0) >= 1  # the Krylov space of rank 5 was exhausted
  basis = np.asarray(result.basis)
  np.testing.assert_allclose(basis @ basis.T, np.eye(12), atol=1e-12)
  np.testing.assert_allclose(lanczos.ritz(result).values[-5:], np.arange(1.0, 6.0), rtol=1e-12)


def test_quadrature_reproduces_moments(x64):
  """`Σ τ_i θ_i^k = vᵀ A^k v` for `k <= 2m − 1` (Gauss quadrature of the spectral measure)."""
  a = _symmetric(np.random.default_rng(3).uniform(-1, 2, 60), 2)
  v = np.random.default_rng(4).choice([-1.0, 1.0], 60) / math.sqrt(60)
  m = 6
  ritz = lanczos.ritz(lanczos.lanczos(_matvec(a), jnp.asarray(v), m, jax.random.key(0)))
  for k in range(2 * m):
    expected = v @ np.linalg.matrix_power(a, k) @ v
    np.testing.assert_allclose(np.sum(ritz.weights * ritz.values**k), expected, rtol=1e-9,
                               atol=1e-12)


def test_slq_density_is_normalised_and_centred(x64):
  eigenvalues = np.random.default_rng(5).uniform(0.0, 4.0, 100)
  quad = lanczos.slq(_matvec(_symmetric(eigenvalues, 3)), 100, jax.random.key(0), 15, 6,
                     jnp.float64)
  chex.assert_shape(quad.values, (6, 15))
  np.testing.assert_allclose(jnp.sum(quad.weights, axis=1), 1.0, rtol=1e-12)
  grid = jnp.linspace(-2.0, 6.0, 4001)
  dens = lanczos.density(quad, grid, 0.1)
  np.testing.assert_allclose(jnp.trapezoid(dens, grid), 1.0, rtol=1e-6)
  mean = jnp.trapezoid(grid * dens, grid)  # Hutchinson estimate of tr(A)/n
  assert abs(mean - eigenvalues.mean()) < 0.25


def test_lanczos_rejects_more_steps_than_dimension():
  with pytest.raises(ValueError, match="num_iters"):
    lanczos.lanczos(lambda v: v, jnp.ones(4), 5, jax.random.key(0))
  with pytest.raises(ValueError, match="k=3"):
    lanczos.extreme_eigenvalues(lambda v: v, 4, jax.random.key(0), 2, 3)


# Curvature operators and the lm_head problem ---------------------------------------------


def _tiny(dim=8, vocab=300, seq_len=6, loss="mse"):
  workload = Workload(ModelConfig(dim=dim, vocab_size=vocab, depth=1, seq_len=seq_len),
                      LossConfig(name=loss, onehot_scale=10.0))
  params = workload.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (5, seq_len), 0, vocab)
  return workload, params, tokens


def test_hessian_operator_matches_dense_hessian():
  workload, params, tokens = _tiny(dim=4, vocab=300, seq_len=4)
  keys = ("mix_0",)

  @jax.jit
  def products(params, tokens, v):
    op = operators.model_operator(workload, params, tokens, tokens[:, 1:], "hessian", keys)
    loss = lambda p: workload.loss({**params, **p}, tokens, tokens[:, 1:])
    dense, _, _ = curvature.dense_hessian(loss, {k: params[k] for k in keys})
    return op.matvec(v), dense @ v

  got, expected = products(params, tokens, jax.random.normal(jax.random.key(2), (20,)))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_lm_head_ggn_lanczos_matches_exact_spectrum(x64):
  workload, params, tokens = _tiny()
  problem = lm_head.head_problem(lm_head.head_stats(workload, params, np.asarray(tokens), 2))

  @jax.jit
  def run(params, tokens, key):
    op = operators.model_operator(workload, params, tokens, tokens[:, 1:], "ggn", ("lm_head",))
    v = jax.random.normal(key, (op.size,), op.dtype)
    ext = lanczos.extreme_eigenvalues(op.matvec, op.size, key, 24, 2, op.dtype)
    return op.unravel(v)["lm_head"]["kernel"], op.matvec(v), ext

  v_kernel, got, ext = run(params, tokens, jax.random.key(3))
  expected = (problem.hessian @ v_kernel).ravel()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
  cond = lm_head.conditioning(problem)  # eigenvalues have multiplicity V: top[1] copies top[0]
  np.testing.assert_allclose(ext.top, [cond.lmax] * 2, rtol=1e-4)
  np.testing.assert_allclose(ext.bottom[0], cond.lmin, rtol=1e-3)


def test_head_stats_streams_like_one_batch_and_solution_is_lstsq(x64):
  workload, params, _ = _tiny(seq_len=8)
  windows = np.asarray(jax.random.randint(jax.random.key(5), (7, 8), 0, 300))
  streamed = lm_head.head_stats(workload, params, windows, chunk=3)
  x = np.asarray(workload.features_fn(params, windows), np.float64).reshape(-1, 8)
  whole = stats_lib.batch_stats(jnp.asarray(x), jnp.asarray(windows[:, 1:].ravel()), 300, 10.0)
  chex.assert_trees_all_close(streamed, whole, rtol=1e-10)
  problem = lm_head.head_problem(streamed)
  y = 10.0 * np.eye(300)[windows[:, 1:].ravel()]
  np.testing.assert_allclose(problem.solution, np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-6,
                             atol=1e-6)
  w = jax.random.normal(jax.random.key(6), (8, 300), jnp.float64)
  np.testing.assert_allclose(
      problem.optimum + lm_head.excess_loss(w, problem.hessian, problem.solution),
      stats_lib.loss_from_stats(streamed, w), rtol=1e-10)


# Convergence -----------------------------------------------------------------------------


def test_observed_order_and_rate():
  linear = 0.5 * 0.7 ** np.arange(20)
  assert convergence.observed_order(linear) == pytest.approx(1.0, abs=1e-9)
  assert convergence.linear_rate(linear) == pytest.approx(0.7, rel=1e-9)
  quadratic = [0.5]
  for _ in range(5):
    quadratic.append(3.0 * quadratic[-1] ** 2)
  assert convergence.observed_order(quadratic) == pytest.approx(2.0, abs=0.3)
  newton_sqrt2 = [1.0]  # Newton on x² − 2, errors |x_k − √2| (floor drops rounding level)
  for _ in range(6):
    newton_sqrt2.append(newton_sqrt2[-1] / 2 + 1 / newton_sqrt2[-1])
  errors = np.abs(np.asarray(newton_sqrt2) - math.sqrt(2))
  assert convergence.observed_order(errors, floor=1e-14) == pytest.approx(2.0, abs=0.2)
  assert math.isnan(convergence.observed_order([1.0, 0.5]))
  assert convergence.steps_for_rate(0.5, 0.25) == 2
  assert convergence.steps_for_rate(1.0, 0.1) == math.inf


def _diagonal_problem(kappa, dim=20, vocab=3):
  """A HeadProblem with Hessian eigenvalues spread over [1, kappa]; W* = 0."""
  eigenvalues = np.geomspace(1.0, kappa, dim)
  hess = jnp.diag(jnp.asarray(eigenvalues))
  return lm_head.HeadProblem(hess, jnp.asarray(eigenvalues), jnp.eye(dim), jnp.zeros((dim, vocab)),
                             jnp.zeros(()), jnp.zeros(()))


@pytest.mark.parametrize("kappa", [10.0, 100.0, 1000.0])
def test_gd_steps_on_quadratic_match_prediction(x64, kappa):
  eps = 1e-4
  problem = _diagonal_problem(kappa)
  cond = lm_head.conditioning(problem)
  assert cond.kappa == pytest.approx(kappa)
  w0 = jnp.zeros((20, 3)).at[jnp.array([0, 19])].set(1.0)  # error on both extreme eigenvectors
  loss0 = lm_head.excess_loss(w0, problem.hessian, problem.solution)
  step = convergence.gd_step(cond.lmax, cond.lmin)
  run = convergence.run_to_target(optax.sgd(step), lm_head.excess_loss, w0, problem.hessian,
                                  problem.solution, eps * loss0, 100_000)
  measured = int(run.steps)
  assert bool(run.reached)
  predicted = convergence.gd_steps(kappa, eps)
  assert predicted - 1 <= measured <= predicted  # the worst case is attained
  rule = convergence.rule_of_thumb_steps(kappa, eps)
  assert rule / 8 <= measured <= rule
  assert lm_head.gd_steps_exact(problem, w0, step, eps) == measured
  spread = jnp.ones((20, 3))  # weight on every eigenvalue: at most the worst case
  assert lm_head.gd_steps_exact(problem, spread, step, eps) <= predicted
  excess = np.asarray(run.losses[:measured + 1])
  assert convergence.linear_rate(excess[measured // 2:]) == pytest.approx(
      convergence.gd_rate(kappa) ** 2, rel=1e-3)
  lr, momentum = convergence.heavy_ball(cond.lmax, cond.lmin)
  hb = convergence.run_to_target(optax.sgd(lr, momentum=momentum), lm_head.excess_loss, w0,
                                 problem.hessian, problem.solution, eps * loss0, 100_000)
  assert int(hb.steps) <= 3 * convergence.heavy_ball_steps(kappa, eps) + 5


def test_newton_steps_on_quadratic(x64):
  problem = _diagonal_problem(1e4)
  w0 = jnp.ones((20, 3))
  target = 1e-10 * lm_head.excess_loss(w0, problem.hessian, problem.solution)
  exact = convergence.run_to_target(lm_head.newton(problem), lm_head.excess_loss, w0,
                                    problem.hessian, problem.solution, target, 10)
  assert int(exact.steps) == 1
  problem = _diagonal_problem(100.0)  # CG with 12 < 20 iterations: inexact, bound 4ρ^24 ≈ 0.03
  target = 1e-10 * lm_head.excess_loss(w0, problem.hessian, problem.solution)
  predicted = convergence.newton_cg_steps(100.0, 12, 1e-10)
  assert predicted == 7
  tx = second_order.newton(lm_head.excess_loss, damping=0.0, cg_iters=12, cg_tol=1e-14)
  run = convergence.run_to_target(tx, lm_head.excess_loss, w0, problem.hessian, problem.solution,
                                  target, 50)
  assert bool(run.reached) and 2 <= int(run.steps) <= predicted


def test_run_to_target_compiles_once_and_stops_at_cap():
  loss_fn = chex.assert_max_traces(lambda x, a, b: jnp.sum(a * (x - b) ** 2), n=2)
  run = jax.jit(convergence.run_to_target, static_argnums=(0, 1, 6))
  tx = optax.sgd(0.1)
  a, b = jnp.ones(3), jnp.zeros(3)
  for start in (1.0, 2.0):
    out = run(tx, loss_fn, jnp.full(3, start), a, b, 1e-30, 5)
    assert int(out.steps) == 5 and not bool(out.reached)
    np.testing.assert_allclose(out.losses, 3 * start**2 * 0.64 ** np.arange(6), rtol=1e-5)
