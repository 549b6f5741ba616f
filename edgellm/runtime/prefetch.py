"""The prefetcher: a background thread that reads the next streamed pieces into a staging ring and decodes
them into free slots while the model computes.

Pieces are loaded in the cyclic order the forward pass uses them (`sequence`); a piece's slot goes back to
the free list when the model moves on to the next piece of the unit or releases it. An interrupted pass
(the model asks for a piece out of order) drops what was prefetched and restarts the cycle there; loads
begun before that are discarded by their generation number.

Errors: a failed read or a damaged chunk surfaces in the model's thread as FormatError; any other exception
(a bug) is re-raised there as it is, never disguised as a damaged file. Either way the cycle restarts, once the
model asks for a piece again (not at once: a failing device is not read on in the background).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import FormatError
from ..format import EllmFile
from .costs import PAGE, RING, Placement, read_batches, read_size
from .device import Throttle
from .iostats import IOStats

Key = tuple[int, int]  # (unit, piece index)


def aligned_empty(n: int, align: int = PAGE) -> np.ndarray:
    """uint8[n] whose address is a multiple of `align` (O_DIRECT needs it)."""
    raw = np.empty(n + align, np.uint8)
    skip = (-raw.ctypes.data) % align
    return raw[skip : skip + n]


class Prefetcher:
    def __init__(
        self,
        f: EllmFile,
        sequence: list[Key],
        placements: dict[Key, list[Placement]],
        slots: list[np.ndarray],
        staging_bytes: int,
        stats: IOStats,
        throttle: Throttle,
        *,
        direct_io: bool = False,
        decode_threads: int = 1,
    ):
        """`placements[key]`: the chunks of the piece in file order, each with the offset of its decoded
        bytes in a slot (costs.piece_chunks, costs.head_blocks); `staging_bytes` (costs.py): the ring, RING
        page-aligned buffers of one read each."""
        self.f, self.sequence, self.placements, self.slots = f, sequence, placements, slots
        self.stats, self.throttle = stats, throttle
        self.fd = self._open_direct() if direct_io else f.fileno()
        self.direct = direct_io and self.fd != f.fileno()
        self.read_bytes = read_size(f)
        self.buffer_room = staging_bytes // RING  # one ring buffer, page multiple
        self.staging = aligned_empty(self.buffer_room * RING)  # (RING * buffer_room,) read buffers
        # Chunks decode on the pool while this thread goes on reading (decode_threads 0: inline).
        self._pool = ThreadPoolExecutor(decode_threads, "edgellm-decode") if decode_threads > 0 else None
        self._ring: list[list] = [[] for _ in range(RING)]  # pending decode jobs per staging buffer
        self._k = 0  # reads issued (ring position)
        # Shared with the model's thread, under _cv:
        self._cv = threading.Condition()
        self._ready: dict[Key, int] = {}  # piece -> slot holding it, decoded
        self._held: dict[int, Key] = {}  # unit -> the piece whose slot the model holds
        self._free = list(range(len(slots)))
        self._next = 0  # index into sequence of the next piece to load
        self._expect = 0  # index into sequence of the next piece the model wants
        self._error: BaseException | None = None
        self._generation = 0  # bumped by _resync: loads started before it are discarded
        self._paused = False  # after an error, until the model asks for a piece again
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="edgellm-prefetch", daemon=True)
        self._thread.start()

    # -- the model's thread -------------------------------------------------------------------------
    def take(self, key: Key) -> np.ndarray:
        """The slot holding piece `key`, once decoded; hands back the slot of the piece of that unit held
        before it (the pass never returns to an earlier piece)."""
        self.give_back(key[0])
        slot = self.slots[self._wait_for(key)]
        self._held[key[0]] = key
        return slot

    def give_back(self, u: int) -> None:
        """The model is done with the piece of unit u it holds (if any): its slot is free again."""
        key = self._held.pop(u, None)
        if key is None:
            return
        with self._cv:
            slot = self._ready.pop(key, None)
            if slot is not None:
                self._free.append(slot)
                self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown()
        if self.direct:
            os.close(self.fd)

    def _wait_for(self, key: Key) -> int:
        t0 = time.perf_counter()
        u = key[0]
        with self._cv:
            if self.sequence[self._expect] != key:  # an interrupted pass: restart the cycle at key
                self._resync(self.sequence.index(key))
            if self._paused:
                self._paused = False
                self._cv.notify_all()
            while key not in self._ready and self._error is None:
                self._cv.wait()
            if self._error is not None:
                err, self._error = self._error, None
                self._resync(self._expect)
                self._paused = True
                if isinstance(err, OSError):  # the file went away, a device error...
                    raise FormatError(f"reading {self.f.path}: {err}") from err
                raise err  # FormatError (damaged chunk), or a bug as it is
            self._expect = (self._expect + 1) % len(self.sequence)
            slot = self._ready[key]
        now = time.perf_counter()
        self.stats.wait_s += now - t0
        self.stats.unit(u)["wait_s"] += now - t0
        self.stats.event("wait", u, t0, now)
        return slot

    def _resync(self, index: int) -> None:
        """Drop what was prefetched (called with the lock held) and restart loading at sequence[index]."""
        self._generation += 1
        self._ready.clear()
        self._held.clear()
        self._free = list(range(len(self.slots)))
        self._next = self._expect = index
        self._cv.notify_all()

    # -- the prefetch thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        last_gen = self._generation
        while True:
            with self._cv:
                while not self._stop and (
                    not self._free
                    or self._error is not None
                    or self._paused
                    or self.sequence[self._next] in self._ready
                ):
                    self._cv.wait()
                if self._stop:
                    return
                slot = self._free.pop()
                key = self.sequence[self._next]
                gen = self._generation
                self._next = (self._next + 1) % len(self.sequence)
            if gen != last_gen:  # decodes of a discarded pass may still write into a recycled slot
                self._drain()
                last_gen = gen
            try:
                self._load(key, slot, gen)
            except BaseException as e:  # raised in the model's thread by _wait_for, never a hang
                self._drain()
                self._publish(key, slot, gen, e)

    def _publish(self, key: Key, slot: int, gen: int, err: BaseException | None) -> None:
        """A piece's last chunk is decoded (or failed): hand its slot to the model, or its error. A load of a
        discarded generation leaves the free list alone: _resync already freed every slot, and this one may
        since have been handed to a load of the new generation (freeing it again would give two pieces one slot)."""
        with self._cv:
            if gen != self._generation:
                return
            if err is not None:
                self._error = err  # the model's _resync frees the slot
            else:
                self._ready[key] = slot
            self._cv.notify_all()

    def _drain(self) -> None:
        for jobs in self._ring:
            for j in jobs:
                j.exception()
            jobs.clear()

    def _load(self, key: Key, slot: int, gen: int) -> None:
        """Read piece `key`'s chunks in batches of about READ_SIZE bytes (one read each) into the ring of staging
        buffers; each batch's chunks decode on the pool while the next batch is read, so decompression and checksumming
        overlap the reads and staging stays a few MB instead of a whole layer. The ring outlives the piece: the
        next piece's reads start while this one's last batches decode, and the last decode publishes the piece."""
        out = self.slots[slot].data  # a memoryview of the slot
        u = key[0]
        batches = read_batches(self.placements[key], self.read_bytes)
        state = {"left": sum(len(b) for b in batches), "decompress_s": 0.0, "err": None}
        lock = threading.Lock()
        rec = self.stats.unit(u)

        def decode(e, c, stored, dst):
            t = time.perf_counter()
            err = None
            try:
                self.f.decode_chunk(e, c, stored, dst, chunk_only=True)
            except BaseException as ex:
                err = ex
            end = time.perf_counter()
            self.stats.event("decompress", u, t, end)
            with lock:
                state["decompress_s"] += end - t
                state["err"] = state["err"] or err
                state["left"] -= 1
                last = state["left"] == 0
            if last:
                with self._cv:  # decode threads finish units concurrently
                    self.stats.decompress_s += state["decompress_s"]
                    self.stats.units_loaded += key[1] == 0  # a unit, not each of its pieces
                    rec["decompress_s"] += state["decompress_s"]
                    rec["loads"] += key[1] == 0
                self._publish(key, slot, gen, state["err"])

        t_read = [0.0]
        try:
            for batch in batches:
                r = self._k % RING
                self._k += 1
                for j in self._ring[r]:  # that buffer's previous chunks are decoded
                    j.exception()
                self._ring[r].clear()
                buf, base = self._read_batch(batch, r, u, t_read)
                for e, c, dst in batch:
                    args = (e, c, buf[c.offset - base : c.offset - base + c.length], out[dst : dst + c.raw_length])
                    if self._pool is not None:
                        self._ring[r].append(self._pool.submit(decode, *args))
                    else:
                        decode(*args)
        finally:
            rec["read_s"] += t_read[0]

    def _read_batch(self, batch, r: int, u: int, t_read: list):
        """One read request for consecutive chunks into staging buffer r; returns (view, file offset of
        its first byte)."""
        start = batch[0][1].offset
        end = batch[-1][1].offset + batch[-1][1].length
        lo, hi = (start - start % PAGE, -(-end // PAGE) * PAGE) if self.direct else (start, end)
        buf = self.staging[r * self.buffer_room : r * self.buffer_room + (hi - lo)]
        t0 = time.perf_counter()
        got = os.preadv(self.fd, [buf.data], lo)
        self.throttle.wait(got, t0)
        t1 = time.perf_counter()
        self.stats.read_s += t1 - t0
        t_read[0] += t1 - t0
        self.stats.event("read", u, t0, t1)
        self.stats.bytes_read += max(got, 0)
        if got < end - lo:
            raise FormatError(
                f"{self.f.path}: file ended at {lo + max(got, 0)} while reading a layer (truncated or removed?)"
            )
        if not self.direct:
            os.posix_fadvise(self.fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        return buf, lo

    def _open_direct(self) -> int:
        """An O_DIRECT descriptor for the file (reads bypass the page cache), or the file's own one where the
        file's alignment or the platform does not allow it."""
        if self.f.alignment % PAGE or not hasattr(os, "O_DIRECT"):
            return self.f.fileno()
        try:
            return os.open(self.f.path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return self.f.fileno()
