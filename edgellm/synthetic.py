"""Synthetic Hugging Face checkpoints at real shapes (random weights), streamed to disk.

Nothing can be downloaded from a model hub here, so real-size work uses random weights with the exact
shapes of real models. Tensors are generated and written one row block at a time: peak RSS stays around
one block even for the 1.1B preset.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PRESETS = {
    # name: (hidden, intermediate, layers, heads, kv_heads, vocab, tied, rope_theta, max_pos)
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000, False, 10000.0, 2048),
    "smollm2-360m": (960, 2560, 32, 15, 5, 32000, True, 100000.0, 2048),
    "demo": (1024, 2816, 12, 16, 4, 8192, False, 10000.0, 2048),
    "tiny": (64, 172, 2, 4, 2, 512, True, 10000.0, 512),
}
_DTYPES = {"float16": ("F16", 2), "bfloat16": ("BF16", 2), "float32": ("F32", 4)}
BLOCK_ELEMS = 4 << 20  # elements generated at once


@dataclass
class SyntheticConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    rope_theta: float
    max_position_embeddings: int

    @classmethod
    def preset(cls, name: str) -> SyntheticConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(*PRESETS[name])

    def hf_config(self, dtype: str) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **asdict(self),
            "head_dim": self.hidden_size // self.num_attention_heads,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "rope_scaling": None,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": dtype,
            "initializer_range": 0.02,
        }

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        hd = h // self.num_attention_heads
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (q, h)),
                (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, q)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)),
                (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
            ]
        out.append(("model.norm.weight", (h,)))
        if not self.tie_word_embeddings:
            out.append(("lm_head.weight", (v, h)))
        return out

    @property
    def params(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.tensors())


def _encode(block: np.ndarray, dtype: str) -> bytes:
    if dtype == "float32":
        return block.astype(np.float32).tobytes()
    if dtype == "float16":
        return block.astype(np.float16).tobytes()
    bits = block.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype(np.uint16).tobytes()


def _write_safetensors(
    path: Path, items: list[tuple[str, tuple[int, ...]]], dtype: str, rng: np.random.Generator
) -> None:
    code, width = _DTYPES[dtype]
    header: dict[str, dict[str, object]] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, shape in items:
        n = int(np.prod(shape)) * width
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for _name, shape in items:
            total = int(np.prod(shape))
            norm = len(shape) == 1
            for start in range(0, total, BLOCK_ELEMS):
                n = min(BLOCK_ELEMS, total - start)
                block = rng.standard_normal(n, dtype=np.float32)
                block = 1.0 + 0.02 * block if norm else 0.02 * block
                f.write(_encode(block, dtype))
    os.replace(tmp, path)


def build_tokenizer(vocab_size: int) -> tuple[str, dict]:
    """A deterministic byte-fallback BPE trained in-process on generated text (no download, no ../shared)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    words = (
        "the a one little big small red blue green old new happy sad dog cat bird tree house river "
        "boy girl day night sun moon ran saw found made played jumped said looked went came and but "
        "then so because when where who what in on at to from with of for was is are had has"
    ).split()
    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(words, size=12)) + "." for _ in range(3000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(text, trainer)
    have = tok.get_vocab_size()
    if have < vocab_size:  # the small corpus ran out of merges: pad with inert tokens to the model's vocab
        tok.add_tokens([f"<extra_{i}>" for i in range(vocab_size - have)])
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "tokenizer_class": "LlamaTokenizer",
        "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    }
    return tok.to_str(), config


def make_checkpoint(
    out_dir,
    preset: str | SyntheticConfig = "tiny",
    *,
    dtype: str = "float16",
    seed: int = 0,
    tokenizer_dir=None,
    shard_size: int | None = None,
) -> Path:
    """Write a random-weight Hugging Face model directory; returns its path."""
    cfg = SyntheticConfig.preset(preset) if isinstance(preset, str) else preset
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        src = Path(tokenizer_dir)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
    else:
        tok_json, tok_cfg = build_tokenizer(cfg.vocab_size)
        (out / "tokenizer.json").write_text(tok_json, encoding="utf-8")
        (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
    (out / "config.json").write_text(json.dumps(cfg.hf_config(dtype), indent=1))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    rng = np.random.default_rng(seed)
    items = cfg.tensors()
    width = _DTYPES[dtype][1]
    if not shard_size:
        _write_safetensors(out / "model.safetensors", items, dtype, rng)
        return out
    shards: list[list[tuple[str, tuple[int, ...]]]] = []
    cur: list[tuple[str, tuple[int, ...]]] = []
    size = 0
    for name, shape in items:
        n = int(np.prod(shape)) * width
        if cur and size + n > shard_size:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    shards.append(cur)
    weight_map = {}
    for k, items_k in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(out / fname, items_k, dtype, rng)
        weight_map.update({name: fname for name, _ in items_k})
    total = sum(int(np.prod(s)) * width for _, s in items)
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    return out
