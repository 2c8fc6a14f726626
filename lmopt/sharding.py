"""Data-parallel layout: a 1-D mesh over all local devices with axis `data`.

Batches are split along their first axis, parameters and optimizer state are
replicated. One device is the same code path with a mesh of size one.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmopt.config import ConfigError

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ConfigError(f"--batch_size={batch_size} must be a multiple of the {mesh.size} "
                      "local devices")


def put_batch(tokens_BxL: np.ndarray, mesh: Mesh) -> jax.Array:
  """Places a host batch on the mesh, split along the batch axis."""
  check_divisible(tokens_BxL.shape[0], mesh)
  return jax.device_put(tokens_BxL, batch_sharded(mesh))


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
