"""Mistral: the Llama block; its sliding window caps the context so full attention stays exact."""

from __future__ import annotations

from dataclasses import dataclass

from .llama import LAYER_PIECES, NAMES, RunState, Transformer, tensor_specs
from .llama import ModelArgs as LlamaArgs


@dataclass
class ModelArgs(LlamaArgs):
    sliding_window: int | None = None

    def max_context(self) -> int:
        return min(self.max_position_embeddings, self.sliding_window or self.max_position_embeddings)


__all__ = ["LAYER_PIECES", "NAMES", "ModelArgs", "RunState", "Transformer", "tensor_specs"]
