"""A Hugging Face `tokenizers` tokenizer rebuilt from a GGUF file's metadata.

A GGUF carries no tokenizer.json: llama.cpp stores the vocabulary, merges, token kinds and special ids under
`tokenizer.ggml.*`, and names the text-splitting rules (`tokenizer.ggml.pre`) instead of spelling them out.
Here those become the three things `edgellm.tokenizer.Tokenizer` loads: tokenizer.json text, a
tokenizer_config and a generation_config. Two vocabulary kinds are supported, byte-level BPE (`gpt2`) and
SentencePiece BPE (`llama`); anything else raises ConvertError rather than tokenize silently wrong.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConvertError

# llama.cpp's token kinds (tokenizer.ggml.token_type), the same numbers as sentencepiece's piece types
_UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 2, 3, 4, 6

# GPT-2's regex is the one ByteLevel applies itself (use_regex=True); the others replace it by a Split.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2 is Llama 3's regex with every digit on its own
_QWEN2_REGEX = _LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split_then_bytes(regex: str) -> dict:
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, _byte_level(use_regex=False)]}


# tokenizer.ggml.pre -> pre-tokenizer. SmolLM's vocabulary was trained with every digit split off first, then
# GPT-2's regex (its tokenizer.json: Digits(individual) + ByteLevel; llama.cpp: "\p{N}" then the GPT-2 regex).
# transformers 5 has no entry for "smollm" and falls back to GPT-2's regex alone, which splits runs of
# whitespace before a digit differently ("  1", "\n\n2"); we follow the model's own rules.
_PRE_TOKENIZERS: dict[str, dict] = {
    "default": _byte_level(use_regex=True),
    "gpt-2": _byte_level(use_regex=True),
    "llama-bpe": _split_then_bytes(_LLAMA3_REGEX),
    "llama3": _split_then_bytes(_LLAMA3_REGEX),
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(use_regex=True)],
    },
    "qwen2": _split_then_bytes(_QWEN2_REGEX),
    "deepseek-r1-qwen": _split_then_bytes(_QWEN2_REGEX),
}
_MODELS = ("gpt2", "llama")


def tokenizer_from_gguf(meta: dict) -> tuple[str, dict, dict]:
    """(tokenizer.json text, tokenizer_config dict, generation_config dict) from GGUF metadata."""
    model = meta.get("tokenizer.ggml.model")
    if model not in _MODELS:
        raise ConvertError(f"GGUF tokenizer model {model!r} is not supported (supported: {', '.join(_MODELS)})")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ConvertError("the GGUF file has no tokenizer.ggml.tokens: it carries no tokenizer")
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    if model == "gpt2":
        tok = _byte_level_bpe(meta, tokens, types)
    else:
        tok = _sentencepiece_bpe(meta, tokens, types)

    cfg, gen = _configs(meta, tokens, model)
    tok["post_processor"] = _post_processor(cfg, gen)
    text = json.dumps(tok, ensure_ascii=False)
    _check_loads(text)
    return text, cfg, gen


def _check_loads(text: str) -> None:
    """Refuse now, not at the first load, a tokenizer `tokenizers` cannot build (a merge naming a piece
    outside the vocabulary, say)."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises its own Exception subclass for every malformed part
        raise ConvertError(f"the GGUF file's tokenizer does not build: {e}") from None


def _byte_level_bpe(meta: dict, tokens: list[str], types: list[int]) -> dict:
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise ConvertError(
            f"GGUF tokenizer pre-tokenizer {pre!r} is not supported (supported: {', '.join(_PRE_TOKENIZERS)})"
        )
    spell = _bytes_to_unicode()
    alphabet = set(spell.values())
    # A few converters store a token as raw text rather than in the byte alphabet (e.g. a literal space);
    # the BPE model only ever sees byte-alphabet strings, so respell those the way transformers does.
    vocab = {t if set(t) <= alphabet else "".join(spell[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)}
    merges = [m.split(" ") for m in meta.get("tokenizer.ggml.merges") or []]
    # A control token outside the byte alphabet is a llama.cpp mislabel; matching it would emit an id the model
    # was never trained on, so only well-spelled control tokens become special.
    added = _added_tokens(tokens, types, special_ok=lambda t: set(t) <= alphabet)
    bpe = _bpe(vocab, merges, unk=None, byte_fallback=False)
    return _skeleton(added, None, _PRE_TOKENIZERS[pre], bpe, {**_byte_level(use_regex=True), "add_prefix_space": True})


def _sentencepiece_bpe(meta: dict, tokens: list[str], types: list[int]) -> dict:
    scores = meta.get("tokenizer.ggml.scores")
    if meta.get("tokenizer.ggml.merges"):
        merges = [m.split(" ") for m in meta["tokenizer.ggml.merges"]]
    elif scores:
        merges = _merges_from_scores(tokens, scores)
    else:
        raise ConvertError("the GGUF sentencepiece tokenizer has neither tokenizer.ggml.merges nor .scores")
    vocab = {t: i for i, t in enumerate(tokens)}
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if isinstance(unk_id, int) and 0 <= unk_id < len(tokens) else None

    # SentencePiece turns spaces into "▁" and (add_dummy_prefix) starts the text with one. A normalizer, not
    # Metaspace: sentencepiece and llama.cpp always prepend, also before text that already starts with a
    # space ("  hi" -> "▁▁▁hi"), where Metaspace (what transformers 5's GGUF loader uses) would not. Special
    # tokens are cut out before normalizing, so text after one gets its "▁" too, as llama.cpp does.
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    steps = ([{"type": "Prepend", "prepend": "▁"}] if prefix else []) + [replace]
    decoders = [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},  # <0xE2><0x80><0x94> -> the bytes of one character
        {"type": "Fuse"},
    ]
    if prefix:  # take back the space the normalizer put in front
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})

    added = _added_tokens(tokens, types, special_ok=lambda t: True)
    bpe = _bpe(vocab, merges, unk=unk, byte_fallback=True)
    normalizer = {"type": "Sequence", "normalizers": steps}
    return _skeleton(added, normalizer, None, bpe, {"type": "Sequence", "decoders": decoders})


def _merges_from_scores(tokens: list[str], scores: list[float]) -> list[list[str]]:
    """SentencePiece BPE files store no merges, only a score per piece: every split of a piece into two pieces of
    the vocabulary is a merge, ranked by the merged piece's score (best first). Ties broken as transformers
    does (longer left part, then longer right part, then token order) so both build the same ranks."""
    ids = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for i, piece in enumerate(tokens):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], -len(left), -len(right), i, ids[left], ids[right], left, right))
    ranked.sort()
    return [[r[6], r[7]] for r in ranked]


def _added_tokens(tokens: list[str], types: list[int], special_ok) -> list[dict]:
    """Tokens matched whole in the text before BPE: control and unknown ones (llama.cpp parses both as special)
    as special tokens, which decode skips; user-defined ones (like `<think>`) as plain added tokens. Not
    normalized: GGUF keeps no such flag, and llama.cpp matches them in the raw text."""
    out = []
    for i, (t, kind) in enumerate(zip(tokens, types)):
        special = kind in (_CONTROL, _UNKNOWN) and special_ok(t)
        if special or kind == _USER_DEFINED:
            out.append(
                {
                    "id": i,
                    "content": t,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": special,
                }
            )
    return out


def _bpe(vocab: dict[str, int], merges: list[list[str]], unk: str | None, byte_fallback: bool) -> dict:
    return {
        "type": "BPE",
        "dropout": None,
        "unk_token": unk,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": byte_fallback,  # sentencepiece folds a run of unknown pieces into one <unk>
        "byte_fallback": byte_fallback,
        "ignore_merges": False,
        "vocab": vocab,
        # tokenizers reads a merge as "a b" or ["a", "b"]; the string form takes half the header bytes
        # (SmolLM2's 48,900 merges: ~0.4 MB), and is unambiguous while no piece holds a space
        "merges": [" ".join(m) for m in merges] if all(" " not in x for m in merges for x in m) else merges,
    }


def _skeleton(added: list[dict], normalizer: Any, pre: Any, model: dict, decoder: dict) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": decoder,
        "model": model,
    }


def _configs(meta: dict, tokens: list[str], model: str) -> tuple[dict, dict]:
    # llama.cpp adds BOS to a sentencepiece vocabulary whose file does not say otherwise, never to a GPT-2 one
    cfg: dict = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama")),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    }
    gen: dict = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        if isinstance(i, int) and 0 <= i < len(tokens):
            cfg[f"{name}_token"] = tokens[i]
            if name != "unk":
                gen[f"{name}_token_id"] = i
    if isinstance(meta.get("tokenizer.chat_template"), str):
        cfg["chat_template"] = meta["tokenizer.chat_template"]
    return cfg, gen


def _post_processor(cfg: dict, gen: dict) -> dict | None:
    """BOS / EOS around the text as the file asks, so encode(add_special_tokens=True) matches llama.cpp."""

    def end(name: str) -> tuple[str, int] | None:
        on = cfg[f"add_{name}_token"] and f"{name}_token_id" in gen
        return (cfg[f"{name}_token"], gen[f"{name}_token_id"]) if on else None

    bos, eos = end("bos"), end("eos")
    if bos is None and eos is None:
        return None

    def around(seq: str, type_id: int) -> list[dict]:
        special = lambda t: [{"SpecialToken": {"id": t[0], "type_id": type_id}}] if t else []  # noqa: E731
        return special(bos) + [{"Sequence": {"id": seq, "type_id": type_id}}] + special(eos)

    return {
        "type": "TemplateProcessing",
        "single": around("A", 0),
        "pair": around("A", 0) + around("B", 1),
        "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in filter(None, (bos, eos))},
    }


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte alphabet: printable bytes stand for themselves, the other 68 are moved to U+0100.. so that
    no token contains whitespace or a control character."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + n) for n, b in enumerate(moved)}}
