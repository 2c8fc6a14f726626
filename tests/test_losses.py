"""Losses: gather forms against one-hot references, residual form, next-token shift."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from lmopt import losses


def _logits_and_targets(vocab=11, shape=(3, 5)):
  logits = 3.0 * jax.random.normal(jax.random.key(0), (*shape, vocab))
  targets = jax.random.randint(jax.random.key(1), shape, 0, vocab)
  return logits, targets


def test_mse_matches_one_hot_reference():
  logits, targets = _logits_and_targets()
  reference = jnp.mean((logits - 7.0 * jax.nn.one_hot(targets, 11)) ** 2, axis=-1)
  chex.assert_trees_all_close(losses.mse_per_token(logits, targets, 7.0), reference, rtol=1e-5)


def test_mse_of_zero_output_is_scale_squared_over_vocab():
  targets = jnp.array([[0, 3]])
  value = losses.mse_per_token(jnp.zeros((1, 2, 4096)), targets, 1000.0)
  chex.assert_trees_all_close(value, jnp.full((1, 2), 1e6 / 4096), rtol=1e-6)


def test_ce_matches_optax():
  logits, targets = _logits_and_targets()
  chex.assert_trees_all_close(
      losses.ce_per_token(logits, targets),
      optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-5)


def test_residuals_give_the_mse():
  logits, targets = _logits_and_targets()
  r = losses.mse_residuals(logits, targets, 7.0)
  chex.assert_shape(r, logits.shape)
  chex.assert_trees_all_close(jnp.sum(r**2) / r.size,
                              jnp.mean(losses.mse_per_token(logits, targets, 7.0)), rtol=1e-5)


def test_next_token_split():
  tokens = jnp.arange(12).reshape(2, 6)
  inputs, targets = losses.next_token_split(tokens)
  chex.assert_trees_all_equal(inputs, tokens)
  chex.assert_trees_all_equal(targets, tokens[:, 1:])


def test_unknown_loss_is_rejected():
  logits, targets = _logits_and_targets()
  with pytest.raises(ValueError, match="'hinge'; use mse or ce"):
    losses.per_token_output_loss("hinge", logits, targets, 1.0)
