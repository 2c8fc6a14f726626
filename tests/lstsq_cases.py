"""Least-squares test problems shared by the tests/test_lstsq*.py files (numpy, float64)."""

import numpy as np


def dense_targets(y_N, vocab, scale):
  y_NxV = np.zeros((len(y_N), vocab))
  y_NxV[np.arange(len(y_N)), y_N] = scale
  return y_NxV


def conditioned_features(rows, dim, cond, seed=0):
  """`X = U diag(logspace(0, -log10 cond)) Vᵀ` `[rows, dim]` (exactly float32-representable)."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(rows, min(rows, dim))))
  v, _ = np.linalg.qr(rng.normal(size=(dim, min(rows, dim))))
  x = (u * np.logspace(0.0, -np.log10(cond), min(rows, dim))) @ v.T
  return x.astype(np.float32).astype(np.float64)


def correlated_targets(x_NxD, vocab, seed=0):
  """Target ids that depend on the features, so the fit matters."""
  rng = np.random.default_rng(seed + 1)
  scores = 50.0 * x_NxD @ rng.normal(size=(x_NxD.shape[1], vocab))
  return np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)


def reference(x_NxD, y_N, vocab, scale):
  """numpy's minimum-norm least-squares solution `[D, V]` and its per-token MSE."""
  y_NxV = dense_targets(y_N, vocab, scale)
  w = np.linalg.lstsq(x_NxD, y_NxV, rcond=None)[0]
  return w, mse(x_NxD, w, y_N, vocab, scale)


def mse(x_NxD, w_DxV, y_N, vocab, scale):
  """Per-token MSE in float64."""
  diff = np.asarray(x_NxD, np.float64) @ np.asarray(w_DxV, np.float64)
  return float(np.mean((diff - dense_targets(y_N, vocab, scale)) ** 2))


def rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
