"""Tokenizer (Hugging Face `tokenizers`, from the tokenizer.json embedded in the model file) and a streaming
detokenizer that never emits half a UTF-8 character."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from .errors import TokenizerError


def _token_text(v) -> str | None:
    """tokenizer_config stores special tokens as strings or as {"content": ...} dicts."""
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


class Tokenizer:
    def __init__(
        self, tokenizer_json: str, tokenizer_config: dict | None = None, generation_config: dict | None = None
    ):
        try:
            self._tok = _HFTokenizer.from_str(tokenizer_json)
        except Exception as e:  # the Rust side raises plain Exception subclasses
            raise TokenizerError(f"cannot load the tokenizer: {e}") from None
        self.config = dict(tokenizer_config or {})
        gen = generation_config or {}
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        self.bos_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        if self.bos_id is None and isinstance(gen.get("bos_token_id"), int):
            self.bos_id = gen["bos_token_id"]
        eos = gen.get("eos_token_id")
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
        if self.eos_token and self._tok.token_to_id(self.eos_token) is not None:
            self.eos_ids.add(self._tok.token_to_id(self.eos_token))
        self.add_bos = bool(self.config.get("add_bos_token", False)) and self.bos_id is not None
        self.chat_template = self.config.get("chat_template")

    @classmethod
    def from_dir(cls, path) -> Tokenizer:
        p = Path(path)
        if not (p / "tokenizer.json").is_file():
            raise TokenizerError(f"{p}: no tokenizer.json")
        read = lambda name: json.loads((p / name).read_text()) if (p / name).is_file() else {}  # noqa: E731
        return cls(
            (p / "tokenizer.json").read_text(encoding="utf-8"),
            read("tokenizer_config.json"),
            read("generation_config.json"),
        )

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def vocab(self) -> dict[str, int]:
        """piece -> id, added tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids; by default with the special tokens the tokenizer adds itself (and BOS when the
        tokenizer_config asks for it), with add_bos=True/False exactly one BOS or none."""
        if add_bos is not None:
            ids = self._tok.encode(text, add_special_tokens=False).ids
            return [self.bos_id] + ids if add_bos and self.bos_id is not None else ids
        ids = self._tok.encode(text, add_special_tokens=True).ids
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids  # the tokenizer.json's post-processor did not add it
        return ids

    def decode(self, ids, skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(piece)

    def id_to_piece(self, i: int) -> str | None:
        return self._tok.id_to_token(i)


class StreamingDetokenizer:
    """reset / add_token / finalize / last_segment. Decodes a short window of ids and diffs it against the
    text already emitted for that window, so each token costs O(window), and holds back text ending in an
    incomplete character (U+FFFD from a partial byte-fallback or byte-level sequence)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.reset()

    def reset(self) -> None:
        self.ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # ids before this are already emitted
        self._pending = ""

    def add_token(self, token: int) -> None:
        self.ids.append(int(token))
        prefix_text = self.tok.decode(self.ids[self._prefix : self._read])
        new_text = self.tok.decode(self.ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._pending += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.ids)

    def finalize(self) -> None:
        prefix_text = self.tok.decode(self.ids[self._prefix : self._read])
        new_text = self.tok.decode(self.ids[self._prefix :])
        if len(new_text) > len(prefix_text):
            self._pending += new_text[len(prefix_text) :]
        self._prefix = self._read = len(self.ids)

    @property
    def last_segment(self) -> str:
        out, self._pending = self._pending, ""
        return out
