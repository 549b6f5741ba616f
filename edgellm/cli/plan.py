"""edgellm plan MODEL --ram-budget X [--device D]"""

from __future__ import annotations

import json

from .options import (
    add_budget_argument,
    add_cluster_arguments,
    add_context_argument,
    add_device_argument,
    add_model_argument,
    add_slots_argument,
)


def add_arguments(p) -> None:
    add_model_argument(p)
    add_budget_argument(p)
    add_device_argument(p, what="device profile for the speed prediction", none_means="this host")
    add_context_argument(p)
    add_slots_argument(p)
    add_cluster_arguments(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    from ..api import plan
    from ..errors import BudgetError
    from ..runtime.plan import too_small_message

    if args.cluster is not None or args.node_budget is not None:
        return _cluster(args)
    # the header only: no weight is read, no buffer allocated
    p = plan(
        args.model,
        ram_budget=args.ram_budget,
        context=args.context,
        device=args.device,
        slots=args.slots,
        quant=args.quant,
    )
    pred = p.predicted
    dn = p.device.name if p.device else "host"
    if args.json:
        finite = {k: (v if v != float("inf") else None) for k, v in pred.items()}
        print(
            json.dumps(
                {
                    "budget": p.budget,
                    "fits": p.fits,
                    "minimum_budget": p.minimum_budget,
                    "context": p.context,
                    "total": p.total,
                    "breakdown": p.breakdown(),
                    "pinned": p.pinned,
                    "streamed": p.streamed,
                    "slots": p.slots,
                    "streamed_bytes_per_token": p.streamed_bytes_per_pass,
                    **finite,
                    "device": dn,
                },
                indent=1,
            )
        )
    else:
        print("\n".join(report_lines(args.model, p, dn)))
    if not p.fits:
        raise BudgetError(too_small_message(p.budget, p.minimum_budget))
    return 0


def report_lines(model, plan, device: str) -> list[str]:
    """The text report of an edgellm.plan: the breakdown always; then the prediction, or why the budget is too
    small."""
    n, ctx, fits, minimum, pred = plan.n_layers, plan.context, plan.fits, plan.minimum_budget, plan.predicted
    full_ctx = plan.default_context or ctx
    name = lambda u: "head" if u == n else f"layer {u}"  # noqa: E731
    mb = lambda b: f"{b / 1e6:,.2f} MB"  # noqa: E731
    what = "plan uses" if fits else "does NOT fit: the smallest plan needs"
    halved = f" (the default {full_ctx} halved to fit)" if ctx < full_ctx else ""
    out = [f"{model}: budget {mb(plan.budget)}, context {ctx}{halved}, {what} {mb(plan.total)}"]
    out += [f"  {k:<44} {v / 1e6:>10.2f} MB" for k, v in plan.breakdown().items()]
    out += [
        f"  pinned   ({len(plan.pinned):>3}): {', '.join(name(u) for u in plan.pinned) or '-'}",
        (
            f"  streamed ({len(plan.streamed):>3}): {', '.join(name(u) for u in plan.streamed) or '-'} "
            f"through {plan.slots} slot(s)"
        ),
        f"  embedding: {'pinned with the tied head' if plan.embed_pinned else 'rows fetched on demand'}",
        f"  streamed per token: {mb(plan.streamed_bytes_per_pass)}",
        f"  minimum workable budget at context {ctx}: {mb(minimum)}",
    ]
    if not fits:
        part, size = max(plan.breakdown().items(), key=lambda kv: kv[1])
        alone = "alone exceeds the budget" if size > plan.budget else "is the largest part"
        out.append(
            f"  does not fit: {mb(plan.total - plan.budget)} over the budget; {part} ({mb(size)}) {alone}"
            + ("; a shorter --context shrinks the KV cache" if part.startswith("run state") else "")
        )
        return out
    flash = "nothing streams" if pred["io_seconds"] == 0 else f"flash bound {pred['flash_bound_tps']:,.2f} tok/s"
    disk = "" if device != "host" else " (750 MB/s cold disk)"
    out.append(
        f"  on {device}{disk}: {flash}, compute bound {pred['compute_bound_tps']:,.1f} tok/s "
        f"({pred['compute_seconds'] * 1e3:.2f} ms/token) -> predicted {pred['predicted_tps']:,.2f} tok/s "
        f"(interpreter + numba baseline not counted)"
    )
    return out


def _cluster(args) -> int:
    """plan --cluster: the split of layers over the nodes, a line per stage."""
    from ..api import plan
    from ..cluster.driver import ClusterPlan

    cp = plan(  # refuses --node-budget without --cluster, and --ram-budget beside it
        args.model,
        ram_budget=args.ram_budget,
        cluster=args.cluster,
        node_budget=args.node_budget,
        context=args.context,
        device=args.device,
        slots=args.slots,
        quant=args.quant,
    )
    assert isinstance(cp, ClusterPlan)
    if args.json:
        stages = [
            {
                "stage": s.index,
                "layers": [s.first, s.end],
                "head": s.last_stage,
                "budget": s.budget,
                "total": p.total,
                "pinned": p.pinned,
                "streamed": p.streamed,
                "streamed_bytes_per_token": p.streamed_bytes_per_pass,
                "breakdown": p.breakdown(),
            }
            for s, p in zip(cp.specs, cp.plans)
        ]
        print(json.dumps({"context": cp.context, "stages": stages}, indent=1))
    else:
        print(cp.describe())
    return 0
