"""What every architecture module declares: its tensors, as `tensor_specs(args) -> list[TensorSpec]`, and the
names of the ones the runtime handles specially (`NAMES`)."""

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
    sensitive: bool = False  # its quantization error costs the most per byte: mixed recipes keep it wider

    @property
    def matrix(self) -> bool:
        """A quantizable 2-D weight (norms and biases stay f32)."""
        return len(self.shape) == 2


@dataclass(frozen=True)
class TensorNames:
    """The names the runtime looks up by role: the embedding (also the head of a tied model), the final norm,
    lm_head, and the prefix of layer i's tensors."""

    embed: str
    final_norm: str
    lm_head: str
    layer_prefix: str  # formatted with the layer index

    def layer(self, i: int) -> str:
        return self.layer_prefix.format(i)
