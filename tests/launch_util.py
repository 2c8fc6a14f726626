"""Helpers for launcher tests: tiny flag sets, in-process runs, directory snapshots."""

import os
import subprocess
import sys

import pytest
from absl import flags

TINY = ["--builtin_stories=60", "--vocab_size=300", "--dim=16", "--depth=1", "--seq_len=16",
        "--batch_size=8"]


def run_in_process(main, args):
  """Runs a launcher's main through `launch.flags.run`; returns the exit code (0 if none)."""
  from launch import flags as launch_flags
  flags.FLAGS.unparse_flags()
  try:
    launch_flags.run(main, argv=["prog", *args])
  except SystemExit as e:
    return e.code or 0
  finally:
    flags.FLAGS.unparse_flags()
  return 0


def run_module(module, args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False,
                        timeout=timeout, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def snapshot(path):
  """{relative path: (size, mtime)} of every file under `path`."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      st = os.stat(full)
      out[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns)
  return out


def assert_one_line_error(capsys, code, *fragments):
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2, err
  assert len(err) == 1 and err[0].startswith("error: "), err
  for fragment in fragments:
    assert fragment in err[0], err


__all__ = ["TINY", "assert_one_line_error", "pytest", "run_in_process", "run_module", "snapshot"]
