"""Tokenizers: UTF-8 bytes, or byte-level BPE trained locally with the `tokenizers` library.

Both follow `Tokenizer`: `encode(text) -> int32 [T]`, `decode(ids) -> str`, `vocab_size`,
`eos_id` (the end-of-text id the pipeline puts between documents; text never encodes to
it, even text that spells `<|endoftext|>`). `decode(encode(x)) == x` for any string.
"""

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmopt.config import ConfigError, require

EOS_TEXT = "<|endoftext|>"
RESERVED_TEXT = "<|reserved_{}|>"
NUM_BYTES = 256
MIN_VOCAB = NUM_BYTES + 1  # every byte plus end-of-text, for both tokenizers


class Tokenizer(Protocol):
  """What the data pipeline and the launchers need from a tokenizer."""

  vocab_size: int
  eos_id: int

  def encode(self, text: str) -> np.ndarray:
    """int32 ids `[T]` of `text`."""

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    """`[encode(t) for t in texts]`, possibly faster."""

  def decode(self, ids) -> str:
    """The text of `ids`; `eos_id` reads as `<|endoftext|>`."""


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255 and end-of-text as 256 (vocab 257)."""

  vocab_size = MIN_VOCAB
  eos_id = NUM_BYTES

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    """Invalid UTF-8 (possible in sampled ids) decodes to U+FFFD."""
    ids = np.asarray(ids).reshape(-1)
    cuts = np.flatnonzero(ids == self.eos_id)
    pieces, start = [], 0
    for cut in [*cuts, len(ids)]:
      pieces.append(ids[start:cut].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
      start = cut + 1
    return EOS_TEXT.join(pieces)


class BpeTokenizer:
  """Byte-level BPE (GPT-2 pre-tokenisation, no normaliser) of exactly `vocab_size` ids.

  Id 0 is end-of-text, then the 256 byte symbols and the learnt merges. A corpus with
  fewer distinct merges than requested (the builtin stories stop near 2100 ids) is
  padded with reserved ids `<|reserved_k|>` that never occur in encoded text;
  `num_learned` counts the ids that can occur.
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    require(tokenizer.token_to_id(EOS_TEXT) is not None,
            f"the BPE tokenizer has no {EOS_TEXT} token")
    tokenizer.encode_special_tokens = True  # text spelling a special token stays text
    self._tok = tokenizer
    self.vocab_size = tokenizer.get_vocab_size()
    self.eos_id = tokenizer.token_to_id(EOS_TEXT)
    reserved = sum(1 for t in tokenizer.get_added_tokens_decoder().values()
                   if t.content.startswith("<|reserved_"))
    self.num_learned = self.vocab_size - reserved

  @classmethod
  def train(cls, texts: Sequence[str], vocab_size: int) -> "BpeTokenizer":
    """Learns merges from `texts` (deterministic: same texts, same tokenizer file)."""
    require(vocab_size >= MIN_VOCAB,
            f"--vocab_size={vocab_size} is too small for --tokenizer=bpe; it needs at least "
            f"{MIN_VOCAB} (256 byte symbols + end-of-text)")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, special_tokens=[EOS_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    missing = vocab_size - tok.get_vocab_size()
    tok.add_special_tokens([RESERVED_TEXT.format(k) for k in range(missing)])
    return cls(tok)

  @classmethod
  def load(cls, path: str) -> "BpeTokenizer":
    """Reads a `tokenizer.json` written by `save`."""
    try:
      tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the library raises plain Exception on bad JSON
      raise ConfigError(f"cannot read the BPE tokenizer {path}: {str(e).splitlines()[0]}") from e
    return cls(tok)

  def save(self, path: str) -> None:
    """Writes `tokenizer.json` (the caller decides where and when)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._tok.save(path)

  def to_str(self) -> str:
    """The tokenizer as its JSON text (what `save` writes)."""
    return self._tok.to_str(pretty=True)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, dtype=np.int32) for e in self._tok.encode_batch(list(texts))]

  def decode(self, ids) -> str:
    """Byte sequences that are not valid UTF-8 decode to U+FFFD."""
    ids = np.asarray(ids).reshape(-1).tolist()
    return self._tok.decode(ids, skip_special_tokens=False)
