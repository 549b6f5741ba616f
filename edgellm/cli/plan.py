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
    from ..errors import BudgetError
    from ..format import EllmFile
    from ..generate.params import check_load_args
    from ..runtime.budget import parse_budget
    from ..runtime.device import load_device
    from ..runtime.plan import default_budget, too_small_message
    from ..source import resolve_model
    check_load_args(context=args.context, slots=args.slots, ram_budget=args.ram_budget)
    dev = load_device(args.device) if args.device else None
    path = resolve_model(args.model, args.quant)
    with EllmFile(path) as f:            # the header only: no weight is read, no buffer allocated
        budget = parse_budget(args.ram_budget, f.size) if args.ram_budget is not None else default_budget()
        n, ctx, plan, fits = plan_file(f, budget, args.context, args.slots)
        full = plan_file(f, 1 << 62, args.context, args.slots)[1]          # the context before any halving
        minimum = plan_file(f, 0, ctx, args.slots)[2].total      # the cheapest plan at that context
        stype = (f.header.get("quant") or {}).get("type", "q4")
        pred = predict(plan, dev, stype, sum(e.stored_bytes for e in f.entries))
    dn = dev.name if dev else "host"
    if args.json:
        finite = {k: (v if v != float("inf") else None) for k, v in pred.items()}
        print(json.dumps({"budget": budget, "fits": fits, "minimum_budget": minimum, "context": ctx,
                          "total": plan.total, "breakdown": plan.breakdown(), "pinned": plan.pinned,
                          "streamed": plan.streamed, "slots": plan.slots,
                          "streamed_bytes_per_token": plan.streamed_bytes_per_pass, **finite, "device": dn},
                         indent=1))
    else:
        print("\n".join(report_lines(args.model, n, ctx, full, plan, fits, minimum, pred, dn)))
    if not fits:
        raise BudgetError(too_small_message(budget, minimum))
    return 0


def plan_file(f, budget: int, context=None, slots: int = 2):
    """(layers, context, plan, fits) as edgellm.load would plan `f` for `budget` bytes, without loading it:
    the default context halves (down to 256) while its KV cache does not fit; an explicit one is kept."""
    from ..api import DEFAULT_CONTEXT, MIN_AUTO_CONTEXT, PREFILL_CHUNK
    from ..errors import EdgeLLMError
    from ..models import get_model_module
    from ..runtime.budget import best_plan_for
    module = get_model_module(f.config.get("model_type"))
    a = module.ModelArgs.from_dict(f.config)
    ctx = int(context) if context else min(a.max_context(), DEFAULT_CONTEXT)
    if ctx < 1 or ctx > a.max_context():
        raise EdgeLLMError(f"context {ctx} is outside 1..{a.max_context()} for this model")
    while True:
        run_bytes = module.RunState.nbytes_for(a, ctx, min(PREFILL_CHUNK, ctx))
        plan, fits = best_plan_for(f, a.num_hidden_layers, a.tie_word_embeddings, run_bytes, budget, slots)
        if fits or context or ctx <= MIN_AUTO_CONTEXT:
            return a.num_hidden_layers, ctx, plan, fits
        ctx = max(MIN_AUTO_CONTEXT, ctx // 2)


def report_lines(model, n: int, ctx: int, full_ctx: int, plan, fits: bool, minimum: int, pred: dict,
                 device: str) -> list[str]:
    """The text report: the breakdown always; then the prediction, or why the budget is too small."""
    name = lambda u: "head" if u == n else f"layer {u}"  # noqa: E731
    mb = lambda b: f"{b / 1e6:,.2f} MB"                   # noqa: E731
    what = "plan uses" if fits else "does NOT fit: the smallest plan needs"
    halved = f" (the default {full_ctx} halved to fit)" if ctx < full_ctx else ""
    out = [f"{model}: budget {mb(plan.budget)}, context {ctx}{halved}, {what} {mb(plan.total)}"]
    out += [f"  {k:<44} {v / 1e6:>10.2f} MB" for k, v in plan.breakdown().items()]
    out += [f"  pinned   ({len(plan.pinned):>3}): {', '.join(name(u) for u in plan.pinned) or '-'}",
            (f"  streamed ({len(plan.streamed):>3}): {', '.join(name(u) for u in plan.streamed) or '-'} "
             f"through {plan.slots} slot(s)"),
            f"  embedding: {'pinned with the tied head' if plan.embed_pinned else 'rows fetched on demand'}",
            f"  streamed per token: {mb(plan.streamed_bytes_per_pass)}",
            f"  minimum workable budget at context {ctx}: {mb(minimum)}"]
    if not fits:
        part, size = max(plan.breakdown().items(), key=lambda kv: kv[1])
        alone = "alone exceeds the budget" if size > plan.budget else "is the largest part"
        out.append(f"  does not fit: {mb(plan.total - plan.budget)} over the budget; {part} ({mb(size)}) {alone}"
                   + ("; a shorter --context shrinks the KV cache" if part.startswith("run state") else ""))
        return out
    flash = "nothing streams" if pred["io_seconds"] == 0 else f"flash bound {pred['flash_bound_tps']:,.2f} tok/s"
    disk = "" if device != "host" else " (750 MB/s cold disk)"
    out.append(f"  on {device}{disk}: {flash}, compute bound {pred['compute_bound_tps']:,.1f} tok/s "
               f"({pred['compute_seconds'] * 1e3:.2f} ms/token) -> predicted {pred['predicted_tps']:,.2f} tok/s "
               f"(interpreter + numba baseline not counted)")
    return out
