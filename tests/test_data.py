"""Tests of lmopt.data: story generator, tokenizers, corpus loading, packing and batches."""

import json
import os
import re
import sys

import numpy as np
import pytest

from lmopt.config import ConfigError, DataConfig
from lmopt.data import (
  EOS_TEXT,
  Batches,
  BpeTokenizer,
  ByteTokenizer,
  build_tokenizer,
  check_token_range,
  encode_documents,
  generate_stories,
  load_data,
  load_texts,
  pack,
  split_windows,
)

SAMPLES = ("Hello, world!", "héllo wörld, naïve café", "日本語のテキスト", "emoji 🙂🚀 end",
           "  two  spaces\n\ttab\r\nCRLF", f"literal {EOS_TEXT} stays text", "")


@pytest.fixture(scope="module")
def stories():
  return generate_stories(300, seed=0)


@pytest.fixture(scope="module")
def bpe(stories):
  return BpeTokenizer.train(stories, 400)


def small_config(**kw):
  base = {"tokenizer": "bpe", "vocab_size": 400, "seq_len": 32, "batch_size": 8,
          "builtin_stories": 200}
  return DataConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- stories


def test_stories_are_deterministic_and_seeded():
  a, b = generate_stories(60, seed=3), generate_stories(60, seed=3)
  assert a == b
  assert generate_stories(10, seed=3) == a[:10]  # one stream: prefixes agree
  other = generate_stories(60, seed=4)
  assert sum(x == y for x, y in zip(a, other)) == 0


def test_stories_have_varied_words_and_arcs(stories):
  text = "\n".join(stories)
  words = set(re.findall(r"[a-z']+", text.lower()))
  assert len(words) > 700, len(words)
  assert len(set(stories)) == len(stories)
  for marker in ("afraid of", "could not find", "wanted to make", "found", "share",
                 "should have listened", "knelt down"):
    assert marker in text, marker  # every story arc occurs
  lengths = [len(s) for s in stories]
  assert 250 < min(lengths) and max(lengths) < 1500 and text.isascii()


def test_stories_quotes_and_pronouns_agree(stories):
  she = re.compile(r"\b(she|her|herself)\b", re.IGNORECASE)
  he = re.compile(r"\b(he|him|his|himself)\b", re.IGNORECASE)
  checked = 0
  for story in stories:
    assert story.count('"') % 2 == 0, story
    assert story[-1] in '.!"', story
    first = story.split(".")[0]
    if re.search(r"\b(girl|princess|daughter)\b", first):
      assert not he.search(story), story
      checked += 1
    elif re.search(r"\b(boy|prince|son)\b", first):
      assert not she.search(story), story
      checked += 1
  assert checked > 50


# ----------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trip():
  tok = ByteTokenizer()
  assert (tok.vocab_size, tok.eos_id) == (257, 256)
  for text in SAMPLES:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and (ids < 256).all()
    assert tok.decode(ids) == text
  assert tok.decode(np.array([104, 105, 256, 33])) == f"hi{EOS_TEXT}!"


def test_bpe_round_trip_and_size(bpe, stories):
  assert bpe.vocab_size == 400 and bpe.eos_id == 0 and bpe.num_learned == 400
  for text in SAMPLES + (stories[0],):
    ids = bpe.encode(text)
    assert ids.dtype == np.int32
    assert bpe.decode(ids) == text
    assert bpe.eos_id not in ids  # only the pipeline inserts end-of-text
  assert len(bpe.encode(stories[0])) < 0.6 * len(stories[0].encode())  # merges compress
  joined = np.concatenate([bpe.encode("ab"), [bpe.eos_id], bpe.encode(" c")])
  assert bpe.decode(joined) == f"ab{EOS_TEXT} c"


def test_bpe_is_deterministic_and_saves_and_loads(stories, tmp_path):
  first, second = tmp_path / "a.json", tmp_path / "b.json"
  BpeTokenizer.train(stories, 333).save(str(first))
  BpeTokenizer.train(stories, 333).save(str(second))
  assert first.read_bytes() == second.read_bytes()
  trained = BpeTokenizer.train(stories, 333)
  loaded = BpeTokenizer.load(str(first))
  assert loaded.to_str() == trained.to_str()
  assert (loaded.vocab_size, loaded.eos_id) == (333, trained.eos_id)
  for text in SAMPLES:
    np.testing.assert_array_equal(loaded.encode(text), trained.encode(text))


def test_bpe_pads_to_exact_size_with_unused_ids():
  texts = generate_stories(20, seed=1)
  tok = BpeTokenizer.train(texts, 3000)  # far more than 20 stories can merge
  assert tok.vocab_size == 3000 and 257 < tok.num_learned < 3000
  tokens = encode_documents(tok, texts)
  assert tokens.max() < tok.num_learned
  assert tok.decode(tokens[:200]) in EOS_TEXT.join(texts)


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_too_small_vocab_is_a_config_error(tokenizer, stories):
  with pytest.raises(ConfigError, match=r"--vocab_size=100 .*257"):
    build_tokenizer(small_config(tokenizer=tokenizer, vocab_size=100), None, stories)
  with pytest.raises(ConfigError, match="--vocab_size=256"):
    BpeTokenizer.train(stories, 256)


def test_bad_tokenizer_file_is_a_config_error(tmp_path):
  path = tmp_path / "tokenizer.json"
  path.write_text("{not json")
  with pytest.raises(ConfigError, match="tokenizer.json"):
    BpeTokenizer.load(str(path))


# ----------------------------------------------------------------------------- packing


def test_encode_documents_and_pack_shapes():
  tokens = encode_documents(ByteTokenizer(), ["ab", "", "cde"])
  np.testing.assert_array_equal(tokens, [97, 98, 256, 256, 99, 100, 101, 256])
  windows = pack(np.arange(11, dtype=np.int32), 3)
  assert windows.shape == (3, 3) and windows.dtype == np.int32
  np.testing.assert_array_equal(windows[2], [6, 7, 8])


def test_check_token_range():
  check_token_range(np.array([0, 5, 99]), 100)
  with pytest.raises(ConfigError, match=r"--vocab_size=100 .*token id 100.*>=101"):
    check_token_range(np.array([3, 100]), 100)
  with pytest.raises(ConfigError, match="negative"):
    check_token_range(np.array([-1, 2]), 100)


def test_split_is_disjoint_complete_and_seeded():
  train, valid = split_windows(1000, 0.1, seed=5)
  assert len(valid) == 100 and len(train) == 900
  assert not set(train) & set(valid)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, valid])), np.arange(1000))
  again = split_windows(1000, 0.1, seed=5)
  np.testing.assert_array_equal(again[1], valid)
  assert not np.array_equal(split_windows(1000, 0.1, seed=6)[1], valid)
  assert len(split_windows(3, 0.01, seed=0)[1]) == 1


def test_load_data_split_windows_do_not_repeat():
  data = load_data(small_config())
  assert data.train.shape[1] == data.valid.shape[1] == 32
  assert data.train.dtype == data.valid.dtype == np.int32
  num_windows = len(data.train) + len(data.valid)
  assert num_windows == data.num_tokens // 32
  assert abs(len(data.valid) - 0.1 * num_windows) <= 1
  train_rows = {row.tobytes() for row in data.train}
  shared = sum(row.tobytes() in train_rows for row in data.valid)
  assert shared <= 0.01 * len(data.valid)  # disjoint windows of non-repeating stories
  assert data.tokenizer.decode(data.train[0])  # ids decode


# ----------------------------------------------------------------------------- batches


def _windows(n, seq_len=4):
  return np.arange(n * seq_len, dtype=np.int32).reshape(n, seq_len)


def test_batches_deterministic_resumable_and_epochwise():
  train, valid = _windows(10), _windows(3)
  run = Batches(train, valid, batch_size=3, seed=7)
  assert run.steps_per_epoch == 3 and run.num_train == 10
  seen = [run.batch(s) for s in range(9)]
  resumed = Batches(train, valid, batch_size=3, seed=7)
  for step in (7, 4, 8, 0):  # any order, fresh object: same batches
    np.testing.assert_array_equal(resumed.batch(step), seen[step])
  for epoch in range(3):
    rows = np.concatenate(seen[3 * epoch:3 * epoch + 3])[:, 0] // 4
    assert len(set(rows)) == 9  # no window twice within an epoch
  expected = np.random.default_rng([7, 1]).permutation(10)[:3]
  np.testing.assert_array_equal(seen[3][:, 0] // 4, expected)
  other = Batches(train, valid, batch_size=3, seed=8)
  assert any(not np.array_equal(other.batch(s), seen[s]) for s in range(9))
  assert seen[0].shape == (3, 4) and seen[0].dtype == np.int32


def test_full_batch_and_valid_tokens():
  train, valid = _windows(6), _windows(5)
  full = Batches(train, valid, batch_size=0, seed=0)
  assert full.batch_size == 6 and full.steps_per_epoch == 1
  for step in (0, 1, 50):
    np.testing.assert_array_equal(full.batch(step), train)
  assert full.valid_tokens().shape == (5, 4)
  np.testing.assert_array_equal(full.valid_tokens(2), valid[:2])
  assert train.flags.writeable  # the caller's arrays are left alone


def test_batch_size_too_large_is_a_config_error():
  with pytest.raises(ConfigError, match="--batch_size=11 .*10 training windows"):
    Batches(_windows(10), _windows(1), batch_size=11, seed=0)


def test_seq_len_too_long_is_a_config_error(tmp_path):
  (tmp_path / "tiny.txt").write_text("just a few words")
  config = DataConfig(dataset=f"text:{tmp_path}", tokenizer="byte", vocab_size=257, seq_len=10)
  with pytest.raises(ConfigError, match="--seq_len"):
    load_data(config)
  with pytest.raises(ConfigError, match="--seq_len"):
    split_windows(1, 0.1, seed=0)


def test_out_of_range_vocab_in_load_data_names_the_flag():
  with pytest.raises(ConfigError, match="--vocab_size=100"):
    load_data(small_config(tokenizer="byte", vocab_size=100))


# ----------------------------------------------------------------------------- workdir


def test_bpe_is_saved_only_on_request_and_reloaded(tmp_path):
  workdir = str(tmp_path / "run")
  first = load_data(small_config(), workdir)
  assert first.tokenizer_trained and not os.path.exists(workdir)  # nothing written yet
  path = first.save_tokenizer(workdir)
  assert path == os.path.join(workdir, "tokenizer.json") and os.path.exists(path)
  again = load_data(small_config(), workdir)
  assert not again.tokenizer_trained and again.save_tokenizer(workdir) is None
  np.testing.assert_array_equal(again.batches.batch(5), first.batches.batch(5))
  with pytest.raises(ConfigError, match="--vocab_size=300 does not match"):
    load_data(small_config(vocab_size=300), workdir)
  byte = load_data(small_config(tokenizer="byte", vocab_size=300))
  assert byte.save_tokenizer(workdir) is None and byte.train.max() < 257


# ----------------------------------------------------------------------------- corpus


def test_builtin_texts_follow_the_seed():
  assert load_texts("builtin", 2, 5) == generate_stories(5, 2)
  with pytest.raises(ConfigError, match="--seed=-1"):
    load_texts("builtin", -1, 5)


def test_text_file_and_folder(tmp_path):
  (tmp_path / "b.txt").write_text("second ünï")
  (tmp_path / "a.txt").write_text("first")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "c.txt").write_text("third")
  (tmp_path / "skip.md").write_text("not read")
  assert load_texts(f"text:{tmp_path}", 0, 1) == ["first", "second ünï", "third"]
  assert load_texts(f"text:{tmp_path / 'b.txt'}", 0, 1) == ["second ünï"]


@pytest.mark.parametrize("make, pattern", [
    (lambda p: str(p / "missing.txt"), "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "holds no .txt files"),
    (lambda p: (p / "bad.txt").write_bytes(b"ok \xff\xfe") and str(p / "bad.txt"), "not UTF-8"),
    (lambda p: (p / "void.txt").write_text("") or str(p / "void.txt"), "holds no text"),
])
def test_bad_text_paths_are_config_errors(tmp_path, make, pattern):
  path = make(tmp_path)
  with pytest.raises(ConfigError, match=pattern) as error:
    load_texts(f"text:{path}", 0, 1)
  assert str(error.value).startswith("--dataset=text:") and path in str(error.value)
  assert "\n" not in str(error.value)


def test_hf_without_datasets_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
  with pytest.raises(ConfigError, match=r"--dataset=hf:some/name .*pip install 'lmopt\[hf\]'"):
    load_texts("hf:some/name", 0, 1)


def test_hf_local_jsonl(tmp_path):
  pytest.importorskip("datasets")  # the optional `hf` extra
  path = tmp_path / "stories.jsonl"
  rows = [{"text": s, "id": i} for i, s in enumerate(generate_stories(40, seed=9))]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  assert load_texts(f"hf:json:{path}", 0, 1) == [r["text"] for r in rows]
  data = load_data(small_config(dataset=f"hf:json:{path}", tokenizer="byte", vocab_size=257))
  assert data.num_documents == 40 and data.batches.batch(0).shape == (8, 32)
  nocol = tmp_path / "nocol.jsonl"
  nocol.write_text(json.dumps({"body": "x"}) + "\n")
  with pytest.raises(ConfigError, match="no 'text' column"):
    load_texts(f"hf:json:{nocol}", 0, 1)
  with pytest.raises(ConfigError, match="could not be loaded"):
    load_texts(f"hf:json:{tmp_path / 'absent.jsonl'}", 0, 1)
