"""Compute kernels: numba, nogil (a background I/O thread runs while they compute), each checked against a
plain numpy computation in tests/test_kernels.py. Arrays are f32 unless noted; quantized weights are QTensors
(edgellm.quant)."""

from __future__ import annotations

import os
from pathlib import Path


def _cache_dir() -> None:
    """numba caches compiled kernels beside the package; use a user cache dir when that is read-only."""
    if "NUMBA_CACHE_DIR" in os.environ or os.access(Path(__file__).parent, os.W_OK):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(base, "edgellm", "numba")


_cache_dir()

import numba  # noqa: E402
import psutil  # noqa: E402

from .matvec import Workspace, matmul, matmuls, matvec, matvecs  # noqa: E402
from .ops import apply_rope, attention, rmsnorm, rope_tables, silu_mul  # noqa: E402
from .parallel import SMALL_BATCH, threads  # noqa: E402
from .stack import Stack  # noqa: E402


def default_threads() -> int:
    return max(1, min(psutil.cpu_count(logical=False) or 1, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


def set_threads(n: int | None = None) -> int:
    """Threads the kernels use (default: physical cores). Returns the number set."""
    n = default_threads() if n is None else int(n)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:  # type: ignore[attr-defined]
        from ..errors import EdgeLLMError

        raise EdgeLLMError(f"threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {n}")  # type: ignore[attr-defined]
    numba.set_num_threads(n)
    return n


__all__ = [
    "SMALL_BATCH",
    "Stack",
    "threads",
    "Workspace",
    "matvec",
    "matmul",
    "matvecs",
    "matmuls",
    "rmsnorm",
    "rope_tables",
    "apply_rope",
    "attention",
    "silu_mul",
    "set_threads",
    "default_threads",
]
