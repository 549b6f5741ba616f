"""edgellm plan MODEL --ram-budget X [--device D]"""
from __future__ import annotations

import json

from ..runtime.predict import predict
from .options import (add_budget_argument, add_context_argument, add_device_argument, add_model_argument,
                      add_slots_argument)

def add_arguments(p) -> None:
    add_model_argument(p)
    add_budget_argument(p)
    add_device_argument(p, what="device profile for the speed prediction", none_means="this host")
    add_context_argument(p)
    add_slots_argument(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    from .. import load
    from ..runtime.device import load_device
    dev = load_device(args.device) if args.device else None
    with load(args.model, ram_budget=args.ram_budget, context=args.context, slots=args.slots, quant=args.quant) as m:
        plan, f = m.plan, m.file
        stype = (f.header.get("quant") or {}).get("type", "q4")
        weights = sum(e.stored_bytes for e in f.entries)
        pred = predict(plan, dev, stype, weights)
    n = m.config.num_hidden_layers
    name = lambda u: "head" if u == n else f"layer {u}"  # noqa: E731
    if args.json:
        print(json.dumps({"budget": plan.budget, "total": plan.total, "breakdown": plan.breakdown(),
                          "pinned": plan.pinned, "streamed": plan.streamed, "slots": plan.slots,
                          "streamed_bytes_per_token": plan.streamed_bytes_per_pass, **pred,
                          "device": dev.name if dev else "host"}, indent=1))
        return 0
    print(f"{args.model}: budget {plan.budget / 1e6:,.1f} MB, plan uses {plan.total / 1e6:,.1f} MB")
    for k, v in plan.breakdown().items():
        print(f"  {k:<44} {v / 1e6:>10.2f} MB")
    print(f"  pinned   ({len(plan.pinned):>3}): {', '.join(name(u) for u in plan.pinned) or '-'}")
    print(f"  streamed ({len(plan.streamed):>3}): {', '.join(name(u) for u in plan.streamed) or '-'} "
          f"through {plan.slots} slot(s)")
    print(f"  embedding: {'pinned with the tied head' if plan.embed_pinned else 'rows fetched on demand'}")
    print(f"  streamed per token: {plan.streamed_bytes_per_pass / 1e6:,.2f} MB")
    dn = dev.name if dev else "host (750 MB/s cold disk)"
    print(f"  on {dn}: flash bound {pred['flash_bound_tps']:.2f} tok/s, compute ~{pred['compute_seconds'] * 1e3:.0f} "
          f"ms/token -> predicted {pred['predicted_tps']:.2f} tok/s (interpreter + numba baseline not counted)")
    return 0
