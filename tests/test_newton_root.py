"""Newton–Raphson root finding: oracles (optax Polyak SGD, optimistix Newton), convergence,
guards, and the vmapped component gradients against per-token loops. Float64 throughout."""

import itertools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import pytest
from absl.testing import parameterized
from jax.flatten_util import ravel_pytree

from lmopt.config import ConfigError, LossConfig, ModelConfig, OptimizerConfig
from lmopt.optim import build_optimizer, subset
from lmopt.optim import newton_root as nr
from lmopt.workload import Workload

SCALAR_FORMS = (nr.newton_root, nr.newton_root_components, nr.newton_root_recalculated)
ALL = SCALAR_FORMS + (nr.newton_system,)


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def tiny_problem(seed=1):
  """A float64 linear mixer (V=16, D=8, L=5), a non-zero lm_head, a batch of 2."""
  workload = Workload(ModelConfig(name="linear_mixer", vocab_size=16, dim=8, depth=1, seq_len=5,
                                  dtype="float64"), LossConfig(onehot_scale=10.0))
  params = workload.init(jax.random.key(0))
  kernel = params["lm_head"]["kernel"]
  params["lm_head"]["kernel"] = jax.random.normal(jax.random.key(2), kernel.shape, kernel.dtype)
  tokens = jax.random.randint(jax.random.key(seed), (2, 5), 0, 16)
  return workload, params, tokens, tokens[:, 1:]


def one_step(tx, params, inputs, targets):
  return tx.update(params, tx.init(params), params, inputs=inputs, targets=targets, value=0.0)


def linear_residuals(params, inputs_BxTxP, targets_BxT):
  """`ℓ = A θ − b` per token: a linear system of residuals."""
  return inputs_BxTxP @ params["w"] - targets_BxT


def scalar_root_problem(fn):
  """A single component `ℓ(θ) = fn(w)` with `θ = {"w": [n]}`."""
  return lambda params, inputs, targets: fn(params["w"])[None, None] + 0 * targets


class OracleTest(parameterized.TestCase):
  """Oracles outside lmopt, with and without jit."""

  def setUp(self):
    super().setUp()
    self._x64 = jax.enable_x64(True)
    self._x64.__enter__()

  def tearDown(self):
    self._x64.__exit__(None, None, None)
    super().tearDown()

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 1e3)
  def test_scalar_step_equals_polyak_sgd(self, c):
    workload, params, inputs, targets = tiny_problem()
    tx = nr.newton_root(workload.per_token_loss, c)
    updates, _ = self.variant(lambda p: one_step(tx, p, inputs, targets))(params)
    value, grad = jax.value_and_grad(workload.loss)(params, inputs, targets)
    polyak = optax.polyak_sgd(max_learning_rate=jnp.inf, f_min=c)
    expected, _ = polyak.update(grad, polyak.init(params), params, value=value)
    chex.assert_trees_all_close(updates, expected, rtol=1e-12, atol=1e-14)

  @chex.variants(with_jit=True, without_jit=True)
  def test_scalar_step_on_subset_equals_polyak_on_lm_head(self):
    workload, params, inputs, targets = tiny_problem()
    tx = subset.on_subset(lambda per_token_loss: nr.newton_root(per_token_loss, 1.0), ("lm_head",),
                          per_token_loss=workload.per_token_loss)
    updates, _ = self.variant(lambda p: one_step(tx, p, inputs, targets))(params)
    value, grad = jax.value_and_grad(workload.loss)(params, inputs, targets)
    polyak = optax.polyak_sgd(max_learning_rate=jnp.inf, f_min=1.0)
    expected, _ = polyak.update(grad["lm_head"], polyak.init(params["lm_head"]), value=value)
    chex.assert_trees_all_close(updates["lm_head"], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dense_max_size,keys", [(0, None), (10**9, None), (0, ("lm_head",))])
def test_system_step_equals_optimistix_newton(dense_max_size, keys):
  workload, params, inputs, targets = tiny_problem()
  c = 2.0
  kwargs = {"dense_max_size": dense_max_size, "cg_iters": 500, "cg_tol": 1e-14}
  if keys is None:
    tx = nr.newton_system(workload.per_token_loss, c, **kwargs)
    active, frozen = params, {}
  else:
    tx = subset.on_subset(lambda per_token_loss: nr.newton_system(
        per_token_loss, c, inputs_axes=(None, 0), **kwargs),
                          keys, per_token_loss=workload.per_token_loss)
    active, frozen = subset.split(params, keys)
  updates, state = jax.jit(lambda p: one_step(tx, p, inputs, targets))(params)
  flat, unravel = ravel_pytree(active)
  residual = lambda y, _: (workload.per_token_loss({**frozen, **unravel(y)}, inputs, targets)
                           - c).reshape(-1)
  sol = optx.root_find(residual, optx.Newton(rtol=1e-12, atol=1e-12), flat, max_steps=1,
                       throw=False)
  chex.assert_trees_all_close(updates if keys is None else subset.split(updates, keys)[0],
                              unravel(sol.value - flat), rtol=1e-8, atol=1e-10)
  assert float(state.cg_residual) < 1e-10
  assert (int(state.cg_iterations) > 0) == (dense_max_size == 0)


def test_matrix_pinv_differs_from_min_norm_by_rank():
  """`form="matrix_pinv"`: `⟨G, Δ⟩ = −f·rank(G)` per matrix leaf; a vector leaf gives min-norm."""
  g_matrix = jax.random.normal(jax.random.key(0), (5, 3))
  g_vector = jax.random.normal(jax.random.key(1), (4,))
  f = 2.5
  step = nr._matrix_pinv_direction({"m": g_matrix, "v": g_vector}, f, None)
  np.testing.assert_allclose(jnp.vdot(g_matrix, step["m"]), -f * 3, rtol=1e-12)
  chex.assert_trees_all_close(step["v"], nr._min_norm_direction(g_vector, f), rtol=1e-12)
  min_norm = nr._min_norm_direction({"m": g_matrix}, f)["m"]
  np.testing.assert_allclose(jnp.vdot(g_matrix, min_norm), -f, rtol=1e-12)
  rank_one = jnp.outer(g_matrix[:, 0], g_matrix[0])
  chex.assert_trees_all_close(nr._matrix_pinv_direction(rank_one, f, None),
                              nr._min_norm_direction(rank_one, f), rtol=1e-10)


@pytest.mark.parametrize("factory", SCALAR_FORMS)
def test_quadratic_convergence_on_a_scalar_root(factory):
  """`ℓ = exp(w) − 1`, `c = 1`: root `log 2`; errors square each step near the root."""
  loss = scalar_root_problem(lambda w: jnp.exp(w[0]) - 1.0)
  tx = factory(loss, 1.0)
  params, state = {"w": jnp.array([1.2])}, None
  inputs, targets = jnp.zeros((1, 1)), jnp.zeros((1, 1))
  update = jax.jit(lambda p, s: tx.update(p, s, p, inputs=inputs, targets=targets))
  state = tx.init(params)
  errors = []
  for _ in range(6):
    updates, state = update(params, state)
    params = optax.apply_updates(params, updates)
    errors.append(abs(float(params["w"][0]) - np.log(2.0)))
  # e_{k+1} ≈ (f''/2f') e_k² = e_k²/2 here.
  for before, after in itertools.pairwise(errors[:4]):
    assert after <= 0.6 * before**2 + 1e-15, errors
  assert errors[4] < 1e-14


def test_quadratic_convergence_to_a_sphere():
  """`f = ‖θ‖² − 4` over a vector: minimal-norm steps converge quadratically to the sphere."""
  tx = nr.newton_root(scalar_root_problem(lambda w: jnp.sum(w**2)), 4.0)
  params = {"w": jnp.array([3.0, -1.0, 0.5])}
  inputs, targets = jnp.zeros((1, 1)), jnp.zeros((1, 1))
  state = tx.init(params)
  errors = []
  for _ in range(5):
    updates, state = tx.update(params, state, params, inputs=inputs, targets=targets)
    params = optax.apply_updates(params, updates)
    errors.append(abs(float(jnp.linalg.norm(params["w"])) - 2.0))
  for before, after in itertools.pairwise(errors[:4]):
    assert after <= before**2, errors
  assert errors[4] < 1e-13


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), dense=st.booleans())
def test_system_solves_consistent_linear_residuals_in_one_step(seed, dense):
  with jax.enable_x64(True):
    a_key, b_key, w_key = jax.random.split(jax.random.key(seed), 3)
    inputs = jax.random.normal(a_key, (2, 3, 7))
    targets = jax.random.normal(b_key, (2, 3))
    params = {"w": jax.random.normal(w_key, (7,))}
    updates, state = SYSTEM_STEPS[dense](params, inputs, targets)
    after = linear_residuals(optax.apply_updates(params, updates), inputs, targets)
    np.testing.assert_allclose(after, 0.0, atol=1e-9)
    assert float(state.residual) > 1e-3


SYSTEM_STEPS = {
    dense: jax.jit(lambda p, x, y, dense=dense: one_step(nr.newton_system(
        linear_residuals, 0.0, dense_max_size=10**6 if dense else 0, cg_iters=50, cg_tol=1e-13),
                                                          p, x, y))
    for dense in (False, True)}


def least_squares_problem():
  """Per-row squared errors of `X W − Y` (`X [12, 3]`, `Y [12, 2]`): the optimum loss > 0."""
  x = jax.random.normal(jax.random.key(0), (1, 12, 3))
  y = jax.random.normal(jax.random.key(1), (1, 12, 2))
  loss = lambda p, inputs, targets: jnp.sum((inputs @ p["w"] - targets) ** 2, axis=-1)
  w_star = jnp.linalg.lstsq(x[0], y[0])[0]
  return loss, x, y, {"w": w_star}


def test_scalar_step_converges_when_c_is_the_attainable_optimum():
  """`c = L*` makes `L − c` a double root: Newton converges linearly with ratio ½ (and, as a
  Polyak step with the exact optimum, never moves away from it)."""
  loss, x, y, optimum = least_squares_problem()
  best = float(jnp.mean(loss(optimum, x, y)))
  tx = nr.newton_root(loss, best)
  update = jax.jit(lambda p, s: tx.update(p, s, p, inputs=x, targets=y))
  params = {"w": jnp.zeros((3, 2))}
  state = tx.init(params)
  distances = [float(jnp.linalg.norm(params["w"] - optimum["w"]))]
  for _ in range(20):
    updates, state = update(params, state)
    params = optax.apply_updates(params, updates)
    distances.append(float(jnp.linalg.norm(params["w"] - optimum["w"])))
  assert all(b <= 0.6 * a for a, b in itertools.pairwise(distances)), distances
  assert distances[-1] < 1e-5 * distances[0]
  assert float(jnp.mean(loss(params, x, y))) - best < 1e-11


@pytest.mark.parametrize("factory", ALL)
def test_nonfinite_loss_leaves_params_unchanged(factory):
  workload, params, inputs, targets = tiny_problem()
  bad = jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan), params)
  tx = factory(workload.per_token_loss, 1.0)
  update = jax.jit(lambda p, s: tx.update(p, s, p, inputs=inputs, targets=targets))
  updates, state = update(bad, tx.init(bad))
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, bad))
  assert int(state.nonfinite) == 1 and float(state.step_norm) == 0.0
  updates, state = update(params, state)
  chex.assert_tree_all_finite(updates)
  assert int(state.nonfinite) == 1 and int(state.count) == 2 and float(state.step_norm) > 0


@pytest.mark.parametrize("factory", ALL)
def test_no_retracing_across_steps(factory):
  workload, params, inputs, targets = tiny_problem()
  tx = factory(workload.per_token_loss, 1.0, max_step_norm=1.0, backtrack_steps=2)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def update(p, s, inputs, targets):
    return tx.update(p, s, p, inputs=inputs, targets=targets)

  state = tx.init(params)
  for seed in range(3):
    _, _, inputs, targets = tiny_problem(seed)
    updates, state = update(params, state, inputs, targets)
    params = optax.apply_updates(params, updates)
  assert int(state.count) == 3


def per_token_gradient_loop(loss, params, inputs, targets):
  """Reference: one `jax.grad` per token, in Python."""
  ell = loss(params, inputs, targets)
  token_grad = jax.jit(jax.grad(lambda p, b, t: loss(p, inputs, targets)[b, t]))
  grads = [token_grad(params, b, t) for b in range(ell.shape[0]) for t in range(ell.shape[1])]
  return ell.reshape(-1), jax.tree.map(lambda *a: jnp.stack(a), *grads)


def test_vmapped_component_gradients_equal_a_per_token_loop():
  workload, params, inputs, targets = tiny_problem()
  ell, jac = nr._token_jacobian(workload.per_token_loss, params, inputs, targets, 0)
  ell_ref, jac_ref = per_token_gradient_loop(workload.per_token_loss, params, inputs, targets)
  chex.assert_trees_all_close((ell, jac), (ell_ref, jac_ref), rtol=1e-12, atol=1e-12)
  c = 2.0
  updates, state = one_step(nr.newton_root_components(workload.per_token_loss, c), params, inputs,
                            targets)
  weights = (ell_ref - c) / jax.vmap(lambda g: optax.tree.norm(g, squared=True))(jac_ref)
  expected = jax.tree.map(lambda j: -jnp.tensordot(weights, j, axes=1), jac_ref)
  chex.assert_trees_all_close(updates, expected, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(state.residual, jnp.linalg.norm(ell_ref - c), rtol=1e-12)


@pytest.mark.parametrize("example_chunk", [1])
def test_component_step_does_not_depend_on_the_example_chunk(example_chunk):
  """Examples processed a chunk at a time (bounded memory) give the same summed step."""
  workload, params, inputs, targets = tiny_problem()
  step = lambda chunk: one_step(nr.newton_root_components(workload.per_token_loss, 2.0,
                                                          example_chunk=chunk),
                                params, inputs, targets)
  (chunked, chunked_state), (whole, whole_state) = step(example_chunk), step(targets.shape[0])
  chex.assert_trees_all_close(chunked, whole, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(chunked_state.grad_norm, whole_state.grad_norm, rtol=1e-12)


@pytest.mark.parametrize("form", nr.FORMS)
def test_recalculated_equals_sequential_python_loop(form):
  workload, params, inputs, targets = tiny_problem()
  c = 2.0
  tx = nr.newton_root_recalculated(workload.per_token_loss, c, form=form)
  updates, _ = one_step(tx, params, inputs, targets)
  direction = nr._direction_fn(form, None)
  current = params
  for b in range(targets.shape[0]):
    for t in range(targets.shape[1]):
      value, g = jax.value_and_grad(
          lambda p, b=b, t=t: workload.per_token_loss(p, inputs, targets)[b, t])(current)
      current = optax.apply_updates(current, direction(g, value - c))
  chex.assert_trees_all_close(optax.apply_updates(params, updates), current, rtol=1e-9, atol=1e-9)


def test_components_on_subset_matches_closed_over_frozen_params():
  workload, params, inputs, targets = tiny_problem()
  keys = ("lm_head",)
  active, frozen = subset.split(params, keys)
  tx = subset.on_subset(
      lambda per_token_loss: nr.newton_root_components(per_token_loss, 1.0, inputs_axes=(None, 0)),
                        keys, per_token_loss=workload.per_token_loss)
  updates, _ = one_step(tx, params, inputs, targets)
  closed = lambda p, x, y: workload.per_token_loss({**frozen, **p}, x, y)
  expected, _ = one_step(nr.newton_root_components(closed, 1.0), active, inputs, targets)
  chex.assert_trees_all_close(updates["lm_head"], expected["lm_head"], rtol=1e-12)


def test_step_norm_cap_and_backtracking():
  workload, params, inputs, targets = tiny_problem()
  free, _ = one_step(nr.newton_root(workload.per_token_loss, 0.0), params, inputs, targets)
  capped, state = one_step(nr.newton_root(workload.per_token_loss, 0.0, max_step_norm=0.1), params,
                           inputs, targets)
  assert float(optax.tree.norm(free)) > 0.1
  np.testing.assert_allclose(optax.tree.norm(capped), 0.1, rtol=1e-12)
  chex.assert_trees_all_close(capped, optax.tree.scale(0.1 / optax.tree.norm(free), free))
  merit = lambda p: abs(float(workload.loss(p, inputs, targets)))
  tx = nr.newton_root(workload.per_token_loss, 0.0, backtrack_steps=30)
  updates, state = one_step(tx, params, inputs, targets)
  assert merit(optax.apply_updates(params, updates)) < merit(params)
  assert 0 < float(state.step_size) <= 1 and int(state.rejected) == 0
  # A root already reached: no step decreases |f|; backtracking rejects and takes none.
  at_root = nr.newton_root(workload.per_token_loss, float(workload.loss(params, inputs, targets)),
                           backtrack_steps=3)
  updates, state = one_step(at_root, params, inputs, targets)
  assert int(state.rejected) == 1 and float(state.step_norm) == 0.0


@pytest.mark.parametrize("name", ["newton_root", "newton_root_components",
                                  "newton_root_recalculated", "newton_system"])
def test_registry_builders_on_lm_head(name):
  workload, params, inputs, targets = tiny_problem()
  config = OptimizerConfig(name=name, params="lm_head", loss_constant=1.0, newton_form="min_norm")
  tx = build_optimizer(config, workload, params)
  grads = jax.grad(workload.loss)(params, inputs, targets)
  updates, _ = tx.update(grads, tx.init(params), params, value=0.0, grad=grads,
                         value_fn=workload.loss, inputs=inputs, targets=targets)
  for key in params:
    norm = float(optax.tree.norm(updates[key]))
    assert (norm > 0) if key == "lm_head" else (norm == 0), (key, norm)
  before = workload.loss(params, inputs, targets)
  assert jnp.isfinite(workload.loss(optax.apply_updates(params, updates), inputs, targets))
  assert float(before) > 1.0


def test_bad_form_is_a_config_error():
  workload, params, _, _ = tiny_problem()
  with pytest.raises(ConfigError, match="newton_form"):
    build_optimizer(OptimizerConfig(name="newton_root", newton_form="bad"), workload, params)
  with pytest.raises(ValueError, match="form"):
    nr.newton_root(lambda *a: a, form="bad")
