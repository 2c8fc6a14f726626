"""Gram statistics accumulated over a data-parallel mesh (axis `data`).

Rows are split over the devices of a 1-D `Mesh`; each device forms the statistics of
its rows (`stats.batch_stats`) and one `psum` over `data` adds them, so every device
ends with the same replicated `GramStats`. The mesh is `lmopt.sharding.data_mesh()`; the
code is identical on 1 or N devices; row counts that do not divide evenly are zero-padded
and masked.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from lmopt.lstsq import stats as stats_lib
from lmopt.sharding import DATA_AXIS, batch_sharded, replicated


def pad_rows(x_NxD, y_N, multiple: int):
  """Zero-pads rows to a multiple of `multiple`; returns `(x, y, mask_N)` (mask 1 on real rows)."""
  rows = x_NxD.shape[0]
  pad = (-rows) % multiple
  mask_N = jnp.concatenate([jnp.ones((rows,), x_NxD.dtype), jnp.zeros((pad,), x_NxD.dtype)])
  return (jnp.pad(x_NxD, ((0, pad), (0, 0))), jnp.pad(y_N, (0, pad)), mask_N)


def make_stats_fn(mesh: Mesh, vocab: int, onehot_scale: float,
                  dtype=jnp.float32) -> Callable[..., stats_lib.GramStats]:
  """Jitted `fn(x_NxD, y_N, mask_N) -> GramStats` (replicated) with rows sharded on `data`.

  `N` must be a multiple of the mesh size (`pad_rows`).
  """
  rows = PartitionSpec(DATA_AXIS)

  def local(x_NxD, y_N, mask_N):
    part = stats_lib.batch_stats(x_NxD, y_N, vocab, onehot_scale, dtype, mask_N)
    return jax.lax.psum(part, DATA_AXIS)

  mapped = jax.shard_map(local, mesh=mesh, in_specs=(rows, rows, rows),
                         out_specs=PartitionSpec())
  return jax.jit(mapped, in_shardings=(batch_sharded(mesh),) * 3, out_shardings=replicated(mesh))


def sharded_batch_stats(mesh: Mesh, x_NxD, y_N, vocab: int, onehot_scale: float,
                        dtype=jnp.float32) -> stats_lib.GramStats:
  """Statistics of all rows, computed across the mesh (convenience: pads, then reduces)."""
  x_NxD, y_N, mask_N = pad_rows(x_NxD, y_N, mesh.size)
  return make_stats_fn(mesh, vocab, onehot_scale, dtype)(x_NxD, y_N, mask_N)
