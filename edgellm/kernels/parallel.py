"""How kernel work is shared between threads.

A parallel region costs a fork and a join. With numba's default static schedule each thread owns a fixed
half of the rows, so when another process holds one core the descheduled thread's half waits for the
scheduler and every join stalls for a time slice (stories260K q4 with one core busy: 11 tok/s at 2 threads
against 1,247 at one). Two rules avoid that:
- work is claimed dynamically: a region starts one task per thread, and each task takes tiles from a shared
  atomic counter until none are left, so a thread that starts late finds the work done and leaves;
- an operation too small to pay for a fork runs on the calling thread (`worth_forking`).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Work below this many bytes of weights (or element operations) runs on the calling thread: a fork + join
# costs ~5-20 us, about what one thread needs for this much work at memory speed.
MIN_PARALLEL_BYTES = 192 * 1024
TILES_PER_CLAIM = 4       # 4-row tiles taken per atomic add: 16 rows, a few microseconds of work


@intrinsic
def claim(typingctx, counter, n):
    """Atomically add n to counter[0] (an int64 array) and return the value before the add."""
    sig = types.int64(counter, n)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        val = args[1] if args[1].type == ir.IntType(64) else builder.sext(args[1], ir.IntType(64))
        return builder.atomic_rmw("add", ary.data, val, "monotonic")

    return sig, codegen


@njit(nogil=True, cache=True)
def reset(counter):
    counter[0] = 0


def counter() -> np.ndarray:
    """A claim counter: one per workspace (calls on a workspace are serialized by the Model's lock)."""
    return np.zeros(1, np.int64)


def threads() -> int:
    """Threads the calling thread's kernels may use (numba's count is per calling thread)."""
    return numba.get_num_threads()


def worth_forking(work_bytes: int) -> bool:
    return work_bytes >= MIN_PARALLEL_BYTES and numba.get_num_threads() > 1
