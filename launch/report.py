"""Comparison tables and plots (matplotlib, headless)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("optimizer", "train_loss", "valid_loss", "steps_to_target", "seconds_to_target",
           "seconds_per_step", "compile_seconds", "diverged")


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return f"{value:.4g}" if math.isfinite(value) else str(value)
  return str(value)


def markdown_table(runs: list, columns=COLUMNS) -> str:
  """A markdown table with one row per run."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for run in runs:
    lines.append("| " + " | ".join(_cell(run.get(c)) for c in columns) + " |")
  return "\n".join(lines) + "\n"


def plot_curves(runs: list, path: str, title: str) -> None:
  """Loss against step and against seconds (log scale), one line per run."""
  fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
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
  for axis, xlabel in ((by_step, "step"), (by_time, "seconds (excluding compilation)")):
    axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("training loss")
    axis.grid(True, which="both", alpha=0.3)
  by_step.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
