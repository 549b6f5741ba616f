"""Run benchmark children: optionally with a cold page cache and inside a cgroup v1 memory limit.

A child runs in its own session, so a Ctrl-C at the terminal reaches only us; we then pass it on (SIGINT,
then SIGKILL after STOP_GRACE seconds), reap the child and remove its cgroup before the KeyboardInterrupt
goes on. The child leaves quietly (its stderr is never shown for an interrupted run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..interrupts import held

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
STOP_GRACE = 5.0  # seconds a child has to stop on SIGINT before it is killed


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
    cg = _cgroup_path()
    try:
        cg.mkdir(exist_ok=True)
        (cg / "memory.limit_in_bytes").write_text(str(limit))
        return cg
    except OSError:
        _remove_cgroup(cg)
        return None


def _cgroup_path() -> Path:
    return CGROUP_ROOT / f"edgellm-bench-{os.getpid()}"


def _remove_cgroup(cg: Path) -> None:
    try:
        cg.rmdir()
    except OSError:
        pass


def _stop(p: subprocess.Popen) -> None:
    """Stop a child as Ctrl-C would (SIGINT), kill it if it lingers, and reap it."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()


def run_limited(cmd: list[str], memory_limit: int | None = None, timeout: float = 1800):
    """subprocess.run(cmd) inside a fresh cgroup v1 memory limit (when given and available); the cgroup is
    removed afterwards. Returns (CompletedProcess, whether the limit applied)."""
    cg = p = None
    try:
        cg = _cgroup(memory_limit) if memory_limit else None
        pre = None
        if cg is not None:
            procs = str(cg / "cgroup.procs")
            pre = lambda: Path(procs).write_text(str(os.getpid()))  # noqa: E731 (runs in the child before exec)
        with held():  # the child exists only once we hold it in `p`
            p = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pre, start_new_session=True
            )
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, p.returncode, out, err), cg is not None
    except BaseException:  # Ctrl-C or the timeout: the child goes too
        if p is not None:
            with held():
                _stop(p)
        raise
    finally:
        if memory_limit:  # by name: a Ctrl-C may have come between its creation and `cg = ...`
            with held():
                _remove_cgroup(_cgroup_path())


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
