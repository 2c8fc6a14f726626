"""Losses without logits: factored MSE and chunked CE against the direct forms.

Tolerances: float64 to 1e-10 relative; float32 per-token losses and the mean to 2e-5
relative (the losses here are near `s²/V`), gradients to `1e-5 · max|g|` per leaf
(leaves whose gradient vanishes in exact arithmetic, e.g. a bias before a layer norm or
an attention key bias, hold rounding noise: they compare against `0.1 · max|g|`).
Near a least-squares optimum the factored MSE error is bounded by `2⁻¹⁸ (s² + ‖HᵢW‖²)/V`
per token and `2⁻²⁰ (s² + mean ‖HᵢW‖²)/V` for the mean (module docstring).
"""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmopt import losses, losses_chunked, losses_factored, sharding
from lmopt import train as train_lib
from lmopt.config import ConfigError, LossConfig, ModelConfig, OptimizerConfig
from lmopt.optim import curvature, registry
from lmopt.workload import Workload

MODELS = ("linear_mixer", "masked_mixer", "transformer")
VOCAB, SEQ, BATCH = 96, 16, 3
SCALE = 1000.0


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _workloads(model, loss="mse", dtype="float32", ce_chunk=40, vocab=VOCAB, dim=16):
  mc = ModelConfig(name=model, vocab_size=vocab, dim=dim, depth=1, seq_len=SEQ, num_heads=2,
                   mlp_expansion=2, dtype=dtype)
  direct = Workload(mc, LossConfig(name=loss, impl="direct", ce_chunk=ce_chunk))
  factored = Workload(mc, LossConfig(name=loss, impl="factored", ce_chunk=ce_chunk))
  return direct, factored


def _batch(vocab=VOCAB, batch=BATCH, seed=1):
  tokens = jax.random.randint(jax.random.key(seed), (batch, SEQ), 0, vocab)
  return losses.next_token_split(tokens)


def _assert_grads_close(g_ref, g, rtol):
  """Per leaf, `atol = rtol · max(max|leaf|, 0.1 · max|all leaves|)`."""
  largest = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g_ref))
  for ref, got in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g)):
    scale = max(float(jnp.max(jnp.abs(ref))), 0.1 * largest)
    chex.assert_trees_all_close(got, ref, atol=rtol * scale, rtol=0.0)


def _compare(direct, factored, rtol, grad_rtol, seed=0):
  params = jax.jit(direct.init)(jax.random.key(seed))
  inputs, targets = _batch(direct.model_config.vocab_size)
  assert factored.head_form(targets) and not direct.head_form(targets)

  @jax.jit
  def evaluate(params):  # one compilation for both forms
    return [(w.per_token_loss(params, inputs, targets),
             jax.value_and_grad(w.loss)(params, inputs, targets)) for w in (direct, factored)]

  (ref_per_token, (ref_value, ref_grads)), (per_token, (value, grads)) = evaluate(params)
  chex.assert_shape(per_token, targets.shape)
  chex.assert_trees_all_close(per_token, ref_per_token, rtol=rtol)
  chex.assert_trees_all_close(value, ref_value, rtol=rtol)
  _assert_grads_close(ref_grads, grads, grad_rtol)


@pytest.mark.parametrize("model", MODELS)
def test_factored_mse_matches_direct_float64(model, x64):
  _compare(*_workloads(model, dtype="float64"), rtol=1e-10, grad_rtol=1e-10)


@pytest.mark.parametrize("model", MODELS)
def test_factored_mse_matches_direct_float32(model):
  _compare(*_workloads(model), rtol=2e-5, grad_rtol=1e-5)


def test_chunked_ce_workload_matches_direct():
  _compare(*_workloads("masked_mixer", loss="ce", ce_chunk=40), rtol=2e-6, grad_rtol=1e-5)


def test_factored_token_jacobian_matches_direct():
  """What the Newton-root variants differentiate: `∂ℓᵢ/∂W` per token, on lm_head."""
  direct, factored = _workloads("linear_mixer")
  params = jax.jit(direct.init)(jax.random.key(0))
  inputs, targets = _batch()
  assert factored.head_form(targets)
  jacobians = jax.jit(lambda p: [jax.jacrev(w.per_token_loss)(p, inputs, targets)["lm_head"]
                                 for w in (direct, factored)])
  _assert_grads_close(*jacobians(params), 1e-5)


def _head_problem(n=40, dim=12, vocab=30, seed=0, dtype=jnp.float32):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  h = jax.random.normal(k1, (n, dim), dtype)
  w = 0.3 * jax.random.normal(k2, (dim, vocab), dtype)
  y = jax.random.randint(k3, (n,), 0, vocab)
  return h, w, y


@pytest.mark.parametrize("chunk", [7, 30, 64])
def test_chunked_ce_matches_optax_value_and_grad(chunk):
  h, w, y = _head_problem()

  def reference(h, w):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h @ w, y))

  chunked = lambda h, w: jnp.mean(losses_chunked.ce_per_token(h, w, y, chunk))
  value, grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(h, w)
  ref_value, ref_grads = jax.value_and_grad(reference, argnums=(0, 1))(h, w)
  chex.assert_trees_all_close(value, ref_value, rtol=1e-6)
  chex.assert_trees_all_close(grads, ref_grads, rtol=1e-5, atol=1e-7)


@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(vocab=st.integers(1, 40), chunk=st.integers(1, 48), shift=st.floats(-80, 80))
def test_chunked_logsumexp_any_chunking(vocab, chunk, shift):
  """Any chunk size (ragged last block, one block, one column) and large logits."""
  h, w, _ = _head_problem(n=6, dim=5, vocab=vocab)
  h = h.at[:, 0].set(shift)
  chex.assert_trees_all_close(jax.jit(losses_chunked.logsumexp, static_argnums=2)(h, w, chunk),
                              jax.nn.logsumexp(h @ w, axis=-1), rtol=1e-5, atol=1e-5)


def test_chunked_ce_hessian_vector_product_matches_direct():
  """Forward-over-reverse (what `newton` uses) goes through the scan."""
  h, w, y = _head_problem()
  loss = lambda w: jnp.mean(losses_chunked.ce_per_token(h, w, y, 7))
  ref = lambda w: jnp.mean(losses.ce_per_token(h @ w, y))
  v = jax.random.normal(jax.random.key(5), w.shape)
  products = jax.jit(lambda w, v: (curvature.hvp(loss, w, v), curvature.hvp(ref, w, v)))
  chex.assert_trees_all_close(*products(w, v), rtol=1e-4, atol=1e-7)


def _largest_intermediate(fn, *args) -> int:
  """Size of the largest array any equation (nested jaxprs included) produces."""
  def walk(jaxpr):
    sizes = [0]
    for eqn in jaxpr.eqns:
      sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]
      for sub in jax_core.jaxprs_in_params(eqn.params):
        sizes.append(walk(sub))
    return max(sizes)
  return walk(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_no_tokens_by_vocab_array_in_factored_jaxpr(model, loss):
  vocab = 512
  direct, factored = _workloads(model, loss=loss, ce_chunk=64, vocab=vocab, dim=16)
  params = jax.eval_shape(direct.init, jax.random.key(0))
  inputs, targets = _batch(vocab)
  tokens_by_vocab = targets.size * vocab
  step = lambda w: jax.value_and_grad(w.loss)
  assert _largest_intermediate(step(direct), params, inputs, targets) >= tokens_by_vocab
  assert _largest_intermediate(step(factored), params, inputs, targets) < tokens_by_vocab
  per_token_grad = jax.grad(lambda p: jnp.sum(factored.per_token_loss(p, inputs, targets)))
  assert _largest_intermediate(per_token_grad, params) < tokens_by_vocab


def _near_optimum(noise, n=2048, dim=96, vocab=64, seed=0):
  """Features that nearly determine the target (`H = onehot(y) | 0 + noise`) and the lstsq W."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, vocab, n)
  h = noise * rng.normal(size=(n, dim))
  h[:, :vocab] += np.eye(vocab)[y]
  w = np.linalg.lstsq(h, SCALE * np.eye(vocab)[y], rcond=None)[0]
  h32, w32 = h.astype(np.float32), w.astype(np.float32)
  z = h32.astype(np.float64) @ w32.astype(np.float64)  # exact loss of the float32 inputs
  exact = np.mean((z - SCALE * np.eye(vocab)[y]) ** 2, axis=-1)
  norms = np.sum(z**2, axis=-1)
  return jnp.asarray(h32), jnp.asarray(w32), jnp.asarray(y), exact, norms


@pytest.mark.parametrize("noise", [0.3, 0.01])
def test_factored_mse_cancellation_near_optimum_float32(noise):
  h, w, y, exact, norms = _near_optimum(noise)
  vocab = w.shape[1]
  assert exact.mean() < 0.9 * SCALE**2 / vocab  # below the untrained s²/V
  per_token = np.asarray(losses_factored.mse_per_token(h, w, y, SCALE), np.float64)
  mean = float(losses_factored.mse_mean(h, w, y, SCALE))
  np.testing.assert_array_less(np.abs(per_token - exact), 2.0**-18 * (SCALE**2 + norms) / vocab)
  assert abs(mean - exact.mean()) < 2.0**-20 * (SCALE**2 + norms.mean()) / vocab
  # Gradient `2 (GW − C) / (nV)`: cancellation between terms of size `2 max|GW| / (nV)`.
  grad = jax.grad(losses_factored.mse_mean, argnums=1)(h, w, y, SCALE)
  h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
  residual = h64 @ w64 - SCALE * np.eye(vocab)[np.asarray(y)]
  exact_grad = 2.0 * h64.T @ residual / residual.size
  scale = 2.0 * np.max(np.abs(h64.T @ (h64 @ w64))) / residual.size
  assert np.max(np.abs(np.asarray(grad) - exact_grad)) < 2.0**-18 * scale


def test_factored_mse_near_optimum_float64_is_tight(x64):
  h, w, y, exact, _ = _near_optimum(0.01)
  h, w = h.astype(jnp.float64), w.astype(jnp.float64)
  chex.assert_trees_all_close(losses_factored.mse_per_token(h, w, y, SCALE), exact, rtol=1e-9)
  chex.assert_trees_all_close(losses_factored.mse_mean(h, w, y, SCALE), exact.mean(), rtol=1e-9)


def test_head_hessian_is_the_ggn(x64):
  """On lm_head the factored MSE is quadratic: its Hessian is the GGN `2/(nV) HᵀH ⊗ I`."""
  direct, factored = _workloads("linear_mixer", dtype="float64")
  params = jax.jit(direct.init)(jax.random.key(0))
  inputs, targets = _batch()
  h = direct.features_fn(params, inputs).reshape(-1, params["lm_head"]["kernel"].shape[0])
  v = jax.random.normal(jax.random.key(3), params["lm_head"]["kernel"].shape, jnp.float64)
  on_head = lambda fn: lambda w, *args: fn({**params, "lm_head": {"kernel": w}}, *args)
  hv, ggn_v = jax.jit(lambda w, v: (
      curvature.hvp(on_head(factored.loss), w, v, inputs, targets),
      curvature.ggn_vp(on_head(direct.logits_fn), direct.output_loss,
                       curvature.output_hessian_vp("mse"), w, v, inputs, targets)))(
                           params["lm_head"]["kernel"], v)
  closed_form = 2.0 / (h.shape[0] * VOCAB) * (h.T @ h) @ v
  chex.assert_trees_all_close(hv, closed_form, rtol=1e-9)
  chex.assert_trees_all_close(ggn_v, closed_form, rtol=1e-9)


def test_gauss_newton_step_same_with_factored_loss():
  """One train step of `gauss_newton` on lm_head: the same parameters under either impl."""
  config = OptimizerConfig(name="gauss_newton", params="lm_head", damping=1e-3, cg_iters=5)
  tokens = jax.random.randint(jax.random.key(1), (BATCH, SEQ), 0, VOCAB)
  results = []
  for workload in _workloads("linear_mixer"):
    params = jax.eval_shape(workload.init, jax.random.key(0))
    tx = registry.build_optimizer(config, workload, params)
    state = train_lib.init_state(workload, tx, seed=0, mesh=sharding.data_mesh())
    results.append(train_lib.make_train_step(workload, tx)(state, tokens))
  (direct_state, direct_metrics), (factored_state, factored_metrics) = results
  chex.assert_trees_all_close(factored_metrics["loss"], direct_metrics["loss"], rtol=1e-5)
  _assert_grads_close(direct_state.params, factored_state.params, 1e-5)
  assert float(direct_metrics["update_norm"]) > 0


def test_config_default_and_dispatch():
  assert LossConfig().impl == "factored"
  head_form = lambda name, impl, vocab=4096, chunk=1024, tokens=256, dim=128: (
      losses.uses_head_form(name, impl, vocab, chunk, tokens, dim))
  assert head_form("mse", "factored", vocab=64)
  assert not head_form("mse", "factored", tokens=100)  # fewer tokens than dim: logits cheaper
  assert not head_form("mse", "direct")
  assert head_form("ce", "factored")
  assert not head_form("ce", "factored", vocab=1024)  # one chunk: from logits
  assert not head_form("ce", "factored", chunk=0)
  with pytest.raises(ConfigError, match="--ce_chunk=-1 must be >= 0"):
    LossConfig(ce_chunk=-1).validate()
