"""A Hugging Face model directory (or, through gguf.py, a GGUF file) as a lazy source of f32 row blocks.

Tensors are read with positioned reads straight from the .safetensors files, a block of rows at a time:
numpy has no bfloat16, so safetensors' own numpy loader cannot hand bf16 over, and its memory map would
count every touched page of a multi-GB checkpoint in the converter's RSS. The safetensors layout is
simple enough to read directly (8-byte header length, JSON header, data), and every offset is checked.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ConvertError

_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}
_MAX_ST_HEADER = 100 << 20


class Tensor(Protocol):
    """What the converter reads from a source tensor (SourceTensor here, GGUFTensor in gguf.py)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def rows(self) -> int: ...

    @property
    def row_bytes(self) -> int: ...  # stored bytes per row

    def read_rows(self, start: int, stop: int) -> np.ndarray: ...  # f32[stop - start, cols]

    def keeps_values(self, stype: str, group: int) -> bool: ...  # stored as `stype`, no value changes

    # [codes, scales] of a quantized `stype` for which keeps_values() holds: the source's own, repacked
    def read_streams(self, start: int, stop: int, stype: str) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class SourceTensor:
    name: str
    path: Path
    dtype: str  # F32 | F16 | BF16
    shape: tuple[int, ...]
    offset: int  # absolute file offset of the first byte

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) == 2 else 1

    @property
    def row_bytes(self) -> int:
        cols = self.shape[-1]
        return cols * _DTYPES[self.dtype][1]

    def keeps_values(self, stype: str, group: int) -> bool:
        return stype == "f32" or (stype == "f16" and self.dtype == "F16")  # never a quantized type

    def read_streams(self, start: int, stop: int, stype: str) -> list[np.ndarray]:
        raise NotImplementedError  # keeps_values() is never true for a quantized type

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """f32[stop - start, cols] (a 1-D tensor is one row)."""
        n = (stop - start) * self.row_bytes
        with open(self.path, "rb", buffering=0) as f:
            raw = os.pread(f.fileno(), n, self.offset + start * self.row_bytes)
        if len(raw) != n:
            raise ConvertError(f"{self.path.name}: tensor {self.name!r} is truncated")
        dt = _DTYPES[self.dtype][0]
        a = np.frombuffer(raw, dtype=dt).reshape(stop - start, self.shape[-1])
        if self.dtype == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)


def _read_safetensors_index(path: Path) -> dict[str, SourceTensor]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConvertError(f"{path.name}: not a safetensors file (too short)")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > _MAX_ST_HEADER or 8 + hlen > size:
            raise ConvertError(f"{path.name}: not a safetensors file (bad header length {hlen})")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConvertError(f"{path.name}: safetensors header is not valid JSON") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (a, b) = info.get("dtype"), tuple(info.get("shape", ())), info.get("data_offsets", (0, 0))
        if dtype not in _DTYPES:
            raise ConvertError(
                f"{path.name}: tensor {name!r} has dtype {dtype}; edgellm converts F32, F16 and BF16 checkpoints"
            )
        nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1]
        if b - a != nbytes or 8 + hlen + b > size or a < 0:
            raise ConvertError(f"{path.name}: tensor {name!r} has invalid data offsets (file corrupt?)")
        out[name] = SourceTensor(name, path, dtype, shape, 8 + hlen + a)
    return out


@dataclass
class HFSource:
    root: Path
    config: dict
    tensors: dict[str, SourceTensor]
    tokenizer_json: str
    tokenizer_config: dict
    generation_config: dict

    @property
    def dtype(self) -> str:
        kinds = sorted({t.dtype for t in self.tensors.values()})
        return "+".join(kinds)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: cannot read JSON: {e}") from None


def open_source(src):
    """An HFSource for a directory, a GGUFSource for a .gguf file."""
    root = Path(src)
    if not root.exists():
        raise ConvertError(f"{src}: no such file or directory")
    if root.is_file() and root.suffix.lower() == ".gguf":
        from .gguf import open_gguf

        return open_gguf(root)
    if not root.is_dir():
        raise ConvertError(
            f"{src}: expected a Hugging Face model directory (config.json + *.safetensors) or a .gguf file"
        )
    if not (root / "config.json").is_file():
        raise ConvertError(f"{src}: no config.json: not a Hugging Face model directory")
    config = _read_json(root / "config.json")
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        files = sorted({root / f for f in weight_map.values()})
    else:
        files = sorted(root.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickles:
            raise ConvertError(
                f"{src}: only pickle checkpoints ({', '.join(pickles[:3])}); edgellm reads "
                f"safetensors only (pickle can run code): save the model with safe_serialization"
            )
        raise ConvertError(f"{src}: no *.safetensors weights found")
    tensors: dict[str, SourceTensor] = {}
    for f in files:
        if not f.is_file():
            raise ConvertError(f"{f}: listed in the shard index but missing")
        tensors.update(_read_safetensors_index(f))
    tok = root / "tokenizer.json"
    if not tok.is_file():
        raise ConvertError(f"{src}: no tokenizer.json (edgellm embeds the tokenizer in the model file)")
    tok_cfg = _read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
    template = root / "chat_template.jinja"
    if template.is_file() and "chat_template" not in tok_cfg:
        tok_cfg["chat_template"] = template.read_text(encoding="utf-8")
    gen = root / "generation_config.json"
    return HFSource(
        root, config, tensors, tok.read_text(encoding="utf-8"), tok_cfg, _read_json(gen) if gen.is_file() else {}
    )
