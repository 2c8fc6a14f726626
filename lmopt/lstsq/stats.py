"""Streaming sufficient statistics of linear least squares against scaled one-hots.

For features `X` `[N, D]` and targets `Y = s * onehot(y)` `[N, V]`, every quantity the
solvers and the MSE need is a sum over rows:

* `xtx = XᵀX` `[D, D]`, `xty = XᵀY` `[D, V]` (a scatter-add of feature rows into the
  target columns; no `[N, V]` one-hot is built), `yty = tr(YᵀY) = s² N`, `count = N`.

Memory is `O(D² + D V)` whatever the number of rows, and statistics of disjoint batches
add (`merge`), so they stream over a data set and reduce over devices (`sharding.py`).
The per-token MSE of any `W` `[D, V]` follows without another pass over the data:
`‖XW − Y‖² / (N V) = (tr(WᵀGW) − 2 tr(WᵀC) + yty) / (N V)` (`loss_from_stats`).

Numerics: products use `Precision.HIGHEST` (no TF32/bf16 passes on accelerators) and
accumulate in the statistics' dtype. Use float64 (needs `jax_enable_x64`) or the
Kahan-compensated float32 sum (`CompensatedStats`), which keeps the error of summing k
batches at O(eps) instead of O(k eps); the error inside one batch's matmul remains.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


class GramStats(NamedTuple):
  """Sums over rows: `xtx` `[D, D]`, `xty` `[D, V]`, `yty` `[]`, `count` `[]` (all one dtype)."""

  xtx: jax.Array
  xty: jax.Array
  yty: jax.Array
  count: jax.Array

  @property
  def dim(self) -> int:
    return self.xty.shape[0]

  @property
  def vocab(self) -> int:
    return self.xty.shape[1]


class CompensatedStats(NamedTuple):
  """Kahan summation state: the running `total` and the lost low-order `compensation`."""

  total: GramStats
  compensation: GramStats


def zeros(dim: int, vocab: int, dtype=jnp.float32) -> GramStats:
  return GramStats(jnp.zeros((dim, dim), dtype), jnp.zeros((dim, vocab), dtype),
                   jnp.zeros((), dtype), jnp.zeros((), dtype))


def onehot_project(a_NxK, y_N, vocab: int, onehot_scale: float):
  """`Aᵀ (s * onehot(y))` `[K, V]` by a scatter-add of the rows of `A` into columns `y`."""
  scattered_VxK = jnp.zeros((vocab, a_NxK.shape[1]), a_NxK.dtype).at[y_N].add(a_NxK)
  return onehot_scale * scattered_VxK.T


def batch_stats(x_NxD, y_N, vocab: int, onehot_scale: float, dtype=None,
                mask_N: jax.Array | None = None) -> GramStats:
  """Statistics of one batch, computed in `dtype` (default: the features' dtype).

  `mask_N` (0/1) drops padded rows. Target ids must lie in `[0, vocab)`.
  """
  dtype = dtype or x_NxD.dtype
  x_NxD = x_NxD.astype(dtype)
  if mask_N is None:
    count = jnp.asarray(x_NxD.shape[0], dtype)
  else:
    mask_N = mask_N.astype(dtype)
    x_NxD = x_NxD * mask_N[:, None]
    count = jnp.sum(mask_N)
  xtx = jnp.matmul(x_NxD.T, x_NxD, precision=HIGHEST)
  xty = onehot_project(x_NxD, y_N, vocab, onehot_scale)
  return GramStats(xtx, xty, jnp.asarray(onehot_scale**2, dtype) * count, count)


def merge(a: GramStats, b: GramStats) -> GramStats:
  """Statistics of the union of two disjoint row sets."""
  return jax.tree.map(jnp.add, a, b)


def accumulate(stats: GramStats, x_NxD, y_N, onehot_scale: float,
               mask_N: jax.Array | None = None) -> GramStats:
  """`stats` plus one batch, in the dtype of `stats`."""
  return merge(stats, batch_stats(x_NxD, y_N, stats.vocab, onehot_scale, stats.xtx.dtype, mask_N))


def compensated_zeros(dim: int, vocab: int, dtype=jnp.float32) -> CompensatedStats:
  return CompensatedStats(zeros(dim, vocab, dtype), zeros(dim, vocab, dtype))


def add_compensated(state: CompensatedStats, increment: GramStats) -> CompensatedStats:
  """Kahan summation: adds `increment` (e.g. a batch's or a device's statistics) to `state`."""
  old = state.total
  corrected = jax.tree.map(jnp.subtract, increment, state.compensation)
  total = merge(old, corrected)
  lost = jax.tree.map(lambda new, prev, c: (new - prev) - c, total, old, corrected)
  return CompensatedStats(total, lost)


def accumulate_compensated(state: CompensatedStats, x_NxD, y_N, onehot_scale: float,
                           mask_N: jax.Array | None = None) -> CompensatedStats:
  """Kahan-compensated `accumulate` of one batch."""
  dtype = state.total.xtx.dtype
  return add_compensated(state, batch_stats(x_NxD, y_N, state.total.vocab, onehot_scale, dtype,
                                            mask_N))


def sum_squared_error(stats: GramStats, w_DxV):
  """`‖XW − Y‖²_F = tr(WᵀGW) − 2 tr(WᵀC) + tr(YᵀY)` in the statistics' dtype."""
  w_DxV = w_DxV.astype(stats.xtx.dtype)
  gw_DxV = jnp.matmul(stats.xtx, w_DxV, precision=HIGHEST)
  return jnp.sum(w_DxV * gw_DxV) - 2.0 * jnp.sum(w_DxV * stats.xty) + stats.yty


def loss_from_stats(stats: GramStats, w_DxV):
  """Per-token MSE (mean over vocab and rows) of `W`: `sum_squared_error / (N V)`."""
  return sum_squared_error(stats, w_DxV) / (stats.count * stats.vocab)
