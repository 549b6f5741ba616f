"""BLAS's own thread pool stays idle while prefill's threads call BLAS (each runs one product at a time).

Letting OpenBLAS fork its pool inside each of our threads' calls put 2 x 2 threads on 2 cores (a 5632x2048 q4
prefill product: 190 ms against 56). The limit is process-wide (OpenBLAS's pthreads pool has no per-thread
one; its `openblas_set_num_threads_local` sets the same global), so it is held only while a prefill product
runs and the last product to finish gives back the limit the process had; counted, so Models used from several
threads at once neither give it back early nor leave it set. OpenBLAS is set directly, from any thread:
threadpoolctl ignores a limit set from any thread but the first that set one (a Model used from a server's
worker thread would run unlimited, TinyLlama q4 prefill 62 against 88 tok/s here). Another BLAS goes through
threadpoolctl.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import threading
from collections.abc import Callable

_lock = threading.Lock()
_users = 0
_restore: list[Callable[[], None]] = []  # what gives the limits back, while _users > 0
_openblas: list[tuple[Callable[[], int], Callable[[int], None]]] | None = None  # (get, set) per OpenBLAS


_others = None  # threadpoolctl's controller of the BLAS libraries that are not OpenBLAS


def _find() -> None:
    """Look the libraries up once (threadpoolctl scans every loaded library: ~1 ms)."""
    global _openblas, _others
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    _openblas = []
    for lib in blas.lib_controllers:
        if lib.internal_api != "openblas":
            continue
        for pre, suf in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(lib.dynlib, f"{pre}openblas_get_num_threads{suf}", None)
            put = getattr(lib.dynlib, f"{pre}openblas_set_num_threads{suf}", None)
            if get is not None and put is not None:
                get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                _openblas.append((get, put))
                break
    blas.lib_controllers = [c for c in blas.lib_controllers if c.internal_api != "openblas"]
    _others = blas if blas.lib_controllers else None


def _limit() -> list[Callable[[], None]]:
    if _openblas is None:
        _find()
    assert _openblas is not None
    restore: list[Callable[[], None]] = []
    for get, put in _openblas:
        prev = get()
        if prev != 1:
            put(1)
            restore.append(functools.partial(put, prev))
    if _others is not None:
        restore.append(_others.limit(limits=1).restore_original_limits)
    return restore


class one_thread:
    """`with one_thread():` BLAS calls made inside run on the calling thread alone."""

    def __enter__(self) -> None:
        global _users, _restore
        with _lock:
            if _users == 0:
                _restore = _limit()
            _users += 1

    def __exit__(self, *exc) -> None:
        global _users
        with _lock:
            _users -= 1
            if _users == 0:
                for give_back in _restore:
                    give_back()
                _restore.clear()
