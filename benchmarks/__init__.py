"""Speed and convergence measurements; `python -m benchmarks.run` regenerates the README."""
