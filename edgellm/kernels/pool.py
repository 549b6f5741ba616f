"""Prefill's threads: the calling thread plus a pool of Python threads, running nogil kernels.

Prefill hands its products to BLAS, which numba's OpenMP regions cannot call, so prefill parallelizes with
Python threads: each claims work items from one shared counter until none are left (a descheduled thread
delays only the item it holds). Prefill's other multi-token kernels (attention) share the same pool rather
than OpenMP: an OpenMP team spins for milliseconds after each region, and in prefill it spun on the very cores
the BLAS threads needed (TinyLlama q4, 128-token prefill on 2 threads: 70 tok/s with OpenMP attention and
norms between the products, 89 without). Decode stays on OpenMP, whose fast fork/join it needs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers != n - 1:
            _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="edgellm-prefill")
        return _pool


def share(work: Callable[[int, Iterator[int]], None], n: int) -> None:
    """Run work(i, items) for i in 0..n-1 at once, i = 0 on the calling thread. `items` is one counter for
    all of them (next() on an itertools.count is atomic under the GIL): each call takes items until it meets
    one past its end. Every call has finished when share() returns, on an exception or Ctrl-C too, so no thread
    goes on writing a caller's buffers."""
    items = itertools.count()
    if n == 1:
        work(0, items)
        return
    futures = [_executor(n).submit(work, i, items) for i in range(1, n)]
    try:
        work(0, items)
        for f in futures:
            f.result()
    finally:
        for f in futures:
            f.cancel() or f.exception()


BLOCKS_PER_THREAD = 2  # claims per thread of rows_shared: few, as each costs Python time (slicing, a call)


def rows_shared(kernel: Callable[[int, int], None], rows: int, n: int) -> None:
    """kernel(r0, r1) over blocks of rows claimed by n threads (row-wise kernels of prefill: the same numbers
    in any split)."""
    step = -(-rows // (n * BLOCKS_PER_THREAD))

    def work(_: int, claims) -> None:
        for c in claims:
            r0 = c * step
            if r0 >= rows:
                return
            kernel(r0, min(r0 + step, rows))

    share(work, n)
