"""Steihaug CG and the Newton-type transformations: solves, convergence, safety, chaining."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmopt.config import LossConfig, ModelConfig, OptimizerConfig
from lmopt.optim import build_optimizer, cg, curvature, second_order
from lmopt.workload import Workload


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def run(tx, params, loss_fn, inputs, targets, steps, state=None):
  """`steps` jitted updates with the train-step contract; returns params, state, losses.

  The step may be traced once per call (`chex.assert_max_traces`): no retracing per step.
  """
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s):
    value, grad = jax.value_and_grad(loss_fn)(p, inputs, targets)
    u, s = tx.update(grad, s, p, value=value, grad=grad, value_fn=loss_fn, inputs=inputs,
                     targets=targets)
    return optax.apply_updates(p, u), s, value, u

  state, losses = tx.init(params) if state is None else state, []
  for _ in range(steps):
    params, state, value, updates = step(params, state)
    losses.append(float(value))
  losses.append(float(jax.jit(loss_fn)(params, inputs, targets)))
  return params, state, losses, updates


def inner(state):
  """The `SecondOrderState` of a chain built by `build_optimizer` (its first entry)."""
  assert isinstance(state[0], second_order.SecondOrderState)
  return state[0]


def mixer_problem(model="linear_mixer", loss="mse", dtype="float32", vocab=16, seed=0):
  cfg = ModelConfig(name=model, vocab_size=vocab, dim=8, depth=1, seq_len=8, num_heads=2,
                    mlp_expansion=1, dtype=dtype)
  workload = Workload(cfg, LossConfig(name=loss, onehot_scale=10.0))
  params = jax.jit(workload.init)(jax.random.key(seed))
  tokens = jax.random.randint(jax.random.key(seed + 1), (4, 8), 0, vocab)
  return workload, params, tokens, tokens[:, 1:]


# ---------------------------------------------------------------- conjugate gradient


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(st.integers(2, 8), st.integers(0, 2**31 - 1), st.booleans())
def test_cg_solves_spd_system(n, seed, preconditioned):
  rng = np.random.default_rng(seed)
  m = rng.normal(size=(n, n))
  a = m @ m.T + n * np.diag(rng.uniform(0.1, 10.0, n))
  b = rng.normal(size=n)
  diag = np.diag(a)
  precond = (lambda r: r / diag) if preconditioned else None
  result = cg.steihaug_cg(lambda v: a @ v, b, max_iters=4 * n, tol=1e-10, precond=precond)
  expected = np.linalg.solve(a, b)
  np.testing.assert_allclose(result.x, expected, rtol=1e-3, atol=1e-4)
  reference, _ = jax.scipy.sparse.linalg.cg(lambda v: a @ v, b, tol=1e-10, maxiter=4 * n)
  np.testing.assert_allclose(result.x, reference, rtol=1e-3, atol=1e-4)
  assert not result.negative_curvature and int(result.iterations) <= 4 * n


def test_cg_warm_start_and_jacobi_preconditioner(x64):
  a = jnp.diag(jnp.logspace(0, 4, 6))
  b = jnp.ones(6)
  plain = cg.steihaug_cg(lambda v: a @ v, b, max_iters=50, tol=1e-12)
  jacobi = cg.steihaug_cg(lambda v: a @ v, b, max_iters=50, tol=1e-12,
                          precond=lambda r: r / jnp.diag(a))
  warm = cg.steihaug_cg(lambda v: a @ v, b, max_iters=50, tol=1e-12, x0=plain.x)
  for result in (plain, jacobi, warm):
    np.testing.assert_allclose(a @ result.x, b, rtol=1e-9)
  assert int(jacobi.iterations) == 1 < int(plain.iterations)
  assert int(warm.iterations) == 0


def test_cg_stops_at_negative_curvature():
  a = jnp.diag(jnp.array([2.0, -2.0]))
  # First direction -g has positive curvature, the second one negative: stop at iterate 1.
  later = cg.steihaug_cg(lambda v: a @ v, jnp.array([-2.0, 0.2]), max_iters=10, tol=1e-8)
  assert bool(later.negative_curvature) and int(later.iterations) == 2
  assert float(jnp.dot(later.x, jnp.array([-2.0, 0.2]))) > 0  # descent
  # First direction already negative: fall back to the gradient direction b = -g.
  b = jnp.array([-0.02, 2.0])
  first = cg.steihaug_cg(lambda v: a @ v, b, max_iters=10, tol=1e-8)
  assert bool(first.negative_curvature) and int(first.iterations) == 1
  np.testing.assert_allclose(first.x, b)


# ---------------------------------------------------------------- transformations on toy problems


def quadratic(a, c):
  return lambda p, inputs, targets: 0.5 * p["x"] @ a @ p["x"] - c @ p["x"]


def test_exact_newton_minimises_convex_quadratic_in_one_step(x64):
  rng = np.random.default_rng(0)
  m = rng.normal(size=(5, 5))
  a, c = jnp.asarray(m @ m.T + np.eye(5)), jnp.asarray(rng.normal(size=5))
  loss_fn = quadratic(a, c)
  for tx in (second_order.exact_newton(loss_fn),
             second_order.newton(loss_fn, damping=0.0, cg_iters=10, cg_tol=1e-14)):
    params, state, _losses, _ = run(tx, {"x": jnp.zeros(5)}, loss_fn, None, None, 1)
    np.testing.assert_allclose(params["x"], np.linalg.solve(a, c), rtol=1e-10)
    assert state.nonfinite == 0 and state.negative_curvature == 0
    np.testing.assert_allclose(state.predicted_reduction, state.actual_reduction, rtol=1e-8)


def test_exact_newton_softmax_regression_converges_quadratically(x64):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(40, 3)))
  y = jnp.asarray(rng.integers(0, 3, size=40))

  def loss_fn(p, inputs, targets):
    logits = inputs @ p["w"]
    ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[:, None], 1)[:, 0]
    return jnp.mean(ce) + 0.05 * jnp.sum(p["w"] ** 2)

  tx = second_order.exact_newton(loss_fn)
  grad_norm = jax.jit(lambda p: optax.tree.norm(jax.grad(loss_fn)(p, x, y)))
  params, state = {"w": jnp.full((3, 3), 0.1)}, tx.init({"w": jnp.zeros((3, 3))})
  norms = [float(grad_norm(params))]
  update = jax.jit(lambda p, s: tx.update(None, s, p, inputs=x, targets=y))
  for _ in range(10):
    updates, state = update(params, state)
    params = optax.apply_updates(params, updates)
    norms.append(float(grad_norm(params)))
  assert norms[-1] < 1e-10
  e = [n for n in norms if n > 1e-13]
  orders = [np.log(e[k + 1] / e[k]) / np.log(e[k] / e[k - 1]) for k in range(1, len(e) - 1)]
  assert orders[-1] >= 1.8, (norms, orders)


def test_newton_detects_negative_curvature_on_saddle(x64):
  loss_fn = lambda p, inputs, targets: p["x"][0] ** 2 - p["x"][1] ** 2
  tx = second_order.newton(loss_fn, damping=0.0, cg_iters=5)
  _params, state, losses, _ = run(tx, {"x": jnp.array([1.0, 0.1])}, loss_fn, None, None, 1)
  assert state.negative_curvature == 1
  assert losses[-1] < losses[0]
  exact = second_order.exact_newton(loss_fn)
  _, state, losses, _ = run(exact, {"x": jnp.array([1.0, 0.1])}, loss_fn, None, None, 1)
  assert state.negative_curvature == 1 and losses[-1] < losses[0]


def test_levenberg_marquardt_rejects_loss_raising_step(x64):
  # One residual r = w² + 1: the Gauss-Newton step from w = 0.1 overshoots to w ≈ -4.95.
  logits_fn = lambda p, inputs: (p["w"] ** 2)[None, None]
  output_loss = lambda z, targets: jnp.mean((z - targets[:, None]) ** 2, axis=-1)
  tx = second_order.levenberg_marquardt(logits_fn, output_loss, curvature.mse_output_hvp,
                                        damping=1e-8, cg_iters=2)
  loss_fn = lambda p, inputs, targets: jnp.mean(output_loss(logits_fn(p, inputs), targets))
  target = jnp.array([-1.0])
  params, state, losses, updates = run(tx, {"w": jnp.array(0.1, jnp.float64)}, loss_fn, None, target, 1)
  assert state.rejected == 1 and state.actual_reduction < 0
  assert float(updates["w"]) == 0.0 and float(params["w"]) == 0.1
  np.testing.assert_allclose(state.damping, 4e-8)
  _, state, losses, _ = run(tx, {"w": jnp.array(0.1, jnp.float64)}, loss_fn, None, target, 30)
  assert losses[-1] < losses[0] and state.rejected < 30


def test_nonfinite_loss_leaves_params_unchanged():
  loss_fn = lambda p, inputs, targets: jnp.sum(jnp.log(p["x"]))
  tx = second_order.newton(loss_fn, damping=1e-3)
  _params, state, _, updates = run(tx, {"x": jnp.array([-1.0, 2.0])}, loss_fn, None, None, 1)
  assert state.nonfinite == 1 and state.rejected == 0
  np.testing.assert_array_equal(updates["x"], 0.0)
  np.testing.assert_allclose(state.damping, 1e-2)


def test_step_norm_cap(x64):
  loss_fn = quadratic(jnp.eye(3), jnp.array([30.0, 40.0, 0.0]))
  tx = second_order.newton(loss_fn, damping=0.0, max_step_norm=5.0)
  _, _state, _, updates = run(tx, {"x": jnp.zeros(3)}, loss_fn, None, None, 1)
  np.testing.assert_allclose(updates["x"], [3.0, 4.0, 0.0], rtol=1e-12)


# ---------------------------------------------------------------- on the lmopt models


def test_gauss_newton_reaches_lm_head_least_squares_optimum(x64):
  workload, params, inputs, targets = mixer_problem(dtype="float64", vocab=12)
  config = OptimizerConfig(name="gauss_newton", damping=0.0, cg_iters=200, cg_tol=1e-13,
                           params="lm_head")
  tx = build_optimizer(config, workload, params)
  new_params, _state, losses, _ = run(tx, params, workload.loss, inputs, targets, 3)
  features = np.asarray(jax.jit(workload.features_fn)(params, inputs)).reshape(-1, 8)
  onehot = 10.0 * np.eye(12)[np.asarray(targets).reshape(-1)]
  beta, *_ = np.linalg.lstsq(features, onehot, rcond=None)
  got = np.asarray(new_params["lm_head"]["kernel"])
  assert np.linalg.norm(got - beta) <= 1e-4 * np.linalg.norm(beta)
  optimum = np.mean((features @ beta - onehot) ** 2)
  np.testing.assert_allclose(losses[-1], optimum, rtol=1e-8)
  chex.assert_trees_all_equal(new_params["wte"], params["wte"])


def test_gauss_newton_equals_newton_for_linear_model_under_squared_loss(x64):
  workload, params, inputs, targets = mixer_problem(dtype="float64")
  steps = {}
  for name in ("newton", "gauss_newton"):
    config = OptimizerConfig(name=name, damping=1e-4, cg_iters=7, params="lm_head")
    _, _, _, steps[name] = run(build_optimizer(config, workload, params), params, workload.loss,
                               inputs, targets, 1)
  chex.assert_trees_all_close(steps["newton"], steps["gauss_newton"], rtol=1e-9, atol=1e-12)


def test_options_warm_start_and_hutchinson_and_optax_linesearch_chain():
  workload, params, inputs, targets = mixer_problem(loss="ce")
  out_hvp = curvature.output_hessian_vp("ce")
  tx = optax.chain(
      second_order.gauss_newton(workload.logits_fn, workload.output_loss, out_hvp, damping=1e-3,
                                cg_iters=5, warm_start=0.9, preconditioner="hutchinson"),
      optax.scale_by_backtracking_linesearch(max_backtracking_steps=30, decrease_factor=0.5))
  # optax's line-search init has weak-typed leaves that would retrace once; make them strong.
  state = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), tx.init(params))
  _, state, losses, _ = run(tx, params, workload.loss, inputs, targets, 3, state)
  assert losses[-1] < losses[0]
  chex.assert_tree_all_finite(state[0].step)
  assert optax.tree.norm(state[0].step) > 0 and state[0].cg_iterations > 0


def causal_kernels(params):
  return [x for path, x in jax.tree_util.tree_leaves_with_path(params)
          if getattr(path[-1], "key", None) == "causal_kernel"]


@pytest.mark.parametrize("model,loss,name", [
    ("linear_mixer", "mse", "levenberg_marquardt"), ("linear_mixer", "mse", "gauss_newton"),
    ("linear_mixer", "ce", "newton"), ("masked_mixer", "mse", "newton"),
    ("masked_mixer", "ce", "gauss_newton"), ("transformer", "mse", "gauss_newton"),
    ("transformer", "ce", "levenberg_marquardt")])
def test_smoke_models_and_losses(model, loss, name):
  """Finite, loss-lowering steps; causal weights above the diagonal stay exactly zero."""
  workload, params, inputs, targets = mixer_problem(model, loss)
  tx = build_optimizer(OptimizerConfig(name=name, damping=1e-3, cg_iters=5), workload, params)
  new_params, state, losses, _ = run(tx, params, workload.loss, inputs, targets, 3)
  chex.assert_tree_all_finite(new_params)
  assert losses[-1] < losses[0]
  diagnostics = inner(state)
  assert diagnostics.count == 3 and diagnostics.nonfinite == 0
  for old, new in zip(causal_kernels(params), causal_kernels(new_params)):
    assert np.all(np.triu(np.asarray(new), 1) == 0.0)
    assert np.any(np.asarray(new) != np.asarray(old))


def test_exact_newton_on_a_model_and_its_size_guard():
  workload, params, inputs, targets = mixer_problem(vocab=8)
  tx = build_optimizer(OptimizerConfig(name="exact_newton", damping=1e-3), workload, params)
  _, _state, losses, _ = run(tx, params, workload.loss, inputs, targets, 2)
  assert losses[-1] < losses[0]
  big = Workload(ModelConfig(name="masked_mixer", vocab_size=256, dim=8, seq_len=8))
  shapes = jax.eval_shape(big.init, jax.random.key(0))
  with pytest.raises(ValueError, match="dense Hessian"):
    build_optimizer(OptimizerConfig(name="exact_newton"), big, shapes).init(shapes)


@pytest.mark.parametrize("name", ["newton", "gauss_newton", "levenberg_marquardt"])
def test_config_reaches_warm_start_and_preconditioner(name):
  """`--cg_warm_start` and `--preconditioner` change the CG runs the registry builds."""
  workload = Workload(ModelConfig(vocab_size=32, dim=8, depth=1, seq_len=8), LossConfig("ce"))
  params = workload.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 8), 0, 32)
  extra = {"inputs": tokens, "targets": tokens[:, 1:], "value_fn": workload.loss}

  def updates(steps, **settings):
    tx = build_optimizer(OptimizerConfig(name=name, cg_iters=3, **settings), workload, params)
    state, p, out = tx.init(params), params, []
    for _ in range(steps):
      value, grads = jax.value_and_grad(workload.loss)(p, tokens, tokens[:, 1:])
      u, state = tx.update(grads, state, p, value=value, grad=grads, **extra)
      p = optax.apply_updates(p, u)
      out.append(u)
    return out, state[0]

  differ = lambda a, b: not all(bool(jnp.allclose(x, y)) for x, y in zip(jax.tree.leaves(a),
                                                                         jax.tree.leaves(b)))
  (plain, *_), plain_state = updates(1)
  (preconditioned, *_), _ = updates(1, preconditioner="hutchinson")
  (warm, *_), warm_state = updates(1, cg_warm_start=0.5)
  chex.assert_tree_all_finite((preconditioned, warm))
  assert differ(plain, preconditioned)
  chex.assert_trees_all_close(plain, warm)  # nothing to warm-start from at the first step
  assert plain_state.step is None  # no warm start: no previous direction is kept
  assert optax.tree.norm(warm_state.step) > 0  # the next CG run starts from 0.5 x this
  with pytest.raises(ValueError, match="--preconditioner='jacobi'"):
    build_optimizer(OptimizerConfig(name=name, preconditioner="jacobi"), workload, params)
