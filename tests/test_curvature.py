"""Curvature products against dense references built with jax.hessian / jax.jacfwd (float64)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmopt.config import ConfigError, LossConfig, ModelConfig
from lmopt.optim import curvature
from lmopt.workload import Workload


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def tiny(model: str, loss: str = "mse", seed: int = 0):
  """`(workload, params, inputs, targets)` of a ~100-parameter float64 model."""
  cfg = ModelConfig(name=model, vocab_size=6, dim=4, depth=1, seq_len=4, num_heads=2,
                    mlp_expansion=1, dtype="float64")
  workload = Workload(cfg, LossConfig(name=loss, onehot_scale=3.0))

  @jax.jit
  def init(key):
    # Perturbed so that no weight sits at a special value (zero biases, unit LayerNorm scales).
    flat, unravel = ravel_pytree(workload.init(key))
    return unravel(flat + 0.3 * jax.random.normal(jax.random.fold_in(key, 1), flat.shape))

  params = init(jax.random.key(seed))
  tokens = jax.random.randint(jax.random.key(seed + 2), (2, 4), 0, 6)
  return workload, params, tokens, tokens[:, 1:]


def random_like(params, seed):
  flat, unravel = ravel_pytree(params)
  return unravel(jax.random.normal(jax.random.key(seed), flat.shape, flat.dtype))


def flat(tree):
  return ravel_pytree(tree)[0]


def dense_ggn(workload, params, inputs, targets):
  """`Jᵀ H_ℓ J` `[P, P]` from an explicit Jacobian and the dense Hessian of the mean loss."""
  x0, unravel = ravel_pytree(params)
  logits_of = lambda x: workload.logits_fn(unravel(x), inputs).reshape(-1)
  jac = jax.jacfwd(logits_of)(x0)
  z0 = logits_of(x0)
  shape = workload.logits_fn(params, inputs).shape
  mean_loss = lambda z: jnp.mean(workload.output_loss(z.reshape(shape), targets))
  return jac.T @ jax.hessian(mean_loss)(z0) @ jac


@pytest.mark.parametrize("model", ["masked_mixer", "transformer"])
def test_hvp_matches_dense_hessian(model):
  workload, params, inputs, targets = tiny(model, "ce")
  v = random_like(params, 7)
  hess = jax.jit(lambda p: curvature.dense_hessian(workload.loss, p, inputs, targets)[0])(params)
  expected = hess @ flat(v)
  hvp = jax.jit(lambda p, v: curvature.hvp(workload.loss, p, v, inputs, targets))
  np.testing.assert_allclose(flat(hvp(params, v)), expected, rtol=1e-9, atol=1e-11)

  @jax.jit
  def by_operator(p, v):
    operator = curvature.hessian_operator(workload.loss, p, inputs, targets)
    return operator.loss, operator.matvec(v)

  loss, hv = by_operator(params, v)
  np.testing.assert_allclose(flat(hv), expected, rtol=1e-9, atol=1e-11)
  np.testing.assert_allclose(loss, jax.jit(workload.loss)(params, inputs, targets), rtol=1e-12)


@pytest.mark.parametrize("model,loss", [("linear_mixer", "mse"), ("masked_mixer", "ce"),
                                        ("transformer", "ce")])
def test_ggn_vp_matches_dense_jt_h_j(model, loss):
  workload, params, inputs, targets = tiny(model, loss)
  v = random_like(params, 3)
  output_hvp = curvature.output_hessian_vp(loss)

  @jax.jit
  def products(p, v):
    operator = curvature.ggn_operator(workload.logits_fn, workload.output_loss, output_hvp, p,
                                      inputs, targets)
    one_shot = curvature.ggn_vp(workload.logits_fn, workload.output_loss, output_hvp, p, v,
                                inputs, targets)
    return one_shot, operator.matvec(v), operator.grad, jax.grad(workload.loss)(p, inputs, targets)

  one_shot, gv, grad, expected_grad = products(params, v)
  expected = jax.jit(lambda p: dense_ggn(workload, p, inputs, targets))(params) @ flat(v)
  np.testing.assert_allclose(flat(one_shot), expected, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(flat(gv), expected, rtol=1e-9, atol=1e-12)
  chex.assert_trees_all_close(grad, expected_grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_output_hessian_closed_form(loss):
  workload, params, inputs, targets = tiny("linear_mixer", loss)
  logits = jax.jit(workload.logits_fn)(params, inputs)
  u = jax.random.normal(jax.random.key(4), logits.shape)
  mean_loss = lambda z: jnp.mean(workload.output_loss(z, targets))
  dense = jax.jit(jax.hessian(mean_loss))(logits).reshape(logits.size, logits.size)
  expected = dense @ u.reshape(-1)
  got = jax.jit(curvature.output_hessian_vp(loss))(logits, targets, u)
  chex.assert_shape(got, logits.shape)
  np.testing.assert_allclose(got.reshape(-1), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("model,loss", [("linear_mixer", "mse"), ("masked_mixer", "ce")])
def test_products_are_symmetric_and_ggn_psd(model, loss):
  workload, params, inputs, targets = tiny(model, loss)
  dot = lambda a, b: flat(a) @ flat(b)

  @jax.jit
  def forms(p, u, v):
    hess = curvature.hessian_operator(workload.loss, p, inputs, targets)
    ggn = curvature.ggn_operator(workload.logits_fn, workload.output_loss,
                                 curvature.output_hessian_vp(loss), p, inputs, targets)
    return [(dot(u, op.matvec(v)), dot(v, op.matvec(u))) for op in (hess, ggn)], dot(
        v, ggn.matvec(v))

  for seed in range(4):
    pairs, vgv = forms(params, random_like(params, 10 + seed), random_like(params, 20 + seed))
    for uv, vu in pairs:
      np.testing.assert_allclose(uv, vu, rtol=1e-9, atol=1e-12)
    assert vgv >= -1e-12


def test_ggn_equals_hessian_for_linear_model_under_squared_loss():
  workload, params, inputs, targets = tiny("linear_mixer", "mse")
  frozen = {k: v for k, v in params.items() if k != "lm_head"}
  head = {"lm_head": params["lm_head"]}
  logits_fn = lambda p, x: workload.logits_fn({**frozen, **p}, x)
  loss_fn = lambda p, x, y: workload.loss({**frozen, **p}, x, y)
  v = random_like(head, 5)
  gv, hv = jax.jit(lambda p, v: (
      curvature.ggn_vp(logits_fn, workload.output_loss, curvature.mse_output_hvp, p, v, inputs,
                       targets),
      curvature.hvp(loss_fn, p, v, inputs, targets)))(head, v)
  chex.assert_trees_all_close(gv, hv, rtol=1e-10)


def test_dense_hessian_guard():
  workload, params, inputs, targets = tiny("linear_mixer")
  with pytest.raises(ConfigError, match="dense Hessian of .* exceeds the limit of 10"):
    curvature.dense_hessian(workload.loss, params, inputs, targets, max_params=10)


def test_hutchinson_diagonal():
  a = jax.random.normal(jax.random.key(0), (5, 5))
  a = a @ a.T + 5 * jnp.eye(5)
  matvec = lambda v: {"w": a @ v["w"]}
  like = {"w": jnp.zeros(5)}
  diagonal = lambda v: {"w": jnp.diag(a) * v["w"]}
  exact = curvature.hutchinson_diagonal(diagonal, like, jax.random.key(1), samples=1)
  np.testing.assert_allclose(exact["w"], jnp.diag(a), rtol=1e-12)  # z ⊙ D z = D for z = ±1
  estimate = jax.jit(lambda k: curvature.hutchinson_diagonal(matvec, like, k, samples=4000))(
      jax.random.key(2))
  np.testing.assert_allclose(estimate["w"], jnp.diag(a), rtol=0.1)
