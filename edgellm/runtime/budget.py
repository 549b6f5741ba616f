"""Turn an opened file + run settings into a memory plan: every buffer counted before one is allocated."""
from __future__ import annotations

from ..format import EllmFile
from ..format.spec import EMBED_CHUNK
from .plan import TOKENIZER_FACTOR, LayerCost, Plan, default_budget, make_plan, parse_size
from .stream import EMBED, _offsets, _spans, staging_room, unit_names, unit_pieces

DEFAULT_SLOTS = 2


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
    budget = parse_size(ram_budget) if ram_budget is not None else default_budget()
    return make_plan(unit_costs(f, n_layers), budget, fixed_costs(f, run_state_bytes, decode_threads),
                     n_layers, slots=slots, tied=tied, staging=staging_room(f))
