"""Ray underneath the pipeline: connect to a cluster, place one stage actor per node, and start them.

    "local:N"       a Ray instance started here with N stage processes (trying it out, tests)
    "auto"          the Ray cluster this machine belongs to (`ray start --head` / `ray start --address=...`)
    "HOST:PORT"...  any address ray.init() takes

On a real cluster each node runs one stage, pinned to it (a stage holds that node's RAM): the nodes in the order
Ray lists them, this one first. Ray's defaults are kept except where a stage needs otherwise: it reserves no CPU
(it is not a task that competes for a core, it is the node's model), a dead stage restarts (max_restarts) but a
pass is never retried behind the driver's back (its KV cache would not match).
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..errors import InvalidArgumentError, MissingExtraError
from ..runtime.budget import parse_budget
from .pipeline import ClusterError, first_line, raised_in_stage
from .split import StageSpec

MAX_RESTARTS = 3
LOCAL_PREFIX = "local:"
# Results up to max_direct_call_object_size go straight back to the caller instead of through Ray's shared-memory
# store: the last stage's logits (128 KB for a 32000-word vocabulary) came back in 5.5 ms through the store, 2.4 ms
# direct (measured here). Health checks every second, 5 missed: a node that vanishes (unplugged, not crashed) is
# declared dead in ~5 s instead of Ray's default ~15-25 s. A cluster started with `ray start` takes these as
# --system-config (README).
SYSTEM_CONFIG = {
    "max_direct_call_object_size": 4 << 20,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 5,
}


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError('a cluster needs Ray: pip install "edgellm[cluster]"') from None
    return ray


def parse_address(address: str) -> tuple[str | None, int]:
    """(the address ray.init takes or None for a local instance, the local stage count or 0)."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidArgumentError(f"cluster must be 'auto', a Ray address or 'local:N', got {address!r}")
    a = address.strip()
    if a.startswith(LOCAL_PREFIX):
        n = a[len(LOCAL_PREFIX) :]
        if not n.isdigit() or not 1 <= int(n) <= 64:
            raise InvalidArgumentError(f"cluster {address!r}: local:N takes N from 1 to 64 stage processes")
        return None, int(n)
    return a, 0


def connect(address: str):
    """(ray, the node ids to place stages on, or None for N local processes, and whether we started Ray)."""
    ray = import_ray()
    target, n_local = parse_address(address)
    started = False
    if not ray.is_initialized():
        try:
            if target is None:
                for key, value in SYSTEM_CONFIG.items():  # Ray reads RAY_<setting>; its processes inherit it
                    os.environ.setdefault(f"RAY_{key}", str(value))
                ray.init(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                ray.init(address=target, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClusterError(f"cannot reach the Ray cluster at {target}: {first[:200]}") from None
        started = True
    if target is None:
        return ray, [None] * n_local, started
    here = ray.get_runtime_context().get_node_id()
    alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    alive.sort(key=lambda n: n != here)  # this node first (stable otherwise)
    return ray, alive, started


def node_budgets(ray, nodes: list, node_budget, file_size: int) -> list[int]:
    """Each stage's budget: `node_budget` (one value for every node, or a list / comma-separated values, one per
    node; bytes, "300MB" or "50%" of the file), by default half of what each node has available (local
    processes share this machine's half)."""
    if node_budget is None:
        if nodes and nodes[0] is None:  # local processes on this machine
            from ..runtime.plan import default_budget

            return [default_budget() // len(nodes)] * len(nodes)
        available = ray.remote(num_cpus=0)(_available)
        return [int(b) for b in ray.get([available.options(**_on(ray, n)).remote() for n in nodes])]
    values = node_budget.split(",") if isinstance(node_budget, str) and "," in node_budget else node_budget
    if not isinstance(values, (list, tuple)):
        values = [values] * len(nodes)
    if len(values) != len(nodes):
        raise InvalidArgumentError(f"{len(values)} node budgets for {len(nodes)} nodes: give one, or one per node")
    out = []
    for v in values:
        b = parse_budget(v.strip() if isinstance(v, str) else v, file_size)
        assert b is not None
        out.append(b)
    return out


def _on(ray, node) -> dict:
    if node is None:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False)}


def _available() -> int:
    """Run on a node: the default budget there (half its available memory)."""
    from ..runtime.plan import default_budget

    return default_budget()


class StageActor:
    """The Ray actor: a Stage (stage.py) in its own process on its node."""

    def __init__(self, spec: StageSpec, path: str, header_checksum: str, direct_io: bool, threads, warm: bool):
        # A stage idles while the others compute: its OpenMP threads sleep at once instead of spinning, which on
        # shared cores (local:N) took CPU from the stage computing: 2 stages' per-token overhead over one process
        # 18-22 ms spinning, 10-11 ms passive (TinyLlama q4, measured here). Set before numba's OpenMP loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from .stage import Stage

        self.stage = Stage(spec, path, header_checksum, direct_io=direct_io, threads=threads, warm=warm)

    def forward(self, payload, start_pos: int, prompt: bool, all_logits: bool):
        return self.stage.forward(payload, start_pos, prompt, all_logits)

    def info(self):
        return self.stage.info()

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.stage.close()


def start_stages(ray, nodes: list, specs: list[StageSpec], path: str, header_checksum: str, *, direct_io: bool,
                 threads, device, warm: bool = False) -> tuple[list, list[str]]:  # fmt: skip
    """One StageActor per spec on its node; waits until every stage has loaded. Returns (actors, node names).
    `warm`: each stage runs its kernels once before it measures its baseline RSS (StageInfo, tests, bench)."""
    cls = ray.remote(num_cpus=0, max_restarts=MAX_RESTARTS, max_task_retries=0)(StageActor)
    actors = []
    for node, spec in zip(nodes, specs):
        s = replace(spec, device=device)
        actors.append(cls.options(**_on(ray, node)).remote(s, str(path), header_checksum, direct_io, threads, warm))
    names: list[str] = []
    try:
        for k, a in enumerate(actors):
            try:
                info = ray.get(a.info.remote())
            except Exception as e:
                cause = raised_in_stage(e)
                if cause is not None:
                    raise type(cause)(str(cause)) from None
                raise ClusterError(f"stage {k} did not start: {first_line(e, 300)}") from None
            names.append(info.node)
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    return actors, names
