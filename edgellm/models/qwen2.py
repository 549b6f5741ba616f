"""Qwen2: the Llama block with q/k/v biases (the provider hands them over as `*.bias` tensors)."""
from dataclasses import dataclass

from .llama import ModelArgs as LlamaArgs
from .llama import RunState, Transformer


@dataclass
class ModelArgs(LlamaArgs):
    rope_theta: float = 1000000.0     # Qwen2Config's default
    use_sliding_window: bool = False

    def max_context(self) -> int:
        # Qwen2 applies its window only when use_sliding_window is set.
        if not self.use_sliding_window:
            return self.max_position_embeddings
        return super().max_context()


__all__ = ["ModelArgs", "RunState", "Transformer"]
