"""The memory plan: what stays pinned in RAM, what streams through a ring of slots, and what it all costs.

Layers are read cyclically, once per token, so an LRU cache is the worst policy (every access misses once
the model exceeds it). Instead a fixed set is pinned and the rest stream through `slots` buffers:
    pinned      the output head and final norm first (every token needs them), then whole layers
    streamed    the other layers, each read from flash once per forward pass into a free slot; a head that
                does not fit streams too, in row blocks (costs.head_blocks)
    embedding   rows fetched on demand from row-chunked storage unless the table is pinned (tied head)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psutil

from ..errors import EdgeLLMError
from ..format import EllmFile
from ..quant import integer_kernels
from .costs import LayerCost, fixed_costs, staging_bytes, unit_costs
from .device import DeviceProfile

DEFAULT_FRACTION = 0.5  # of available memory, when no budget is given
HEAD_RESIDENT = "streamed head's norm and scales"  # the breakdown line of what a streamed head keeps
DEFAULT_SLOTS = 2
DRAFT_MODEL = "draft model"  # the breakdown line of a speculative draft model: its weights and run state
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


def parse_size(value) -> int:
    """Bytes from an int or a string like "512MB", "1.5GiB", "300M"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise EdgeLLMError(f"RAM budget must be positive, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise EdgeLLMError(f"cannot read the size {value!r}: use bytes or e.g. 512MB, 1.5GiB")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise EdgeLLMError(f"RAM budget must be positive, got {value!r}")
    return n


def fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n} bytes"


def default_budget() -> int:
    return int(psutil.virtual_memory().available * DEFAULT_FRACTION)


@dataclass
class Plan:
    budget: int
    pinned: list[int]
    streamed: list[int]
    slots: int
    slot_bytes: int  # the largest decoded piece of a streamed layer
    staging_bytes: int  # the staging ring the prefetcher reads into (only when something streams)
    embed_pinned: bool
    costs: dict[int, LayerCost]
    fixed: dict[str, int] = field(default_factory=dict)  # run state, tokenizer, decoder scratch...
    fits: bool = True  # total <= budget; load() refuses a plan that does not fit
    minimum_budget: int = 0  # the cheapest plan's total at this context: the smallest budget that works
    context: int = 0  # tokens the KV cache holds
    default_context: int | None = None  # the default context before it was halved to fit; None: asked for
    device: DeviceProfile | None = None  # what the prediction is for (and the flash load() emulates)
    predicted: dict = field(default_factory=dict)  # tok/s bounds on that device (predict.py)
    kv_dtype: str = "f32"  # what the KV cache stores: f16 for quantized weights (kv_dtype_for)
    blas: bool = True  # the run state holds prefill's dequantization blocks (blas_for)
    draft: Plan | None = None  # the draft model's plan (all pinned), counted in `fixed` as DRAFT_MODEL

    @property
    def pinned_bytes(self) -> int:
        return sum(self.costs[i].raw for i in self.pinned)

    @property
    def total(self) -> int:
        return self.pinned_bytes + self.slots * self.slot_bytes + self.staging_bytes + sum(self.fixed.values())

    @property
    def streamed_bytes_per_pass(self) -> int:
        return sum(self.costs[i].stored for i in self.streamed)

    @property
    def n_layers(self) -> int:
        return len(self.costs) - 1  # units are the layers and the head

    def breakdown(self) -> dict[str, int]:
        return {
            "pinned weights": self.pinned_bytes,
            "stream slots": self.slots * self.slot_bytes,
            "staging": self.staging_bytes,
            **self.fixed,
        }


def kv_dtype_for(f: EllmFile) -> str:
    """f16 for a file with any quantized or f16 matrix: its weights already carry more error than an f16
    cache adds, for half the bytes; f32 for an all-f32 file, whose logits match transformers' to ~1e-5."""
    return "f32" if set(f.weight_types()) <= {"f32"} else "f16"


def blas_for(f: EllmFile) -> bool:
    """Whether any matrix takes prefill's dequantize + BLAS path (f32, f16, q4 at group 64/128), which needs
    the workspace's dequantization blocks; the integer kernels of the others need none."""
    return any(len(e.shape) == 2 and not integer_kernels(e.layout) for e in f.entries)


def plan_file(
    f: EllmFile, n_layers: int, tied: bool, run_state_bytes: int, budget: int, slots: int = 2, decode_threads: int = 1
) -> Plan:
    """plan_units for an opened file, its costs from the header (costs.py). Reads no weight, allocates none."""
    return plan_units(
        unit_costs(f, n_layers),
        budget,
        fixed_costs(f, run_state_bytes, decode_threads),
        n_layers,
        slots=slots,
        tied=tied,
        staging=staging_bytes(f),
    )


def plan_units(
    costs: dict[int, LayerCost],
    budget: int,
    fixed: dict[str, int],
    n_layers: int,
    slots: int = 2,
    tied: bool = False,
    staging: int = 0,
    layers: range | None = None,
    with_head: bool = True,
) -> Plan:
    """Pin the head, then as many layers as fit beside `slots` stream slots; spread the pinned layers evenly
    so the prefetcher always has a streamed layer to read while a pinned one computes. When the head does not
    fit, it streams and the layers that fit are pinned instead. Of the plans that fit, the one streaming the
    fewest bytes per token (ties: the one pinning the head, whose table then also serves embedding rows).
    When nothing fits the budget: the cheapest plan, with fits=False.
    A cluster stage plans only its `layers` (default: all), and the head only `with_head` (the last stage)."""
    if slots < 1:
        raise EdgeLLMError("slots must be >= 1")
    head = n_layers
    blocks = list(range(n_layers) if layers is None else layers)
    order = _spread(blocks)
    plans = []
    for first in ([head], []) if with_head else ([],):
        for k in range(len(order) + 1):
            pinned = sorted(first + order[:k])
            streamed = [i for i in blocks + [head] * with_head if i not in pinned]
            plans.append(_plan_for(costs, budget, fixed, pinned, streamed, slots, tied, staging))
    # pinning everything needs no slots, so the cheapest plan need not be the all-streamed one
    cheapest = min(plans, key=lambda p: p.total)
    fitting = [p for p in plans if p.total <= budget]
    best = min(fitting, key=lambda p: (p.streamed_bytes_per_pass, head not in p.pinned)) if fitting else cheapest
    best.fits, best.minimum_budget = bool(fitting), cheapest.total
    return best


def too_small_message(budget: int, minimum: int) -> str:
    return (
        f"a RAM budget of {fmt_bytes(budget)} is too small for this model; the minimum workable budget is "
        f"{minimum / 1e6:,.2f} MB (try --ram-budget {-(-minimum // 10**5) / 10:g}MB, or a shorter --context)"
    )


def _plan_for(costs, budget, fixed, pinned, streamed, slots, tied, staging) -> Plan:
    slot = max((costs[i].piece or costs[i].raw for i in streamed), default=0)
    n_slots = min(slots, len(streamed)) if streamed else 0
    head = max(costs)
    embed_pinned = tied and head in pinned  # a tied head is the embedding table itself
    f = dict(fixed)
    if embed_pinned:
        f.pop("embedding rows", None)
    if head in streamed and costs[head].resident:
        f[HEAD_RESIDENT] = costs[head].resident
    return Plan(budget, pinned, streamed, n_slots, slot, staging if streamed else 0, embed_pinned, costs, f)


def _spread(blocks: list[int]) -> list[int]:
    """Blocks in the order they get pinned: evenly spaced at every count (0, L/2, L/4, 3L/4, ...)."""
    n = len(blocks)
    out: list[int] = []
    seen: set[int] = set()
    step = n
    while len(out) < n:
        for i in range(0, n, max(step, 1)):
            if i not in seen:
                seen.add(i)
                out.append(blocks[i])
        if step == 1:
            break
        step = max(1, step // 2)
    return out
