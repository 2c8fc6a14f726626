"""Markdown tables and loss-curve plots for the launchers.

Figures use matplotlib's object API (`Figure` renders with the Agg canvas), so importing
this module never changes the global backend of a notebook that imports it.
"""

import math

from matplotlib.figure import Figure

COLUMNS = ("optimizer", "train_loss", "valid_loss", "steps_to_target", "seconds_to_target",
           "seconds_per_step", "compile_seconds", "diverged")


def cell(value) -> str:
  """One table cell: numbers to 4 significant digits, booleans as yes/no, None as `-`."""
  if value is None:
    return "-"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:.4g}" if math.isfinite(value) else str(value)
  return str(value)


def table_lines(rows: list, columns) -> list:
  """Markdown table lines, one row per dict in `rows` (missing keys show as `-`)."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  return lines + ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]


def markdown_table(runs: list, columns=COLUMNS) -> str:
  """A markdown table with one row per run."""
  return "\n".join(table_lines(runs, columns)) + "\n"


def plot_curves(runs: list, path: str, title: str) -> None:
  """Loss against step and against seconds (log scale), one line per run."""
  fig = Figure(figsize=(12, 4.5))
  by_step, by_time = fig.subplots(1, 2)
  for run in runs:
    curve = run["curve"]
    label = run["optimizer"] + (" (diverged)" if run["diverged"] else "")
    finite = [(s, t, l) for s, t, l in zip(curve["step"], curve["seconds"], curve["loss"])
              if math.isfinite(l) and l > 0]
    if not finite:
      continue
    steps, seconds, losses = zip(*finite)
    by_step.plot(steps, losses, marker="." if len(steps) < 30 else None, label=label)
    by_time.plot(seconds, losses, marker="." if len(steps) < 30 else None, label=label)
  by_time.set_xscale("symlog", linthresh=1e-2)  # methods differ by orders of magnitude in time
  for axis, xlabel in ((by_step, "step"), (by_time, "seconds (excluding compilation)")):
    axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("training loss")
    axis.grid(True, which="both", alpha=0.3)
  by_step.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
