"""Text data: corpus (builtin stories, text files, Hugging Face) -> tokenizer -> batches."""

from lmopt.data.builtin import generate_stories
from lmopt.data.corpus import load_texts
from lmopt.data.pipeline import (
  TOKENIZER_FILE,
  Batches,
  Data,
  build_tokenizer,
  check_token_range,
  encode_documents,
  load_data,
  pack,
  split_windows,
  tokenizer_path,
)
from lmopt.data.tokenizer import EOS_TEXT, BpeTokenizer, ByteTokenizer, Tokenizer

__all__ = [
  "EOS_TEXT",
  "TOKENIZER_FILE",
  "Batches",
  "BpeTokenizer",
  "ByteTokenizer",
  "Data",
  "Tokenizer",
  "build_tokenizer",
  "check_token_range",
  "encode_documents",
  "generate_stories",
  "load_data",
  "load_texts",
  "pack",
  "split_windows",
  "tokenizer_path",
]
