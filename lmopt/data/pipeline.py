"""Documents -> token ids -> packed windows -> seeded train/validation batches.

All documents are encoded and joined as `doc_0 EOS doc_1 EOS ...`, cut into
non-overlapping `seq_len` windows (the tail shorter than a window is dropped), and the
windows are split at random (by `seed`) into disjoint train and validation sets.
`Batches.batch(step)` is a pure function of `(seed, step)`: epoch `e` visits the
training windows in the order `np.random.default_rng([seed, e]).permutation`, so a run
resumed at step k sees exactly the batches of an uninterrupted run. Nothing is written
to disk here: a newly trained BPE tokenizer is saved only by `Data.save_tokenizer`.
"""

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from lmopt.config import DataConfig, require
from lmopt.data.corpus import load_texts
from lmopt.data.tokenizer import MIN_VOCAB, BpeTokenizer, ByteTokenizer, Tokenizer

TOKENIZER_FILE = "tokenizer.json"
_SPLIT_STREAM = (0x5911, 1)  # appended to the seed: split draws apart from epoch draws


def tokenizer_path(workdir: str) -> str:
  return os.path.join(workdir, TOKENIZER_FILE)


def build_tokenizer(config: DataConfig, workdir: str | None = None,
                    texts: Sequence[str] | None = None) -> tuple[Tokenizer, bool]:
  """Returns `(tokenizer, trained)`; `trained` means it is new and not yet saved.

  `byte` needs `vocab_size >= 257`. `bpe` loads `workdir/tokenizer.json` when present
  (its size must equal `vocab_size`), else trains on `texts` (loaded from the config
  when not given).
  """
  require(config.vocab_size >= MIN_VOCAB,
          f"--vocab_size={config.vocab_size} is too small for --tokenizer={config.tokenizer}; "
          f"it needs at least {MIN_VOCAB} (256 bytes + end-of-text)")
  if config.tokenizer == "byte":
    return ByteTokenizer(), False
  path = tokenizer_path(workdir) if workdir else None
  if path and os.path.exists(path):
    tokenizer = BpeTokenizer.load(path)
    require(tokenizer.vocab_size == config.vocab_size,
            f"--vocab_size={config.vocab_size} does not match the {tokenizer.vocab_size} ids of "
            f"{path}; use the same --vocab_size or a fresh --workdir")
    return tokenizer, False
  if texts is None:
    texts = load_texts(config.dataset, config.seed, config.builtin_stories)
  return BpeTokenizer.train(texts, config.vocab_size), True


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
  """int32 `[T]`: every document followed by `eos_id`."""
  eos = np.array([tokenizer.eos_id], dtype=np.int32)
  parts = []
  for ids in tokenizer.encode_batch(texts):
    parts += [ids, eos]
  return np.concatenate(parts).astype(np.int32, copy=False)


def check_token_range(tokens: np.ndarray, vocab_size: int) -> None:
  """Raises `ConfigError` naming `--vocab_size` unless every id lies in `[0, vocab_size)`."""
  if tokens.size:
    low, high = int(tokens.min()), int(tokens.max())
    require(low >= 0, f"token id {low} is negative; token ids must lie in [0, --vocab_size)")
    require(high < vocab_size, f"--vocab_size={vocab_size} is too small for the data: token id "
            f"{high} occurs; use --vocab_size>={high + 1}")


def pack(tokens: np.ndarray, seq_len: int) -> np.ndarray:
  """int32 `[N, seq_len]` non-overlapping windows, N = len(tokens) // seq_len."""
  n = len(tokens) // seq_len
  return np.ascontiguousarray(tokens[:n * seq_len], dtype=np.int32).reshape(n, seq_len)


def split_windows(num_windows: int, valid_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Sorted disjoint `(train_index, valid_index)` covering `range(num_windows)`.

  `round(valid_fraction * num_windows)` windows (at least 1) validate, chosen by `seed`.
  """
  num_valid = max(1, round(valid_fraction * num_windows))
  require(num_windows - num_valid >= 1,
          f"--seq_len is too long for this corpus: it gives {num_windows} window(s), and at least "
          "2 are needed (1 train + 1 validation); lower --seq_len or use more data")
  order = np.random.default_rng([seed, *_SPLIT_STREAM]).permutation(num_windows)
  return np.sort(order[num_valid:]), np.sort(order[:num_valid])


class Batches:
  """Seeded training batches and the validation windows.

  `batch(step)` -> int32 `[batch_size, seq_len]`, windows `perm_e[j*B:(j+1)*B]` with
  `e, j = divmod(step, num_train // B)` and `perm_e` from `default_rng([seed, e])`
  (each epoch drops `num_train % B` windows). `batch_size=0`: all training windows at
  every step.
  """

  def __init__(self, train: np.ndarray, valid: np.ndarray, batch_size: int, seed: int):
    require(batch_size <= len(train),
            f"--batch_size={batch_size} is larger than the {len(train)} training windows; lower "
            "--batch_size (0 = full batch) or --seq_len, or use more data")
    self._train, self._valid = train.view(), valid.view()
    self._train.flags.writeable = False  # batches may be the stored array itself
    self._valid.flags.writeable = False
    self.batch_size = batch_size or len(train)
    self.seed = seed
    self.num_train = len(train)
    self.steps_per_epoch = self.num_train // self.batch_size
    self._epoch, self._perm = -1, None  # permutation of the last epoch asked for

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._epoch = epoch
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_train)
    return self._perm

  def batch(self, step: int) -> np.ndarray:
    """int32 `[batch_size, seq_len]` for `step >= 0`."""
    if step < 0:
      raise ValueError(f"step {step} must be >= 0")
    if self.batch_size == self.num_train:
      return self._train
    epoch, j = divmod(step, self.steps_per_epoch)
    index = self._permutation(epoch)[j * self.batch_size:(j + 1) * self.batch_size]
    return self._train[index]

  def valid_tokens(self, max_windows: int | None = None) -> np.ndarray:
    """int32 `[min(num_valid, max_windows), seq_len]`: the first validation windows."""
    return self._valid if max_windows is None else self._valid[:max_windows]


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
  """Everything the runner needs; `tokenizer_trained` means `save_tokenizer` has work."""

  tokenizer: Tokenizer
  train: np.ndarray  # int32 [num_train, seq_len]
  valid: np.ndarray  # int32 [num_valid, seq_len]
  batches: Batches
  num_documents: int
  num_tokens: int
  tokenizer_trained: bool

  def save_tokenizer(self, workdir: str) -> str | None:
    """Writes a newly trained BPE tokenizer to `workdir/tokenizer.json`; returns the path."""
    if not self.tokenizer_trained:
      return None
    path = tokenizer_path(workdir)
    self.tokenizer.save(path)
    return path


def load_data(config: DataConfig, workdir: str | None = None) -> Data:
  """Corpus -> tokenizer -> windows -> split -> batches; raises `ConfigError` on bad input."""
  config.validate()
  texts = load_texts(config.dataset, config.seed, config.builtin_stories)
  tokenizer, trained = build_tokenizer(config, workdir, texts)
  tokens = encode_documents(tokenizer, texts)
  check_token_range(tokens, config.vocab_size)
  windows = pack(tokens, config.seq_len)
  train_index, valid_index = split_windows(len(windows), config.valid_fraction, config.seed)
  train, valid = windows[train_index], windows[valid_index]
  batches = Batches(train, valid, config.batch_size, config.seed)
  return Data(tokenizer, train, valid, batches, len(texts), len(tokens), trained)
