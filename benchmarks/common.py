"""What every benchmark script shares: timing, the machine line, result files."""

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import jax

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def parse_args(description: str, argv=None) -> argparse.Namespace:
  """`--small` (seconds on 2 CPUs) or the full sizes; `--repeats` for timings."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--small", action="store_true", help="tiny sizes, for a quick check")
  parser.add_argument("--repeats", type=int, default=5, help="timed repeats after warm-up")
  return parser.parse_args(argv)


def median_seconds(fn, *args, repeats: int = 5) -> float:
  """Median wall time of `fn(*args)` (blocked until ready) after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def machine() -> str:
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__} on {len(devices)} {jax.default_backend()} device(s) "
          f"({', '.join(kinds)})")


def save(topic: str, rows: list, table_md: str, command: str, extra: dict | None = None) -> None:
  """Writes `results/<topic>.json` and `.md` (table + command + machine + date) and prints it."""
  os.makedirs(RESULTS, exist_ok=True)
  stamp = datetime.date.today().isoformat()
  record = {"topic": topic, "command": command, "machine": machine(), "date": stamp,
            "rows": rows, **(extra or {})}
  with open(os.path.join(RESULTS, f"{topic}.json"), "w") as f:
    json.dump(record, f, indent=2)
  text = f"Command: `{command}`  \nMachine: {machine()}; {stamp}\n\n{table_md}"
  with open(os.path.join(RESULTS, f"{topic}.md"), "w") as f:
    f.write(text)
  print(text)


def markdown(rows: list, columns: list) -> str:
  """A markdown table of dict rows (floats to 4 significant digits)."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c, "-")) for c in columns) + " |" for r in rows]
  return "\n".join(lines) + "\n"
