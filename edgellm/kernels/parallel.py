"""How kernel work is shared between threads.

A parallel region costs a fork and a join. With numba's default static schedule each thread owns a fixed
half of the rows, so when another process holds one core the descheduled thread's half waits for the
scheduler and every join stalls for a time slice (stories260K q4 with one core busy: 11 tok/s at 2 threads
against 1,247 at one). Two rules avoid that:
- work is claimed dynamically: a region starts one task per thread, and each task takes tiles from a shared
  atomic counter until none are left, so a thread that starts late finds the work done and leaves;
- an operation too small to pay for a fork runs on the calling thread (`is_large`). That choice depends on
  the operation's size only, never on the thread count, and a shared kernel gives the same bits at any
  count, so the ThreadTuner can change the count between passes without changing any result.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .simd import _call

# Work below this many bytes of weights (or element operations) runs on the calling thread: a fork + join
# costs ~5-20 us, about what one thread needs for this much work at memory speed.
MIN_PARALLEL_BYTES = 192 * 1024
SWITCH_MARGIN = 0.9  # a thread count must be 10% faster than the current one to replace it
ABANDON = 1.5  # a probe pass this much slower than the current count ends the probe: no need for more samples
# A matrix is cut into about 16 claims: long contiguous runs of rows keep the hardware and software
# prefetchers streaming (4-row claims interleaved between threads: TinyLlama q4 decode 24.7 vs 40.7 tok/s),
# and a descheduled thread still holds up only 1/16 of the work. The cut does not depend on the thread count.
CLAIMS_PER_MATRIX = 16
# Up to this many tokens (speculative verification, a short chat turn, a prompt's last position) run on decode's
# OpenMP drivers rather than the prefill pool: 2 tokens of SmolLM2 took 17.9 ms through the pool against 5.0 for
# one decoded token (a run of the pool costs ~40 us, an OpenMP region ~2)
SMALL_BATCH = 16
TILES_PER_CLAIM = 4  # the smallest claim: 4 tiles of 4 rows


@intrinsic
def claim(typingctx, counter, n):
    """Atomically add n to counter[0] (an int64 array) and return the value before the add."""
    sig = types.int64(counter, n)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        val = args[1] if args[1].type == ir.IntType(64) else builder.sext(args[1], ir.IntType(64))
        return builder.atomic_rmw("add", ary.data, val, "monotonic")

    return sig, codegen


@intrinsic
def add_at(typingctx, counters, i, n):
    """Atomically add n to counters[i] (int64) and return the value before: acquire and release, so what one
    thread wrote before adding is seen by another that reads the sum (aarch64 needs it said; x86 gives it)."""
    sig = types.int64(counters, i, n)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        val = args[2] if args[2].type == ir.IntType(64) else builder.sext(args[2], ir.IntType(64))
        return builder.atomic_rmw("add", ptr, val, "acq_rel")

    return sig, codegen


@intrinsic
def load_at(typingctx, counters, i):
    """counters[i] (int64) read atomically, acquire: the writes made before the add_at that set it are seen."""
    sig = types.int64(counters, i)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def relax(typingctx):
    """A spin-wait's pause: x86 `pause`, aarch64 `yield` (the sibling hyperthread or core gets the pipeline),
    nothing elsewhere."""
    sig = types.none()

    def codegen(context, builder, signature, args):
        machine = platform.machine().lower()  # LLVM intrinsics: numba's JIT takes no inline assembly
        if machine in ("x86_64", "amd64", "i686"):
            _call(builder, "llvm.x86.sse2.pause", ir.VoidType())
        elif machine in ("aarch64", "arm64"):
            _call(builder, "llvm.aarch64.hint", ir.VoidType(), ir.Constant(ir.IntType(32), 1))  # hint #1: yield
        return context.get_dummy_value()

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


def is_large(work_bytes: int) -> bool:
    """Worth sharing between threads: the kernel's shared driver runs it (on however many threads are set)."""
    return work_bytes >= MIN_PARALLEL_BYTES


class using_threads:
    """Run a block with the calling thread's kernels on n threads, then restore the count it had (numba's
    count belongs to the calling thread, so nothing else in the process changes)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.prev = numba.get_num_threads()
        if self.n != self.prev:
            numba.set_num_threads(self.n)
        return self

    def __exit__(self, *exc) -> None:
        if numba.get_num_threads() != self.prev:
            numba.set_num_threads(self.prev)


class FixedThreads:
    """The thread count the caller chose: every pass uses it."""

    def __init__(self, n: int):
        self.most = n

    def decode_threads(self) -> int:
        return self.most

    def chosen(self) -> int:
        return self.most

    def record(self, n: int, seconds: float) -> None:
        pass


class ThreadTuner:
    """Chooses the thread count of each decode pass by timing passes, because the best count depends on what
    else the device is running. Measured here (a TinyLlama-shaped q4 layer, 2 vCPUs): quiet, 2 threads 0.9-1.1
    ms against 1.5 ms on one; with one core busy, 2 threads 2.7-3.9 ms against 1.7 on one.

    It times PROBE passes at each choice, keeps the fastest, and now and then times another choice again (the
    pass after a change is not counted: it pays for waking threads). A probe that confirms the current choice
    doubles the gap to the next (up to MAX_GAP passes), so a steady device pays almost nothing; a probe that
    wins switches at once and the gaps start short again. A probe pass ABANDON times slower than the current
    count ends its probe there: under load a probe of the larger count costs one slow timed pass, not three."""

    MIN_GAP, MAX_GAP = 16, 512
    PROBE = 3  # timed passes per probe, after one untimed

    def __init__(self, most: int):
        self.most = most
        self.choices = sorted({1, max(1, most - 1), most})
        self.time: dict[int, float] = {}  # seconds per decode pass, by thread count
        self.current = self.choices[-1]
        self.gap = self.MIN_GAP
        self.countdown = 0  # passes at `current` before the next probe
        self.plan = [c for c in self.choices for _ in range(self.PROBE + 1)]  # passes queued, then choose
        self.samples: list[float] = []  # timed passes of the probe under way
        self.last = 0
        self.rounds = 0
        self.warm = False

    def decode_threads(self) -> int:
        """The thread count for the next decode pass."""
        if not self.plan and self.countdown == 0 and len(self.choices) > 1:
            others = [c for c in self.choices if c != self.current]
            self.rounds += 1
            self.plan = [others[self.rounds % len(others)]] * (self.PROBE + 1)
        if self.plan:
            n = self.plan.pop(0)
        else:
            self.countdown -= 1
            n = self.current
        self.warm, self.last = n == self.last, n
        return n

    def chosen(self) -> int:
        """The count chosen so far, for a pass that is not timed (a speculative verification: its length
        varies, so its time says nothing about the count) and takes no probe's turn."""
        return self.current

    def record(self, n: int, seconds: float) -> None:
        """The pass decode_threads() chose took `seconds`."""
        if not self.warm:
            return
        if n != self.current or self.plan or len(self.samples):  # part of a probe
            now = self.time.get(self.current)
            if n != self.current and now is not None and seconds > ABANDON * now:
                # clearly slower (another process holds a core): stop paying for this probe at once
                self.time[n], self.samples = seconds, []
                self.plan = [c for c in self.plan if c != n]
                if not self.plan:
                    self._choose()
                return
            self.samples.append(seconds)
            if not self.plan or self.plan[0] != n:  # the probe of n is complete
                self.time[n] = sorted(self.samples)[len(self.samples) // 2]
                self.samples = []
                if not self.plan:
                    self._choose()
        else:  # exploiting: follow drift slowly
            old = self.time.get(n, seconds)
            self.time[n] = 0.8 * old + 0.2 * seconds

    def _choose(self) -> None:
        # switch only for a clear win: pass times are noisy, and a wrong switch away from the larger count on
        # an idle device costs more (1.25x here) than staying a little longer on it under load
        best = min(self.time, key=self.time.__getitem__)
        if best != self.current and self.time[best] < SWITCH_MARGIN * self.time.get(self.current, float("inf")):
            self.current, self.gap = best, self.MIN_GAP
        else:
            self.gap = min(self.MAX_GAP, 2 * self.gap)
        self.countdown = self.gap
