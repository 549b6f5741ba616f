"""load(path, cluster=...) and plan(path, cluster=...): a Model whose layers live on several nodes.

The driver (this process) keeps the tokenizer, the sampler and the session; the stages keep the weights and
KV caches. Everything above the forward pass (generate, chat with KV reuse, speculative verification, the
server) is the single-process code, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BudgetError, EdgeLLMError, InvalidArgumentError
from ..format import EllmFile
from ..models.tensors import check_tensors
from ..runtime.device import DeviceProfile, load_device
from ..runtime.plan import Plan, blas_for, fmt_bytes
from ..source import resolve_model
from .pipeline import Pipeline, PipelineState
from .split import StageSpec, split_layers, stage_plan


@dataclass
class ClusterPlan:
    """The stages' plans side by side; totals and units as a single Plan names them (format_stats, bench)."""

    specs: list[StageSpec]
    plans: list[Plan]
    nodes: list[str]  # where each stage runs ("" before the stages start)
    context: int
    device: DeviceProfile | None = None

    @property
    def budget(self) -> int:
        return sum(s.budget for s in self.specs)

    @property
    def total(self) -> int:
        return sum(p.total for p in self.plans)

    @property
    def pinned(self) -> list[int]:
        return sorted({u for p in self.plans for u in p.pinned})

    @property
    def streamed(self) -> list[int]:
        return sorted({u for p in self.plans for u in p.streamed})

    @property
    def streamed_bytes_per_pass(self) -> int:
        return sum(p.streamed_bytes_per_pass for p in self.plans)

    @property
    def fits(self) -> bool:
        return all(p.fits for p in self.plans)

    def describe(self) -> str:
        """The split as `edgellm plan --cluster` prints it: a line per stage."""
        n = self.plans[0].n_layers if self.plans else 0
        lines = [f"{len(self.specs)} stages over {n} layers, context {self.context}:"]
        for s, p, node in zip(self.specs, self.plans, self.nodes):
            head = "" if not s.last_stage else " + head (pinned)" if n in p.pinned else " + head (streamed)"
            what = f"layers {s.first}..{s.end - 1}{head}"
            where = f" on {node}" if node else ""
            lines.append(
                f"  stage {s.index}{where}: {what}; budget {fmt_bytes(s.budget)}, plan {fmt_bytes(p.total)}; "
                f"{len([u for u in p.pinned if u < n])} layers pinned, {len([u for u in p.streamed if u < n])} "
                f"streamed ({fmt_bytes(p.streamed_bytes_per_pass)} read per token)"
            )
        lines.append(f"  the cluster reads {fmt_bytes(self.streamed_bytes_per_pass)} from flash per token")
        return "\n".join(lines)


def _context(args, context) -> int:
    from ..api import DEFAULT_CONTEXT

    ctx = int(context) if context else min(args.max_context(), DEFAULT_CONTEXT)
    if not 1 <= ctx <= args.max_context():
        raise EdgeLLMError(f"context {ctx} is outside 1..{args.max_context()} for this model")
    return ctx


def _split(f: EllmFile, module, args, budgets: list[int], context, slots: int):
    """(context, stage specs). As for one process, a default context halves (down to MIN_AUTO_CONTEXT, with a
    ContextReduced warning) while no split fits the budgets; one asked for is kept."""
    from ..api import MIN_AUTO_CONTEXT, PREFILL_CHUNK, ContextReduced

    ctx = first = _context(args, context)
    while True:
        try:
            specs = split_layers(f, module, args, budgets, ctx, min(PREFILL_CHUNK, ctx), slots)
            break
        except BudgetError:
            if context or ctx <= MIN_AUTO_CONTEXT:
                raise
            ctx = max(MIN_AUTO_CONTEXT, ctx // 2)
    if ctx < first:
        import warnings

        warnings.warn(
            f"context reduced to {ctx} tokens to fit the node budgets (set context= / --context to choose)",
            ContextReduced,
            stacklevel=3,
        )
    return ctx, specs


def _model(f: EllmFile):
    """(module, ModelArgs) of an opened file whose tensors are all there (one FormatError otherwise)."""
    from ..api import _model_of

    check_tensors(f)
    return _model_of(f)


def plan_cluster(path, *, cluster: str, node_budget=None, context=None, device=None, slots: int = 2,
                 quant: str | None = None) -> ClusterPlan:  # fmt: skip
    """The split load(path, cluster=...) would make, from the file header and the nodes' budgets."""
    from .ray_cluster import connect, node_budgets, parse_address

    target, n_local = parse_address(cluster)
    dev = load_device(device) if device is not None else None
    with EllmFile(resolve_model(path, quant)) as f:
        module, args = _model(f)
        if target is None and node_budget is not None:  # local processes with given budgets: no Ray needed
            budgets = node_budgets(None, [None] * n_local, node_budget, f.size)
        else:
            ray, nodes, started = connect(cluster)
            try:
                budgets = node_budgets(ray, nodes, node_budget, f.size)
            finally:
                if started:
                    ray.shutdown()
        ctx, specs = _split(f, module, args, budgets, context, slots)
        plans = [stage_plan(f, module, args, s, dev) for s in specs]
    return ClusterPlan(specs, plans, [""] * len(specs), ctx, dev)


def load_cluster(path, *, cluster: str, node_budget=None, threads=None, context=None, device=None,
                 slots: int = 2, direct_io: bool = True, quant: str | None = None, warm: bool = False):  # fmt: skip
    """edgellm.load(path, cluster=...): see edgellm.api.load. `warm`: stages measure their baseline RSS after
    running their kernels once (Stage), so StageInfo's peak over baseline is what their budgets bound."""
    from ..api import Model
    from ..kernels.parallel import FixedThreads
    from ..models.llama import VERIFY_ROWS
    from .ray_cluster import connect, node_budgets, start_stages

    dev = load_device(device) if device is not None else None
    f = EllmFile(resolve_model(path, quant))
    ray, started, pipe = None, False, None
    try:
        module, args = _model(f)  # before Ray starts: a file it cannot run fails at once
        ray, nodes, started = connect(cluster)
        budgets = node_budgets(ray, nodes, node_budget, f.size)
        ctx, specs = _split(f, module, args, budgets, context, slots)
        plans = [stage_plan(f, module, args, s, dev) for s in specs]
        actors, names = start_stages(
            ray, nodes, specs, str(f.path.resolve()), f.header_checksum, direct_io=direct_io, threads=threads,
            device=device if device is None or isinstance(device, DeviceProfile) else str(device), warm=warm,
        )  # fmt: skip
        vocab = args.vocab_size
        state = PipelineState(
            ctx, specs[0].chunk, blas_for(f), np.zeros(vocab, np.float32), np.zeros((VERIFY_ROWS, vocab), np.float32)
        )
        pipe = Pipeline(ray, actors, specs, names, state)
        plan = ClusterPlan(specs, plans, names, ctx, dev)
        model = Model(f, args, module, pipe, plan, transformer=pipe)  # type: ignore[arg-type]
        model.session.threads = FixedThreads(1)  # the stages choose their own threads; the driver computes nothing
        pipe.on_cache_lost = lambda: model.session.ids.clear()
        model.cluster_shutdown = ray.shutdown if started else None
        return model
    except BaseException:
        if pipe is not None:
            pipe.close()
        if ray is not None and started:
            ray.shutdown()
        f.close()
        raise


def check_cluster_args(cluster, node_budget, ram_budget, draft) -> None:
    """The load() and plan() arguments that go (or do not go) with a cluster, refused in one line each."""
    if cluster is None:
        if node_budget is not None:
            raise InvalidArgumentError("node_budget (--node-budget) is for a cluster: give cluster= (--cluster) too")
        return
    if ram_budget is not None:
        raise InvalidArgumentError(
            "with a cluster each node has its own budget: give --node-budget (node_budget=) instead of --ram-budget"
        )
    if draft is not None:
        raise InvalidArgumentError("a draft model is not supported on a cluster yet; prompt lookup still drafts")
