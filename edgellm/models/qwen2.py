"""Qwen2: the Llama block with q/k/v biases (the provider hands them over as `*.bias` tensors)."""

from __future__ import annotations

from dataclasses import dataclass

from .llama import LAYER_PIECES, NAMES, RunState, Transformer, tensor_specs
from .mistral import ModelArgs as MistralArgs


@dataclass
class ModelArgs(MistralArgs):
    rope_theta: float = 1000000.0  # Qwen2Config's default
    use_sliding_window: bool = False

    def max_context(self) -> int:
        # Qwen2 applies its window only when use_sliding_window is set.
        if not self.use_sliding_window:
            return self.max_position_embeddings
        return super().max_context()

    def biased(self) -> set[str]:
        # q/k/v always carry a bias, o_proj never (Qwen2Attention)
        mlp = {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} if self.mlp_bias else set()
        return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"} | mlp


__all__ = ["LAYER_PIECES", "NAMES", "ModelArgs", "RunState", "Transformer", "tensor_specs"]
