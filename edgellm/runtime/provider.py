"""The contract between the model code and the runtime: where a forward pass gets its weights.

The model asks for one unit at a time and releases it when done, so the same forward pass runs a model that
fits in RAM and one that streams; it must not care which. The pager (pager.py) implements it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from ..quant import QTensor


class LayerWeights(Protocol):
    """One layer's tensors by name without the layer prefix ("self_attn.q_proj.weight"); a dict is one.
    A streamed layer may only be asked for its tensors in use order (the model's LAYER_PIECES)."""

    def __getitem__(self, name: str) -> QTensor: ...

    def __contains__(self, name: str) -> bool: ...

    def get(self, name: str, default=None) -> QTensor | None: ...


@runtime_checkable
class WeightProvider(Protocol):
    def embed(self, ids, out: np.ndarray) -> None:
        """out[T, hidden] = the embedding rows of token ids[T]."""

    def layer(self, i: int) -> LayerWeights:
        """Layer i's weights, valid until release(i)."""

    def release(self, i: int) -> None:
        """The forward pass is done with unit i (a layer, or n_layers for the head)."""

    def resident_run(self, i: int) -> int:
        """The end of the run of pinned layers that starts at layer i: i itself when layer i streams."""

    def layers(self, first: int, end: int) -> list[LayerWeights]:
        """Pinned layers first..end-1 (a resident_run) taken together, for a pass that runs them in one kernel
        call: each valid until its release(j); their compute time is shared evenly between them."""

    def head(self) -> tuple[QTensor, Iterable[tuple[int, QTensor]]]:
        """(final norm, the logits matrix as (first row, QTensor of rows) blocks covering it in order): unit
        n_layers. A pinned head is one block; a streamed one comes a block at a time, each valid until the next
        is asked for, the last until release(n_layers). The norm is valid until release(n_layers)."""

    def close(self) -> None:
        """Stop background work and free the buffers; the provider is unusable after."""

    @property
    def bytes_read(self) -> int:
        """Bytes read from the file so far (pinned loads, streamed reads, embedding rows)."""

    def io_stats(self) -> dict:
        """A snapshot of the I/O statistics (iostats.IOStats.as_dict)."""
