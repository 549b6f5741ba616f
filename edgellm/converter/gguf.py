"""A GGUF file as a source for the converter: the same contract as a Hugging Face directory (config, tensors
under their Hugging Face names, tokenizer), read tensor by tensor with positioned reads.

The `gguf` package (ggml-org's reader) parses the header and dequantizes blocks; the tensor bytes are read
with os.pread, a block of rows at a time, so the converter's RSS stays a block (a memory map would count
every page it touched). Every offset and length the header gives is checked against the file first.

llama.cpp's converter stores the q and k projections of Llama-family models with their rows permuted for its
rotary layout; rows are read back through the inverse permutation, so the tensors are Hugging Face's. Blocks
travel whole with their rows, so a row permutation keeps Q8_0 / Q4_0 blocks exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvertError, UnsupportedModelError
from ..quant import QUANTIZED

ARCHS = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}  # GGUF general.architecture -> model_type
PERMUTED = ("llama", "mistral")  # architectures whose q/k rows llama.cpp permutes (qwen2's it does not)

# GGUF tensor name pieces -> Hugging Face module names (llama family)
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# What each GGUF type can be stored as without changing a value (group 32 for the block types), and what
# `--quant auto` stores it as: exact where one of our types holds it, otherwise the smallest of our types that
# loses less than the source already did (q8 for 4.5-6.6 bit types, q4 for those below 4 bits).
EXACT = {
    "F32": ("f32",),
    "F16": ("f16", "f32"),
    "BF16": ("f32",),
    "Q8_0": ("q8", "f32"),
    "Q4_0": ("q4", "f32"),
    "Q4_1": ("q4a", "f32"),
}
_LOW_BIT = ("Q2_K", "Q3_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0")


def auto_stype(ggml_type: str) -> str:
    if ggml_type in EXACT:
        return EXACT[ggml_type][0]
    return "q4" if ggml_type in _LOW_BIT else "q8"


@dataclass
class GGUFTensor:
    """One tensor of a GGUF file, under its Hugging Face name and shape (rows, cols) or (cols,)."""

    name: str
    path: Path
    dtype: str  # the GGML type name: F32, F16, Q8_0, Q4_1, Q4_K, ...
    shape: tuple[int, ...]
    offset: int  # absolute file offset of the tensor's first byte
    row_bytes: int  # stored bytes per row
    qtype: Any = field(repr=False)  # gguf.GGMLQuantizationType
    row_map: np.ndarray | None = None  # Hugging Face row r is stored row row_map[r] (q/k permutation)

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) == 2 else 1

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def _stored_rows(self, start: int, stop: int) -> np.ndarray:
        """u8[stop - start, row_bytes]: the stored rows of Hugging Face rows start..stop-1."""
        src = np.arange(start, stop) if self.row_map is None else self.row_map[start:stop]
        lo, hi = int(src.min()), int(src.max()) + 1
        n = (hi - lo) * self.row_bytes
        with open(self.path, "rb", buffering=0) as f:
            raw = os.pread(f.fileno(), n, self.offset + lo * self.row_bytes)
        if len(raw) != n:
            raise ConvertError(f"{self.path.name}: tensor {self.name!r} is truncated")
        block = np.frombuffer(raw, np.uint8).reshape(hi - lo, self.row_bytes)
        return block if self.row_map is None else block[src - lo]

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """f32[stop - start, cols], dequantized by the gguf package."""
        from gguf import quants

        data = self._stored_rows(start, stop)
        if self.dtype == "F32":
            return data.view(np.float32).reshape(stop - start, self.cols).copy()
        return np.asarray(quants.dequantize(data, self.qtype), np.float32).reshape(stop - start, self.cols)

    def keeps_values(self, stype: str, group: int) -> bool:
        """Whether `stype` holds this tensor with no value changed (block types: at group 32 only); for q8 / q4
        read_streams then gives the source's own codes and scales."""
        return stype in EXACT.get(self.dtype, ()) and (stype not in QUANTIZED or group == 32)

    def read_streams(self, start: int, stop: int, stype: str) -> list[np.ndarray]:
        """The streams of rows start..stop-1 in our q8 / q4 / q4a layout, repacked from Q8_0 / Q4_0 / Q4_1
        blocks ({f16 d, codes}; Q4_1 {f16 d, f16 m, codes}): the same f16 scale (and min) and the same codes
        (Q4_0 / Q4_1 nibbles are already ordered as ours: byte j holds elements j and j + 16)."""
        rows, groups = stop - start, self.cols // 32
        blocks = self._stored_rows(start, stop).reshape(rows, groups, -1)
        head = 4 if stype == "q4a" else 2  # bytes of f16 fields before a block's codes
        fields = np.ascontiguousarray(blocks[:, :, :head]).view(np.float16).reshape(rows, groups, head // 2)
        codes = np.ascontiguousarray(blocks[:, :, head:]).reshape(rows, -1)
        if stype == "q4a":
            return [codes, np.ascontiguousarray(fields[..., 0]), np.ascontiguousarray(fields[..., 1])]
        return [codes.view(np.int8) if stype == "q8" else codes, fields[..., 0]]


@dataclass
class GGUFSource:
    root: Path
    config: dict
    tensors: dict[str, GGUFTensor]
    tokenizer_json: str
    tokenizer_config: dict
    generation_config: dict
    metadata: dict  # every GGUF key -> value (lists of the tokenizer left out)

    @property
    def dtype(self) -> str:
        return "gguf " + "+".join(sorted({t.dtype for t in self.tensors.values()}))


def open_gguf(path: Path) -> GGUFSource:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ConvertError("reading GGUF needs the gguf package: pip install gguf") from None
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ConvertError(f"{path}: not a readable GGUF file ({e})") from None
    meta = {f.name: f.contents() for f in reader.fields.values()}
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        raise UnsupportedModelError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: {', '.join(ARCHS)}"
        )
    config = _config(meta, arch, reader)
    tensors = _tensors(path, reader, config, arch)
    from .gguf_tokenizer import tokenizer_from_gguf

    tok_json, tok_cfg, gen = tokenizer_from_gguf(meta)
    small = {k: v for k, v in meta.items() if not isinstance(v, list) or len(v) <= 16}
    return GGUFSource(path, config, tensors, tok_json, tok_cfg, gen, small)


def _num(meta: dict, key: str, kind=int, default=None):
    """A numeric metadata value, checked: a missing required key or a value of the wrong kind is one error."""
    v = meta.get(key, default)
    if v is None:
        raise ConvertError(f"GGUF metadata lacks {key!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and int(v) != v) or v < 0:
        raise ConvertError(f"GGUF metadata {key!r} = {str(v)[:40]!r} is not a valid {kind.__name__}")
    return kind(v)


def _config(meta: dict, arch: str, reader) -> dict:
    """A Hugging Face config.json object from the `{arch}.*` keys."""
    k = lambda name: f"{arch}.{name}"  # noqa: E731
    heads = _num(meta, k("attention.head_count"))
    hidden = _num(meta, k("embedding_length"))
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = _num(meta, k("vocab_size"), default=len(tokens) if isinstance(tokens, list) else None)
    if heads < 1 or hidden < heads:
        raise ConvertError(f"GGUF metadata: {heads} attention heads for a hidden size of {hidden}")
    names = {t.name for t in reader.tensors}
    cfg = {
        "model_type": ARCHS[arch],
        "architectures": [
            {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
        ],
        "hidden_size": hidden,
        "intermediate_size": _num(meta, k("feed_forward_length")),
        "num_hidden_layers": _num(meta, k("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": _num(meta, k("attention.head_count_kv"), default=heads),
        "head_dim": _num(meta, k("attention.key_length"), default=hidden // heads),
        "max_position_embeddings": _num(meta, k("context_length"), default=2048),
        "rms_norm_eps": _num(meta, k("attention.layer_norm_rms_epsilon"), float, 1e-5),
        "rope_theta": _num(meta, k("rope.freq_base"), float, 10000.0),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
    }
    scaling = meta.get(k("rope.scaling.type"))
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": _num(meta, k("rope.scaling.factor"), float)}
    elif scaling not in (None, "none"):
        raise UnsupportedModelError(f"GGUF rope scaling {scaling!r} is not supported (none, linear)")
    if ROPE_FREQS in names:
        if "rope_scaling" in cfg:
            raise UnsupportedModelError(f"GGUF holds both rope scaling {scaling!r} and {ROPE_FREQS}")
        factors = _rope_factors(reader, cfg["head_dim"])
        if (factors != 1).any():
            cfg["rope_scaling"] = llama3_scaling(factors, cfg["head_dim"], cfg["rope_theta"])
    if arch == "mistral" and k("attention.sliding_window") in meta:
        cfg["sliding_window"] = _num(meta, k("attention.sliding_window"))
    return cfg


ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's Llama 3.x rope scaling: frequency i divided by factor i
LLAMA3_CONTEXT = 8192.0  # Llama 3.x's original_max_position_embeddings; see llama3_scaling


def _rope_factors(reader, head_dim: int) -> np.ndarray:
    t = next(t for t in reader.tensors if t.name == ROPE_FREQS)
    shape = [int(d) for d in t.shape]
    if t.tensor_type.name != "F32" or shape != [head_dim // 2]:
        raise ConvertError(f"GGUF {ROPE_FREQS}: expected F32 [{head_dim // 2}], found {t.tensor_type.name} {shape}")
    f = np.array(t.data, dtype=np.float64).reshape(-1)
    if not np.isfinite(f).all() or f.min() <= 0:
        raise ConvertError(f"GGUF {ROPE_FREQS} holds non-positive or non-finite factors")
    return f


def llama3_scaling(factors: np.ndarray, head_dim: int, theta: float) -> dict:
    """The Hugging Face `rope_scaling` (rope_type llama3) whose frequencies are llama.cpp's rope_freqs factors.

    llama3 scales frequency i by 1 (short wavelengths), 1/factor (long ones) or, between, by
    (1 - s)/factor + s with s linear in 1/wavelength: fitting that line through the middle factors gives the
    parameters. Only their ratio to the original context is determined (scaling all three changes nothing),
    so the context is pinned at Llama 3.x's 8192. Refused unless the result reproduces every factor."""
    from ..kernels.ops import inv_freq

    freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factor = float(factors.max())
    mid = (factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6))
    unfit = UnsupportedModelError(f"GGUF {ROPE_FREQS} is not Llama 3-style rope scaling (factors {factors.tolist()})")
    if factors.min() < 1 - 1e-6 or mid.sum() < 2:
        raise unfit
    smooth = (1 / factors[mid] - 1 / factor) / (1 - 1 / factor)
    slope, icept = np.polyfit(freq[mid] / (2 * np.pi), smooth, 1)  # smooth = slope / wavelength + icept
    if slope <= 0:
        raise unfit
    low = -icept * LLAMA3_CONTEXT / slope
    cfg = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": round(low, 6),
        "high_freq_factor": round(low + LLAMA3_CONTEXT / slope, 6),
        "original_max_position_embeddings": int(LLAMA3_CONTEXT),
    }
    if not np.allclose(freq / inv_freq(head_dim, theta, cfg), factors, rtol=1e-4):
        raise unfit
    return cfg


def _hf_name(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
    return None


def _unpermute(rows: int, n_head: int) -> np.ndarray:
    """row_map for llama.cpp's q/k permutation: it stores Hugging Face row perm[i] at row i, where each head's
    rows go (first half, second half) -> interleaved pairs."""
    perm = np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(-1)
    return np.argsort(perm)


def _tensors(path: Path, reader, cfg: dict, arch: str) -> dict[str, GGUFTensor]:
    size = path.stat().st_size
    out: dict[str, GGUFTensor] = {}
    for t in reader.tensors:
        if t.name == ROPE_FREQS:
            continue  # read into the config (rope_scaling)
        name = _hf_name(t.name)
        if name is None:
            raise UnsupportedModelError(f"{path.name}: GGUF tensor {t.name!r} is not one edgellm knows")
        ne = [int(d) for d in t.shape]  # ggml order: ne[0] is the contiguous (column) count
        if not 1 <= len(ne) <= 2 or min(ne) < 1:
            raise ConvertError(f"{path.name}: tensor {t.name!r} has shape {ne}")
        shape = tuple(reversed(ne))
        rows = shape[0] if len(shape) == 2 else 1
        n_bytes, offset = int(t.n_bytes), int(t.data_offset)
        if offset < 0 or n_bytes <= 0 or offset + n_bytes > size or n_bytes % rows:
            raise ConvertError(f"{path.name}: tensor {t.name!r} has invalid data offsets (file corrupt?)")
        row_map = None
        if arch in PERMUTED and name.endswith(("q_proj.weight", "k_proj.weight")):
            n_head = cfg["num_attention_heads"] if "q_proj" in name else cfg["num_key_value_heads"]
            if rows % (2 * n_head):
                raise ConvertError(f"{path.name}: {t.name!r} rows {rows} do not split into {n_head} heads")
            row_map = _unpermute(rows, n_head)
        out[name] = GGUFTensor(name, path, t.tensor_type.name, shape, offset, n_bytes // rows, t.tensor_type, row_map)
    return out
