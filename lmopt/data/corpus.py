"""Corpus loading: `--dataset` names a list of documents (strings).

- `builtin`: `builtin_stories` generated stories (`builtin.generate_stories`, seeded).
- `text:PATH`: one UTF-8 file (one document), or a folder whose `.txt` files (searched
  recursively, read in sorted path order) are one document each.
- `hf:NAME` / `hf:NAME:CONFIG`: the `train` split of a Hugging Face dataset, its `text`
  column (needs `pip install 'lmopt[hf]'`). `hf:BUILDER:FILES` with BUILDER one of
  `json`, `csv`, `parquet`, `arrow`, `text` reads local files through the same library,
  e.g. `hf:json:/data/stories.jsonl` (FILES may be a glob).
"""

import pathlib

from lmopt.config import ConfigError, require
from lmopt.data.builtin import generate_stories

HF_FILE_BUILDERS = ("json", "csv", "parquet", "arrow", "text")


def _read_utf8(path: pathlib.Path, dataset: str) -> str:
  try:
    return path.read_bytes().decode("utf-8")
  except UnicodeDecodeError as e:
    raise ConfigError(f"--dataset={dataset}: {path} is not UTF-8 text (bad byte at offset "
                      f"{e.start})") from e
  except OSError as e:
    raise ConfigError(f"--dataset={dataset}: cannot read {path} ({e.strerror})") from e


def load_text_path(path: str, dataset: str) -> list[str]:
  """Documents of a UTF-8 file or of a folder of `.txt` files (`dataset` names the flag value)."""
  root = pathlib.Path(path)
  require(bool(path) and root.exists(), f"--dataset={dataset}: no such file or folder {path!r}")
  if root.is_dir():
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    require(bool(files), f"--dataset={dataset}: the folder {path} holds no .txt files")
  else:
    files = [root]
  texts = [_read_utf8(p, dataset) for p in files]
  require(any(texts), f"--dataset={dataset}: {path} holds no text (all files are empty)")
  return texts


def _import_datasets(dataset: str):
  try:
    import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConfigError(f"--dataset={dataset} needs the Hugging Face datasets library: "
                      "pip install 'lmopt[hf]'") from e
  return datasets


def load_hf(spec: str, dataset: str) -> list[str]:
  """`text` column of the train split of `spec` (`NAME`, `NAME:CONFIG` or `BUILDER:FILES`)."""
  datasets = _import_datasets(dataset)
  name, _, rest = spec.partition(":")
  require(bool(name), f"--dataset={dataset}: give a dataset name after hf:")
  if name in HF_FILE_BUILDERS:
    require(bool(rest), f"--dataset={dataset}: give the data files after hf:{name}:")
    kwargs = {"path": name, "data_files": rest}
  else:
    kwargs = {"path": name, "name": rest or None}
  try:
    table = datasets.load_dataset(**kwargs, split="train")
  except Exception as e:  # network, missing files, bad format: one line for the user
    first = (str(e).strip().splitlines() or [""])[0]
    raise ConfigError(f"--dataset={dataset} could not be loaded: {type(e).__name__}: "
                      f"{first}") from e
  require("text" in table.column_names, f"--dataset={dataset} has no 'text' column "
          f"(columns: {', '.join(table.column_names)})")
  texts = [t for t in table["text"] if t]
  require(bool(texts), f"--dataset={dataset}: the 'text' column is empty")
  return texts


def load_texts(dataset: str, seed: int, builtin_stories: int) -> list[str]:
  """The documents named by `--dataset` (`seed`/`builtin_stories` apply to `builtin`)."""
  kind, _, rest = dataset.partition(":")
  if dataset == "builtin":
    require(builtin_stories > 0, f"--builtin_stories={builtin_stories} must be positive")
    require(seed >= 0, f"--seed={seed} must be >= 0")
    return generate_stories(builtin_stories, seed)
  if kind == "text":
    return load_text_path(rest, dataset)
  if kind == "hf":
    return load_hf(rest, dataset)
  raise ConfigError(f"--dataset={dataset!r} is not accepted; use builtin, text:PATH or hf:NAME")
