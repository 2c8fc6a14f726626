"""The one small I/O layer: workdir checks, atomic JSON, metrics lines, checkpoints.

Launchers validate everything before the first write, so a bad invocation leaves
the workdir untouched; files are written to a temporary name and renamed, so no
partial file is ever left behind.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from lmopt.config import ConfigError

CHECKPOINTS = "checkpoints"


def check_workdir(path: str) -> None:
  """Raises ConfigError unless `path` is (or can be created as) a writable directory."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={path} exists and is not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={path} is not writable (nearest existing parent: {parent})")


def existing_outputs(workdir: str, names: Iterable[str]) -> list:
  return [n for n in names if os.path.exists(os.path.join(workdir, n))]


def remove_outputs(workdir: str, names: Iterable[str]) -> None:
  for name in existing_outputs(workdir, names):
    target = os.path.join(workdir, name)
    shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)


def _to_builtin(x: Any):
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
    return np.asarray(x).tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def write_text_atomic(path: str, text: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
    f.write(text)
  os.replace(f.name, path)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically (numpy/jax scalars become numbers)."""
  write_text_atomic(path, json.dumps(obj, indent=2, default=_to_builtin, allow_nan=True) + "\n")


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


class MetricsWriter:
  """Appends one JSON object per line to `metrics.jsonl`.

  On resume, `truncate_after(step)` drops lines an interrupted run wrote past the
  restored checkpoint, so the file always describes one consistent run.
  """

  def __init__(self, path: str):
    self.path = path

  def truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(self.path, "".join(kept))

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record, default=_to_builtin) + "\n")


def checkpoint_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """Orbax manager over `workdir/checkpoints` (StandardSave/StandardRestore of a pytree)."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINTS),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_state):
  """The latest checkpoint restored into the structure/shardings of `abstract_state`."""
  step = manager.latest_step()
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
