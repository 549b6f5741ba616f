"""What every architecture module declares: its tensors, as `tensor_specs(args) -> list[TensorSpec]`."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("embed", "layer", "norm", "head")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor a model of a given config has, under its Hugging Face name."""

    name: str  # e.g. "model.layers.0.self_attn.q_proj.weight"
    shape: tuple[int, ...]
    role: str  # "embed", "layer" (a block's), "norm" (the final norm) or "head" (lm_head)
    layer: int  # the unit it travels in: -1 embedding, 0..L-1 blocks, L final norm and head

    @property
    def matrix(self) -> bool:
        """A quantizable 2-D weight (norms and biases stay f32)."""
        return len(self.shape) == 2
