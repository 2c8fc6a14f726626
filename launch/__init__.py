"""absl-flag launchers: `python -m launch.<name>` (train, solve, compare, analyze)."""
