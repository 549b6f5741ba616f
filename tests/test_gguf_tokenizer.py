"""edgellm.converter.gguf_tokenizer: tokenizers rebuilt from GGUF metadata encode like the model's own tokenizer.

Byte-level BPE: SmolLM2's GGUF in ../shared against ids transformers gave (tests/data/smollm2_tokenizer_ids.json,
written by tools/make_gguf_reference.py). SentencePiece: a tokenizer-only GGUF written here from Llama 2's
tokenizer.model against its tokenizer.json (checked to encode like sentencepiece itself).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgellm.converter.gguf_tokenizer import tokenizer_from_gguf
from edgellm.errors import ConvertError
from edgellm.tokenizer import Tokenizer

REFERENCE = json.loads((Path(__file__).parent / "data" / "smollm2_tokenizer_ids.json").read_text(encoding="utf-8"))
CASES = REFERENCE["cases"]
TEXTS = [c["text"] for c in CASES]


def read_meta(path: Path) -> dict:
    """GGUF metadata the way the converter hands it over."""
    gguf = pytest.importorskip("gguf")
    return {f.name: f.contents() for f in gguf.GGUFReader(str(path)).fields.values()}


# -- SmolLM2: byte-level BPE, pre-tokenizer "smollm" --------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(shared_dir) -> tuple[Tokenizer, dict, dict]:
    path = shared_dir / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip("the SmolLM2 GGUF is not present in ../shared")
    text, cfg, gen = tokenizer_from_gguf(read_meta(path))
    return Tokenizer(text, cfg, gen), cfg, gen


def test_smollm2_ids_match_the_reference(smollm2):
    tok, _, _ = smollm2
    # transformers ignores "smollm" (GPT-2 regex only); where that differs the reference holds SmolLM2's own ids
    expected = [(c["text"], c.get("smollm_ids", c["ids_no_special"])) for c in CASES]
    assert [(t, tok.encode(t, add_bos=False)) for t in TEXTS] == expected
    assert [(t, tok.encode(t)) for t in TEXTS] == [(c["text"], c.get("smollm_ids", c["ids"])) for c in CASES]


def test_smollm2_reference_covers_the_known_divergence():
    # "x =  1": transformers splits " ", " 1" (Ġ Ġ 1), SmolLM2 "  ", "1" (ĠĠ 1)
    differ = [c for c in CASES if "smollm_ids" in c]
    assert [c["text"] for c in differ] == ["x =  1\ty\t\t2\n\n3   4"]
    assert differ[0]["smollm_ids"] != differ[0]["ids"]


def test_smollm2_decode_round_trips(smollm2):
    tok, _, _ = smollm2
    for c in CASES:
        ids = c.get("smollm_ids", c["ids"])
        assert tok.decode(ids, skip_special=False) == c["decoded"] == c["text"]
        assert tok.decode(ids) == c["decoded_skip_special"]


def test_smollm2_special_tokens_and_template(smollm2):
    tok, cfg, gen = smollm2
    assert (tok.bos_id, tok.eos_ids, tok.add_bos) == (1, {2}, False)
    assert (REFERENCE["bos_token_id"], REFERENCE["eos_token_id"]) == (1, 2)
    assert (cfg["bos_token"], cfg["eos_token"]) == (REFERENCE["bos_token"], REFERENCE["eos_token"])
    assert (cfg["unk_token"], cfg["pad_token"]) == ("<|endoftext|>", "<|im_end|>")
    assert gen == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    assert tok.chat_template.startswith("{% for message in messages %}")
    assert "You are a helpful AI assistant named SmolLM" in tok.chat_template
    assert tok.encode("hi", add_bos=True) == [1, 6004]


# -- Llama 2: SentencePiece BPE with byte fallback ----------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        n |= (buf[i] & 0x7F) << shift
        shift += 7
        i += 1
        if buf[i - 1] < 0x80:
            return n, i


def _proto_fields(buf: bytes):
    """(field number, raw value) of a protobuf message: just enough to read a sentencepiece model."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i : i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield key >> 3, value


def sentencepiece_pieces(model: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of each piece of tokenizer.model (ModelProto field 1: {1 piece, 2 score, 3 type})."""
    pieces = []
    for number, raw in _proto_fields(model.read_bytes()):
        if number == 1:
            p = {1: b"", 2: b"\0\0\0\0", 3: 1, **dict(_proto_fields(raw))}  # proto defaults: score 0, NORMAL
            pieces.append((p[1].decode("utf-8"), struct.unpack("<f", p[2])[0], p[3]))
    return pieces


@pytest.fixture(scope="module")
def llama2_dir(shared_dir) -> Path:
    path = shared_dir / "tokenizers" / "llama2"
    if not (path / "tokenizer.model").is_file():
        pytest.skip("the Llama 2 tokenizer is not present in ../shared")
    return path


@pytest.fixture(scope="module")
def llama2_meta(llama2_dir, tmp_path_factory) -> dict:
    """A GGUF holding only Llama 2's tokenizer, as llama.cpp's converter writes it: pieces, scores and types, no
    merges, no add_bos / add_space_prefix keys (so their defaults are what is tested), and one dummy tensor."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    pieces = sentencepiece_pieces(llama2_dir / "tokenizer.model")
    path = tmp_path_factory.mktemp("gguf") / "llama2-tokenizer.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([p for p, _, _ in pieces])
    w.add_token_scores([s for _, s, _ in pieces])
    w.add_token_types([t for _, _, t in pieces])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((1, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return read_meta(path)


@pytest.fixture(scope="module")
def llama2(llama2_meta, llama2_dir):
    from tokenizers import Tokenizer as HFTokenizer

    text, cfg, gen = tokenizer_from_gguf(llama2_meta)
    return Tokenizer(text, cfg, gen), HFTokenizer.from_file(str(llama2_dir / "tokenizer.json")), cfg, gen


# Special tokens are left out: Llama 2's tokenizer.json does not match "</s>" inside text, llama.cpp does.
SPM_TEXTS = [t for t in TEXTS if "<|" not in t] + [" hi", "  hi", "\n", " ", "a\n\n  b", "\x00\x7f", "🦙" * 3]


def test_llama_spm_ids_match_tokenizer_json(llama2):
    ours, hf, _, _ = llama2
    assert [ours.encode(t) for t in SPM_TEXTS] == [hf.encode(t).ids for t in SPM_TEXTS]
    assert [ours.encode(t, add_bos=False) for t in SPM_TEXTS] == [
        hf.encode(t, add_special_tokens=False).ids for t in SPM_TEXTS
    ]
    # exact anchors, so a shared mistake in both cannot pass: "▁▁▁" for "  hi" (sentencepiece always prepends)
    assert ours.encode("Hello world") == [1, 15043, 3186]
    assert ours.encode("  hi") == [1, 259, 7251]


def test_llama_spm_decode_round_trips(llama2):
    ours, hf, _, _ = llama2
    for t in SPM_TEXTS:
        ids = ours.encode(t, add_bos=False)  # without BOS: Llama 2's tokenizer.json decodes "<s>" even when skipping
        assert (ours.decode(ids), hf.decode(ids), ours.decode(ours.encode(t))) == (t, t, t)


def test_llama_spm_special_token_in_text_is_one_id(llama2):
    # llama.cpp cuts control tokens out of the text and gives the text after one its leading "▁" again
    ours, hf, _, _ = llama2
    piece = lambda t: hf.encode(t, add_special_tokens=False).ids  # noqa: E731
    assert ours.encode("hi</s>there") == [1, *piece("hi"), 2, *piece("there")]
    assert ours.decode(ours.encode("hi</s>there")) == "hi there"  # the control token is skipped


def test_llama_spm_configs_and_defaults(llama2):
    ours, _, cfg, gen = llama2
    assert {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "add_bos_token")} == {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,  # the file says nothing: llama.cpp adds BOS to a sentencepiece vocabulary
    }
    assert "pad_token" not in cfg and "chat_template" not in cfg
    assert gen == {"bos_token_id": 1, "eos_token_id": 2}
    assert (ours.bos_id, ours.eos_ids, ours.add_bos) == (1, {2}, True)


def test_llama_spm_without_space_prefix(llama2_meta):
    text, cfg, gen = tokenizer_from_gguf({**llama2_meta, "tokenizer.ggml.add_space_prefix": False})
    tok = Tokenizer(text, cfg, gen)
    assert tok.encode("hi there", add_bos=False) == [tok.token_id("hi"), tok.token_id("▁there")]
    assert tok.decode(tok.encode(" hi")) == " hi"


# -- small synthetic vocabularies: pre-tokenizer choice, defaults, errors -----------------------------------


def tiny_byte_level(pre: str | None = "default") -> dict:
    tokens = ["<|endoftext|>", "1", "2", "3", "4", "12", "123", "a", "b", "ab", "Ġ", "ĠĠ", "Ġab", "Ġ1"]
    meta = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
        "tokenizer.ggml.merges": ["1 2", "12 3", "a b", "Ġ ab", "Ġ Ġ", "Ġ 1"],
        "tokenizer.ggml.eos_token_id": 0,
    }
    if pre is not None:
        meta["tokenizer.ggml.pre"] = pre
    return meta


@pytest.mark.parametrize(
    "pre, digits, spaces",
    [
        # "1234": Llama 3 groups up to three digits, Qwen2 and SmolLM split each; GPT-2 keeps the run
        (None, [6, 4], [7, 10, 13]),
        ("gpt-2", [6, 4], [7, 10, 13]),
        ("llama-bpe", [6, 4], [7, 10, 10, 1]),
        ("llama3", [6, 4], [7, 10, 10, 1]),
        ("qwen2", [1, 2, 3, 4], [7, 10, 10, 1]),
        ("smollm", [1, 2, 3, 4], [7, 11, 1]),  # "a  1": "a", "  " (ĠĠ), "1", never "Ġ1"
    ],
)
def test_pre_tokenizer_follows_tokenizer_ggml_pre(pre, digits, spaces):
    tok = Tokenizer(*tokenizer_from_gguf(tiny_byte_level(pre)))
    assert (tok.encode("1234"), tok.encode("a  1")) == (digits, spaces)
    assert tok.encode("ab ab<|endoftext|>") == [9, 12, 0]
    assert tok.decode([9, 12, 0], skip_special=False) == "ab ab<|endoftext|>"


def test_byte_level_defaults():
    text, cfg, gen = tokenizer_from_gguf(tiny_byte_level())
    assert (cfg["add_bos_token"], cfg["eos_token"], gen) == (False, "<|endoftext|>", {"eos_token_id": 0})
    assert "bos_token" not in cfg and "chat_template" not in cfg
    assert json.loads(text)["added_tokens"][0] == {
        "id": 0,
        "content": "<|endoftext|>",
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


@pytest.mark.parametrize(
    "meta, named, listed",
    [
        ({**tiny_byte_level("jais-ish")}, "'jais-ish'", "smollm"),
        ({**tiny_byte_level(), "tokenizer.ggml.model": "rwkv"}, "'rwkv'", "gpt2, llama"),
    ],
)
def test_unsupported_tokenizers_raise_one_line(meta, named, listed):
    with pytest.raises(ConvertError) as e:
        tokenizer_from_gguf(meta)
    message = str(e.value)
    assert named in message and listed in message and "\n" not in message


def test_a_tokenizer_that_does_not_build_is_refused_at_conversion():
    """A merge naming a piece outside the vocabulary: one line now, not a file that fails at every load."""
    meta = {**tiny_byte_level(), "tokenizer.ggml.merges": ["1 2", "x y"]}
    with pytest.raises(ConvertError, match="tokenizer does not build") as e:
        tokenizer_from_gguf(meta)
    assert "\n" not in str(e.value)


def test_llama_spm_post_processor_adds_bos_and_eos(llama2_meta):
    from tokenizers import Tokenizer as HFTokenizer

    text, _, _ = tokenizer_from_gguf(llama2_meta)
    assert HFTokenizer.from_str(text).encode("Hello world").ids == [1, 15043, 3186]
    text, cfg, _ = tokenizer_from_gguf({**llama2_meta, "tokenizer.ggml.add_eos_token": True})
    assert cfg["add_eos_token"] is True
    assert HFTokenizer.from_str(text).encode("Hello world").ids == [1, 15043, 3186, 2]
    text, _, _ = tokenizer_from_gguf({**llama2_meta, "tokenizer.ggml.add_bos_token": False})
    assert HFTokenizer.from_str(text).encode("Hello world").ids == [15043, 3186]


def test_merges_are_stored_in_the_compact_form(smollm2, shared_dir):
    from edgellm.converter.gguf_tokenizer import _bpe

    path = shared_dir / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    merges = json.loads(tokenizer_from_gguf(read_meta(path))[0])["model"]["merges"]
    assert len(merges) == 48900 and merges[0] == "Ġ t"  # "a b": half the header bytes of ["a", "b"]
    # a piece holding a space would make "a b" ambiguous: then the pair form stays
    assert _bpe({"a": 0}, [["a b", "c"]], unk=None, byte_fallback=False)["merges"] == [["a b", "c"]]
