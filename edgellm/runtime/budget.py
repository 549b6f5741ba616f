"""Turn an opened file + run settings into a memory plan: every buffer counted before one is allocated."""
from __future__ import annotations

import math
import re

from ..errors import EdgeLLMError, InvalidArgumentError
from ..format import EllmFile
from ..format.spec import EMBED_CHUNK
from .plan import TOKENIZER_FACTOR, LayerCost, Plan, best_plan, default_budget, make_plan, parse_size
from .stream import EMBED, _offsets, _spans, staging_room, unit_names, unit_pieces

DEFAULT_SLOTS = 2
_NOT_POSITIVE = re.compile(r"\s*(-.*|[0.]+\s*[a-zA-Z]*)\s*")     # "-5", "0", "0MB"
BUDGET_HELP = "bytes, a size like 300MB or 1.5GiB, or a share of the model file like 50%"


def _share(value) -> float | None:
    """The fraction a "50%" budget names; None when `value` is not a percentage."""
    if not isinstance(value, str) or not value.strip().endswith("%"):
        return None
    try:
        frac = float(value.strip()[:-1]) / 100
    except ValueError:
        raise InvalidArgumentError(f"cannot read the RAM budget {value!r}: use {BUDGET_HELP}") from None
    if not math.isfinite(frac) or frac <= 0:
        raise InvalidArgumentError(f"the RAM budget must be a positive share of the model file, got {value!r}")
    return frac


def _size(value) -> int:
    """parse_size with the budget's own messages (a negative size is refused as such, not as unreadable)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidArgumentError(f"the RAM budget must be {BUDGET_HELP}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"the RAM budget must be finite, got {value!r}")
    if isinstance(value, (int, float)) and value <= 0 or isinstance(value, str) and _NOT_POSITIVE.fullmatch(value):
        raise InvalidArgumentError(f"the RAM budget must be positive, got {value!r}")
    try:
        return parse_size(value)
    except EdgeLLMError:
        raise InvalidArgumentError(f"cannot read the RAM budget {value!r}: use {BUDGET_HELP}") from None


def parse_budget(value, model_bytes: int) -> int | None:
    """The RAM budget in bytes from every spelling the CLI and load() accept: an int, "300MB", "1.5GiB", or
    "50%" of the model file (`model_bytes`). None stays None: the runtime's default."""
    if value is None:
        return None
    frac = _share(value)
    return max(1, int(frac * model_bytes)) if frac is not None else _size(value)


def check_budget(value) -> None:
    """Raise InvalidArgumentError now for a budget that cannot be read, before any file is opened."""
    if value is not None and _share(value) is None:
        _size(value)


def unit_costs(f: EllmFile, n_layers: int) -> dict[int, LayerCost]:
    costs = {}
    for u in range(n_layers + 1):
        names = unit_names(f, u, n_layers)
        spans = _spans([f.tensors[n] for n in names])
        piece = max(_offsets(f, p)[1] for p in unit_pieces(f, u, n_layers))
        costs[u] = LayerCost(u, _offsets(f, names)[1], max(e - s for s, e, _ in spans), piece)
    return costs


def fixed_costs(f: EllmFile, run_state_bytes: int, decode_threads: int) -> dict[str, int]:
    tok = f.tokenizer or {}
    max_chunk = max(c.raw_length for e in f.entries for c in e.chunks)
    embed = f.tensors[EMBED].layout
    return {
        "run state (KV cache, activations, scratch)": run_state_bytes,
        "tokenizer": TOKENIZER_FACTOR * len(tok.get("json", "")),
        "decoder scratch": (decode_threads + 1) * max_chunk,
        "embedding rows": 2 * max(EMBED_CHUNK, embed.code_row_bytes) + embed.nbytes // max(embed.rows, 1) * 4,
    }


def plan_for(f: EllmFile, n_layers: int, tied: bool, run_state_bytes: int, ram_budget=None,
             slots: int = DEFAULT_SLOTS, decode_threads: int = 1) -> Plan:
    budget = parse_budget(ram_budget, f.size) if ram_budget is not None else default_budget()
    return make_plan(unit_costs(f, n_layers), budget, fixed_costs(f, run_state_bytes, decode_threads),
                     n_layers, slots=slots, tied=tied, staging=staging_room(f))


def best_plan_for(f: EllmFile, n_layers: int, tied: bool, run_state_bytes: int, budget: int,
                  slots: int = DEFAULT_SLOTS, decode_threads: int = 1) -> tuple[Plan, bool]:
    """plan_for without the error, for reports: (the plan, True), or (the cheapest plan, False) when nothing
    fits `budget` bytes. Reads only the file's header; allocates nothing."""
    return best_plan(unit_costs(f, n_layers), budget, fixed_costs(f, run_state_bytes, decode_threads),
                     n_layers, slots=slots, tied=tied, staging=staging_room(f))
