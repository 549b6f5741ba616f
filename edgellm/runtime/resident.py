"""The weight provider for a model that fits: every tensor decoded once into RAM, one buffer per layer.

A provider hands the forward pass its weights layer by layer:
    embed(ids, out)       fill out[T, hidden] with embedding rows
    layer(i) -> dict      {"self_attn.q_proj.weight": QTensor, ...} (HF names after "model.layers.i.")
    release(i)            the forward pass is done with layer i
    head() -> (norm, lm_head)
The streaming provider (stream.py) implements the same five verbs.
"""
from __future__ import annotations

import numpy as np

from ..format import EllmFile
from ..quant import QTensor

EMBED = "model.embed_tokens.weight"


def layer_prefix(i: int) -> str:
    return f"model.layers.{i}."


def embed_rows(table: QTensor, ids: np.ndarray, out: np.ndarray) -> None:
    """out[T, hidden] = dequantized rows `ids` of the embedding table."""
    out[:] = table.dequantize(np.asarray(ids, dtype=np.int64))


class ResidentWeights:
    def __init__(self, f: EllmFile, n_layers: int):
        self.buffers: dict[int, np.ndarray] = {}      # layer -> its decoded bytes (uint8)
        self.tensors: dict[str, QTensor] = {}
        for span in f.layer_spans():
            entries = [f.tensors[n] for n in span.names]
            offsets = np.cumsum([0] + [_aligned(e.raw_bytes) for e in entries])
            buf = np.empty(int(offsets[-1]), np.uint8)
            for e, off in zip(entries, offsets):
                self.tensors[e.name] = f.read_into(e.name, buf[off:off + e.raw_bytes])
            self.buffers[span.layer] = buf
        self.layers = [{n[len(layer_prefix(i)):]: t for n, t in self.tensors.items()
                        if n.startswith(layer_prefix(i))} for i in range(n_layers)]
        self.embedding = self.tensors[EMBED]
        self.norm = self.tensors["model.norm.weight"]
        self.lm_head = self.tensors.get("lm_head.weight", self.embedding)
        self.bytes_read = f.size

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())

    def embed(self, ids, out) -> None:
        embed_rows(self.embedding, ids, out)

    def layer(self, i: int) -> dict[str, QTensor]:
        return self.layers[i]

    def release(self, i: int) -> None:
        pass

    def head(self) -> tuple[QTensor, QTensor]:
        return self.norm, self.lm_head

    def close(self) -> None:
        self.buffers.clear()


def _aligned(n: int, a: int = 64) -> int:
    """Tensors start on cache-line boundaries inside a layer buffer so kernels get aligned rows."""
    return -(-n // a) * a
