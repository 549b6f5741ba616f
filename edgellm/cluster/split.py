"""The cluster planner: which contiguous layers each node holds, chosen from the nodes' RAM budgets so that the
cluster reads as few bytes from flash per token as it can, and what each stage's own plan then is.

A stage plans its range exactly as one process plans a whole model (runtime/plan.py), with two differences:
only the first stage pays for embedding rows and only the last one holds the head (final norm + logits matrix).
The split is a dynamic programme over (stage, first layer of the rest): the cost of a range on a node is the
bytes it streams per token under that node's budget (a range that does not fit is ruled out); of the splits
streaming equally little, the one whose fullest node uses the smallest share of its budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ..errors import BudgetError
from ..format import EllmFile
from ..runtime.costs import RUN_STATE, fixed_costs, staging_bytes, unit_costs
from ..runtime.device import DeviceProfile
from ..runtime.plan import Plan, blas_for, fmt_bytes, kv_dtype_for, plan_units

TOKENIZER = "tokenizer"  # a stage holds none: the driver tokenizes
EMBED_ROWS = "embedding rows"  # only the first stage looks rows up


@dataclass(frozen=True)
class StageSpec:
    """What one stage holds and under what budget; picklable, sent to the node that runs it."""

    index: int
    n_stages: int
    first: int  # layers first..end-1
    end: int
    budget: int  # bytes
    context: int
    chunk: int  # most tokens a pass carries
    slots: int = 2
    device: str | DeviceProfile | None = None  # a device profile (or its name or TOML path) to emulate there

    @property
    def first_stage(self) -> bool:
        return self.index == 0

    @property
    def last_stage(self) -> bool:
        return self.index == self.n_stages - 1


@dataclass(frozen=True)
class FileCosts:
    """What every stage plan of one file starts from, read from its header once (a split tries hundreds of
    ranges: unit_costs for each took 95% of a 3-node SmolLM2 split's 2.3 s)."""

    units: dict  # costs.unit_costs: unit -> LayerCost
    fixed: dict  # costs.fixed_costs of a stage (no tokenizer), its run state line to be filled in
    staging: int
    kv: str  # kv_dtype_for
    blas: bool  # blas_for

    @classmethod
    def of(cls, f: EllmFile, args) -> FileCosts:
        fixed = fixed_costs(f, 0, 1)
        fixed.pop(TOKENIZER)
        return cls(unit_costs(f, args.num_hidden_layers), fixed, staging_bytes(f), kv_dtype_for(f), blas_for(f))


def stage_plan(f: EllmFile, module, args, spec: StageSpec, device: DeviceProfile | None = None) -> Plan:
    """The plan of one stage: its layers (and the head on the last stage) under its budget."""
    return _plan(module, args, FileCosts.of(f, args), spec, device)


def _plan(module, args, fc: FileCosts, spec: StageSpec, device=None) -> Plan:
    layers = range(spec.first, spec.end)
    fixed = dict(fc.fixed)
    fixed[RUN_STATE] = module.RunState.nbytes_for(args, spec.context, spec.chunk, fc.kv, fc.blas, layers=layers)
    if not spec.first_stage:
        fixed.pop(EMBED_ROWS)
    p = plan_units(
        fc.units,
        spec.budget,
        fixed,
        args.num_hidden_layers,
        slots=spec.slots,
        tied=args.tie_word_embeddings,
        staging=fc.staging,
        layers=layers,
        with_head=spec.last_stage,
    )
    if not spec.first_stage:  # the tied table pinned here serves no embedding lookup: the first stage does those
        p.embed_pinned = False
    p.kv_dtype, p.blas, p.context, p.device = fc.kv, fc.blas, spec.context, device
    return p


def split_layers(
    f: EllmFile, module, args, budgets: list[int], context: int, chunk: int, slots: int = 2
) -> list[StageSpec]:
    """One contiguous range of layers per budget, in order (node i holds stage i), minimising the bytes the
    cluster streams per token. Raises BudgetError when no split fits every budget."""
    n, s = args.num_hidden_layers, len(budgets)
    if s > n:
        raise BudgetError(f"{s} nodes for {n} layers: a stage holds at least one layer; use at most {n} nodes")
    fc = FileCosts.of(f, args)

    def spec(i: int, a: int, b: int) -> StageSpec:
        return StageSpec(i, s, a, b, budgets[i], context, chunk, slots)

    @cache
    def cost(i: int, a: int, b: int) -> tuple[int, float] | None:
        p = _plan(module, args, fc, spec(i, a, b))
        return (p.streamed_bytes_per_pass, p.total / budgets[i]) if p.fits else None

    @cache
    def best(i: int, a: int) -> tuple[tuple[int, float], int] | None:
        """The cheapest way for stages i.. to hold layers a..n-1: ((streamed bytes, fullest share), end of i)."""
        if i == s - 1:
            c = cost(i, a, n)
            return (c, n) if c is not None else None
        found = None
        for b in range(a + 1, n - (s - 1 - i) + 1):
            here, rest = cost(i, a, b), best(i + 1, b)
            if here is None or rest is None:
                continue
            total = (here[0] + rest[0][0], max(here[1], rest[0][1]))
            if found is None or total < found[0]:
                found = (total, b)
        return found

    if best(0, 0) is None:
        alone = _plan(module, args, fc, StageSpec(0, 1, 0, n, budgets[0], context, chunk, slots)).minimum_budget
        raise BudgetError(
            f"the model does not fit these {s} node budgets ({', '.join(fmt_bytes(b) for b in budgets)}) in any "
            f"split of its {n} layers; one node alone would need {fmt_bytes(alone)}: raise --node-budget or add nodes"
        )
    out, a = [], 0
    for i in range(s):
        found = best(i, a)
        assert found is not None
        out.append(spec(i, a, found[1]))
        a = found[1]
    return out
