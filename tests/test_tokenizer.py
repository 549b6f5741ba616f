"""Tokenizer and streaming detokenizer: ids as Hugging Face gives them, never broken UTF-8."""

from __future__ import annotations

import json

import pytest

from edgellm.errors import TokenizerError
from edgellm.tokenizer import StreamingDetokenizer, Tokenizer


@pytest.fixture(scope="module")
def stories_tok(stories_dir):
    return Tokenizer.from_dir(stories_dir)


@pytest.fixture(scope="module")
def llama2_tok(shared_dir):
    return Tokenizer.from_dir(shared_dir / "tokenizers" / "llama2")


@pytest.fixture(scope="module")
def gpt2_tok(shared_dir):
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers

    d = shared_dir / "tokenizers" / "gpt2"
    t = HF(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return Tokenizer(t.to_str(), {"eos_token": "<|endoftext|>"}, {})


def test_stories_prompt_ids(stories_tok):
    assert stories_tok.encode("Once upon a time") == [1, 403, 407, 261, 378]
    assert stories_tok.bos_id == 1 and stories_tok.eos_ids == {2}
    assert stories_tok.decode([1, 403, 407, 261, 378]) == "Once upon a time"


def test_bos_not_added_twice(llama2_tok):
    ids = llama2_tok.encode("Hello world")
    assert ids[0] == 1 and ids.count(1) == 1
    assert llama2_tok.encode("Hello", add_bos=False)[0] != 1


def test_byte_fallback_is_exercised(llama2_tok):
    ids = llama2_tok.encode("🎉 日本語", add_bos=False)
    assert any(llama2_tok.id_to_piece(i).startswith("<0x") for i in ids)


TEXTS = ["Héllo wörld, naïve café", "日本語のテキストと絵文字 🎉🚀 mixed", "a  b\n\nc\tend", "ümlaut✓ → ∑x²"]


def _stream(tok, ids):
    d = StreamingDetokenizer(tok)
    parts = []
    for i in ids:
        d.add_token(i)
        parts.append(d.last_segment)
    d.finalize()
    parts.append(d.last_segment)
    return parts


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_detokenizer_llama2_byte_fallback(llama2_tok, text):
    ids = llama2_tok.encode(text, add_bos=False)
    parts = _stream(llama2_tok, ids)
    assert all("\ufffd" not in p for p in parts)  # no half characters ever emitted
    assert "".join(parts) == llama2_tok.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_detokenizer_gpt2_byte_level(gpt2_tok, text):
    ids = gpt2_tok.encode(text)
    parts = _stream(gpt2_tok, ids)
    assert all("\ufffd" not in p for p in parts)
    assert "".join(parts) == text


def test_streaming_emits_incrementally(stories_tok):
    ids = stories_tok.encode("Once upon a time there was a cat", add_bos=False)
    parts = _stream(stories_tok, ids)
    assert sum(1 for p in parts if p) >= len(ids) - 1


def test_missing_and_broken_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerError):
        Tokenizer(json.dumps({"model": {"type": "nonsense"}}))
