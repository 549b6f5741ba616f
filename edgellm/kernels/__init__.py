"""Compute kernels: numba, nogil (a background I/O thread runs while they compute), each checked against a
plain numpy computation in tests/test_kernels.py. Arrays are f32 unless noted; quantized weights are QTensors (edgellm.quant)."""
from __future__ import annotations

import os
from pathlib import Path


def _cache_dir() -> None:
    """numba caches compiled kernels beside the package; use a user cache dir when that is read-only."""
    if "NUMBA_CACHE_DIR" in os.environ or os.access(Path(__file__).parent, os.W_OK):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(base, "edgellm", "numba")


def _wait_policy() -> None:
    """Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise).

    A spinning thread competes with whatever else runs on the device: with one of two cores busy, a 5632x2048
    q4 matvec at 2 threads took a median 8.0 ms spinning (OMP_WAIT_POLICY=active) against 0.40 ms sleeping,
    and 0.36 ms on one thread. It must be set before numba starts its OpenMP pool, i.e. on import."""
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")


_cache_dir()
_wait_policy()

import numba  # noqa: E402
import psutil  # noqa: E402

from .matvec import Workspace, matmul, matvec  # noqa: E402
from .ops import apply_rope, attention, rmsnorm, rope_tables, silu_mul  # noqa: E402


def default_threads() -> int:
    return max(1, min(psutil.cpu_count(logical=False) or 1, numba.config.NUMBA_NUM_THREADS))


def set_threads(n: int | None = None) -> int:
    """Threads the kernels use (default: physical cores). Returns the number set."""
    n = default_threads() if n is None else int(n)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        from ..errors import EdgeLLMError
        raise EdgeLLMError(f"threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {n}")
    numba.set_num_threads(n)
    return n


__all__ = ["Workspace", "matvec", "matmul", "rmsnorm", "rope_tables", "apply_rope", "attention", "silu_mul",
           "set_threads", "default_threads"]
