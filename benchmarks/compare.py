"""The main job as a benchmark: `launch.compare` with its defaults, table recorded.

  python -m benchmarks.compare            # exactly `python -m launch.compare` (the Quickstart job)
  python -m benchmarks.compare --small    # two steps of each optimizer on a tiny model
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks import common
from lmopt import io

SMALL = ["--builtin_stories=60", "--vocab_size=300", "--dim=16", "--depth=1", "--seq_len=16",
         "--batch_size=8", "--steps=2"]


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv)
  with tempfile.TemporaryDirectory() as tmp:
    flags = [f"--workdir={tmp}/run"] + (SMALL if args.small else [])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "launch.compare", *flags], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    runs = io.read_json(os.path.join(tmp, "run", "results.json"))
    table = pathlib.Path(tmp, "run", "results.md").read_text()
  rows = [{k: r[k] for k in ("optimizer", "train_loss", "valid_loss", "seconds_per_step",
                             "compile_seconds", "diverged", "steps")} for r in runs]
  text = (f"`python -m launch.compare`{' (tiny flags)' if args.small else ''} end to end: "
          f"{wall:.0f} s wall including data, compilation and evaluation.\n\n{table}")
  common.save("compare", rows, text, "python -m benchmarks.compare" +
              (" --small" if args.small else ""), {"wall_seconds": wall})


if __name__ == "__main__":
  main()
