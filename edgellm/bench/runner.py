"""Run benchmark children: optionally with a cold page cache and inside a cgroup v1 memory limit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def drop_caches() -> bool:
    """Drop the page cache (root only). Returns False where that is not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cold_read_mb_s(path, direct: bool = False, block: int = 4 << 20) -> float:
    """Sequential read speed of `path` with the page cache dropped first."""
    drop_caches()
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    import mmap
    buf = mmap.mmap(-1, block)
    total, t0 = 0, time.perf_counter()
    try:
        while True:
            n = os.readv(fd, [buf])
            total += n
            if n < block:
                break
    finally:
        os.close(fd)
    return total / (time.perf_counter() - t0) / 1e6


def _cgroup(limit: int) -> Path | None:
    """A child memory cgroup (v1) with `limit` bytes, or None where cgroups are unavailable."""
    if not (CGROUP_ROOT / "memory.limit_in_bytes").exists():
        return None
    cg = CGROUP_ROOT / f"edgellm-bench-{os.getpid()}"
    try:
        cg.mkdir(exist_ok=True)
        (cg / "memory.limit_in_bytes").write_text(str(limit))
        return cg
    except OSError:
        return None


def run_limited(cmd: list[str], memory_limit: int | None = None, timeout: float = 1800):
    """subprocess.run(cmd) inside a fresh cgroup v1 memory limit (when given and available); the cgroup is
    removed afterwards. Returns (CompletedProcess, whether the limit applied)."""
    cg = _cgroup(memory_limit) if memory_limit else None
    pre = None
    if cg is not None:
        procs = str(cg / "cgroup.procs")
        pre = lambda: Path(procs).write_text(str(os.getpid()))  # noqa: E731 (runs in the child before exec)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=pre), cg is not None
    finally:
        if cg is not None:
            try:
                cg.rmdir()
            except OSError:
                pass


def run_child(args: dict, *, cold: bool = False, memory_limit: int | None = None, timeout: float = 1800) -> dict:
    """Run edgellm.bench.child with `args`; returns its JSON result (plus `error` when it failed)."""
    if cold:
        drop_caches()
    p, limited = run_limited([sys.executable, "-m", "edgellm.bench.child", json.dumps(args)], memory_limit, timeout)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["killed"])[-1], "returncode": p.returncode}
    result = json.loads(p.stdout.strip().splitlines()[-1])
    if "error" in result:
        return result
    result["cgroup_limit"] = memory_limit if limited else None
    return result
