"""The streaming weight provider: pinned units stay decoded in RAM; the others flow through a ring of slots.

A *unit* is what the forward pass asks for at once: layer i (0..L-1), or the head (L: final norm + lm_head,
which for a tied model is the embedding table). A background thread reads the next streamed unit's file
span with large reads into a staging buffer and decodes its chunks into a free slot while numba computes
the current unit; slots are recycled in the cyclic order the forward pass uses them.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgeLLMError, FormatError
from ..format import EllmFile
from ..quant import QTensor
from .plan import Plan

EMBED = "model.embed_tokens.weight"
PIECE = 2 << 20          # bytes per read request: large enough for full bandwidth, small enough that
                         # decoding the last piece of a layer (not overlapped) stays short
PAGE = 4096
RING = 3                 # staging buffers: one being read while the other two decode


def group_bytes(f: EllmFile) -> int:
    """Bytes per read request: PIECE, or a third of the largest layer when layers are small, so the whole
    staging ring never outweighs one layer."""
    return min(PIECE, -(-max((s.end - s.start for s in f.layer_spans()), default=PIECE) // RING))


def staging_room(f: EllmFile) -> int:
    """Bytes of the staging ring: RING buffers, each one read group (or one larger chunk) plus O_DIRECT
    page rounding on both ends."""
    biggest = max((c.length for e in f.entries for c in e.chunks), default=0)
    one = -(-(max(group_bytes(f), biggest) + 2 * PAGE) // PAGE) * PAGE
    return RING * one


def _groups(chunks, limit: int) -> list[list]:
    """Consecutive (entry, chunk) pairs cut into read groups of at most `limit` bytes (a larger chunk alone)."""
    out, cur, start = [], [], 0
    for e, c in chunks:
        if cur and c.offset + c.length - start > limit:
            out.append(cur)
            cur = []
        if not cur:
            start = c.offset
        cur.append((e, c))
    if cur:
        out.append(cur)
    return out


def layer_prefix(i: int) -> str:
    return f"model.layers.{i}."


def unit_names(f: EllmFile, unit: int, n_layers: int) -> list[str]:
    if unit < n_layers:
        return [n for n in f.tensors if n.startswith(layer_prefix(unit))]
    names = ["model.norm.weight"]
    return names + (["lm_head.weight"] if "lm_head.weight" in f.tensors else [EMBED])


# A streamed layer travels in pieces, in the order the forward pass uses its tensors, so a slot holds one
# piece (at most one MLP matrix) instead of a whole layer: for TinyLlama q4 the two slots shrink from
# 2 x 24.8 MB to 2 x 6.5 MB, and what they free is pinned instead of read again every token.
PIECE_ORDER = (("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               ("self_attn.o_proj",), ("post_attention_layernorm", "mlp.gate_proj"), ("mlp.up_proj",),
               ("mlp.down_proj",))


def unit_pieces(f: EllmFile, unit: int, n_layers: int) -> list[list[str]]:
    """A unit's tensor names split into pieces in use order (the head is one piece; a tensor matching no
    known name goes with the first piece, so it is there whenever the layer is)."""
    names = unit_names(f, unit, n_layers)
    if unit >= n_layers:
        return [names]
    pieces: list[list[str]] = [[] for _ in PIECE_ORDER]
    for n in names:
        short = n[len(layer_prefix(unit)):]
        k = next((j for j, keys in enumerate(PIECE_ORDER) if any(short.startswith(key + ".") for key in keys)), 0)
        pieces[k].append(n)
    return [p for p in pieces if p]


def _offsets(f: EllmFile, names: list[str]) -> tuple[dict[str, int], int]:
    """Offset of each tensor inside a unit buffer (64-byte aligned) and the buffer size."""
    out, pos = {}, 0
    for n in names:
        out[n] = pos
        pos += -(-f.tensors[n].raw_bytes // 64) * 64
    return out, pos


def aligned_empty(n: int, align: int = PAGE) -> np.ndarray:
    """uint8[n] whose address is a multiple of `align` (O_DIRECT needs it)."""
    raw = np.empty(n + align, np.uint8)
    skip = (-raw.ctypes.data) % align
    return raw[skip:skip + n]


class Throttle:
    """Emulates a slower flash device: each request costs latency + bytes / bandwidth of device time."""

    def __init__(self, read_mb_s: float | None, latency_us: float | None):
        self.bw = (read_mb_s or 0) * 1e6
        self.latency = (latency_us or 0) / 1e6
        self.busy_until = 0.0

    def wait(self, nbytes: int, started: float) -> None:
        if not self.bw:
            return
        start = max(started, self.busy_until)
        self.busy_until = start + self.latency + nbytes / self.bw
        delay = self.busy_until - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


@dataclass
class IOStats:
    bytes_read: int = 0
    read_s: float = 0.0
    decode_s: float = 0.0
    wait_s: float = 0.0           # main thread blocked waiting for a unit
    units_loaded: int = 0
    compute_s: float = 0.0        # main thread between getting a unit and releasing it
    per_unit: dict = field(default_factory=dict)   # unit -> {read_s, decode_s, loads, wait_s, compute_s, uses}

    def unit(self, u: int) -> dict:
        rec = self.per_unit.get(u)
        if rec is None:
            rec = self.per_unit[u] = {"read_s": 0.0, "decode_s": 0.0, "loads": 0, "wait_s": 0.0,
                                      "compute_s": 0.0, "uses": 0}
        return rec

    def as_dict(self) -> dict:
        io = self.read_s + self.decode_s
        return {"bytes_read": self.bytes_read, "read_s": self.read_s, "decode_s": self.decode_s,
                "wait_s": self.wait_s, "compute_s": self.compute_s, "units_loaded": self.units_loaded,
                "overlap": max(0.0, 1.0 - self.wait_s / io) if io else 1.0}


class StreamedWeights:
    def __init__(self, f: EllmFile, n_layers: int, plan: Plan, *, device=None, direct_io: bool = False,
                 decode_threads: int = 1):
        self.f, self.n_layers, self.plan = f, n_layers, plan
        self.stats = IOStats()
        self.throttle = Throttle(getattr(device, "read_mb_s", None), getattr(device, "read_latency_us", None))
        self.names = {u: unit_names(f, u, n_layers) for u in range(n_layers + 1)}
        self.offsets = {u: _offsets(f, self.names[u]) for u in plan.pinned}
        self.pinned: dict[int, dict[str, QTensor]] = {}
        self._pinned_bufs = []
        for u in plan.pinned:
            buf = np.empty(self.offsets[u][1], np.uint8)
            self._pinned_bufs.append(buf)
            self.pinned[u] = {n: f.read_into(n, buf[o:o + f.tensors[n].raw_bytes])
                              for n, o in self.offsets[u][0].items()}
        self.stats.bytes_read += sum(f.tensors[n].stored_bytes for u in plan.pinned for n in self.names[u])
        self._embed_table = self.pinned.get(n_layers, {}).get(EMBED)
        self._fd = self._open_direct() if direct_io else f.fileno()
        self.direct = direct_io and self._fd != f.fileno()
        self.streamed = list(plan.streamed)
        # what the prefetcher cycles through: (unit, piece) keys, their names and offsets inside a slot
        pieces = {u: unit_pieces(f, u, n_layers) for u in self.streamed}
        self.sequence = [(u, k) for u in self.streamed for k in range(len(pieces[u]))]
        self.piece_names = {(u, k): names for u in self.streamed for k, names in enumerate(pieces[u])}
        self.piece_offsets = {key: _offsets(f, names)[0] for key, names in self.piece_names.items()}
        # streamed layer -> {name without the layer prefix: piece}, what StreamedLayer looks names up in
        self.piece_of = {u: {n[len(layer_prefix(u)):]: k for k, names in enumerate(pieces[u]) for n in names}
                         for u in self.streamed if u < n_layers}
        self._held: dict[int, tuple[int, int]] = {}   # streamed unit -> the piece whose slot the model holds
        self.slots = [np.empty(plan.slot_bytes, np.uint8) for _ in range(plan.slots)]
        self.group_bytes = group_bytes(f)
        self.group_room = staging_room(f) // RING                  # one ring buffer, page multiple
        self.staging = aligned_empty(self.group_room * RING) if self.streamed else None
        # Chunks decode on the pool while the prefetch thread goes on reading (decode_threads 0: inline).
        self._pool = ThreadPoolExecutor(decode_threads, "edgellm-decode") if decode_threads > 0 else None
        self._ring: list[list] = [[] for _ in range(RING)]   # pending decode jobs per staging buffer
        self._k = 0                                           # read groups issued (ring position)
        self._cv = threading.Condition()
        self._ready: dict[tuple, int] = {}   # (unit, piece) -> slot holding it
        self._free = list(range(len(self.slots)))
        self._next = 0                       # index into self.sequence of the next piece to load
        self._expect = 0                     # index into self.sequence of the next piece the model wants
        self._error: BaseException | None = None
        self._generation = 0                 # bumped by _resync: loads started before it are discarded
        self._stop = False
        self._acquired: dict[int, float] = {}   # unit -> when the model got it (compute time = until release)
        self._waited: dict[int, float] = {}     # streamed unit -> its wait_s then (waits for later pieces)
        # (lane, unit, start, end) events for a timeline while a list is set here (edgellm bench --plot)
        self.trace: list | None = None
        self._thread = None
        if self.streamed:
            self._thread = threading.Thread(target=self._prefetch_loop, name="edgellm-prefetch", daemon=True)
            self._thread.start()

    # -- the provider verbs -------------------------------------------------------------------------
    def embed(self, ids, out) -> None:
        if self._embed_table is not None:
            out[:] = self._embed_table.dequantize(np.asarray(ids, dtype=np.int64))
            return
        for t, i in enumerate(np.asarray(ids, dtype=np.int64)):
            out[t] = self._fetch_row(int(i))

    def layer(self, i: int):
        prefix = layer_prefix(i)
        if i in self.pinned:
            return self._pinned_unit(i, prefix)
        self._acquire(i)
        return StreamedLayer(self, i, prefix)

    def release(self, i: int) -> None:
        t0 = self._acquired.pop(i, None)
        if t0 is not None:
            now = time.perf_counter()
            rec = self.stats.unit(i)
            busy = now - t0 - (rec["wait_s"] - self._waited.pop(i, rec["wait_s"]))   # minus waits for pieces
            rec["compute_s"] += busy
            rec["uses"] += 1
            self.stats.compute_s += busy
            if self.trace is not None:
                self.trace.append(("compute", i, t0, now))
        self._give_back(i)

    def head(self) -> tuple[QTensor, QTensor]:
        u = self.n_layers
        if u in self.pinned:
            w = self._pinned_unit(u, "")
        else:
            self._acquire(u)
            w = self._take(u, 0, "")
        return w["model.norm.weight"], w.get("lm_head.weight", w.get(EMBED))

    @property
    def bytes_read(self) -> int:
        return self.stats.bytes_read

    def io_stats(self) -> dict:
        return self.stats.as_dict()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown()
        if self.direct:
            os.close(self._fd)

    # -- main-thread side ---------------------------------------------------------------------------
    def _acquire(self, u: int) -> None:
        """Start unit u's compute clock; waits for its later pieces are taken off at release."""
        self._acquired[u] = time.perf_counter()
        self._waited[u] = self.stats.unit(u)["wait_s"]

    def _pinned_unit(self, u: int, prefix: str) -> dict[str, QTensor]:
        self._acquire(u)
        w = self.pinned[u]
        return {n[len(prefix):]: t for n, t in w.items()} if prefix else w

    def _take(self, u: int, k: int, prefix: str) -> dict[str, QTensor]:
        """Piece k of streamed unit u, handing back the slot of the piece of u held before it."""
        self._give_back(u)
        key = (u, k)
        buf = self.slots[self._wait_for(key)]
        self._held[u] = key
        return {n[len(prefix):]: QTensor.from_buffer(self.f.tensors[n].layout, buf[o:o + self.f.tensors[n].raw_bytes])
                for n, o in self.piece_offsets[key].items()}

    def _give_back(self, u: int) -> None:
        key = self._held.pop(u, None)
        if key is None:
            return
        with self._cv:
            slot = self._ready.pop(key, None)
            if slot is not None:
                self._free.append(slot)
                self._cv.notify_all()

    def _wait_for(self, key: tuple[int, int]) -> int:
        t0 = time.perf_counter()
        u = key[0]
        with self._cv:
            if self.sequence[self._expect] != key:      # an interrupted pass: restart the cycle at key
                self._resync(self.sequence.index(key))
            while key not in self._ready and self._error is None:
                self._cv.wait()
            if self._error is not None:
                err, self._error = self._error, None
                self._resync(self._expect)
                raise err if isinstance(err, FormatError) else FormatError(f"reading {self.f.path}: {err}")
            self._expect = (self._expect + 1) % len(self.sequence)
            slot = self._ready[key]
        now = time.perf_counter()
        self.stats.wait_s += now - t0
        self.stats.unit(u)["wait_s"] += now - t0
        if self.trace is not None:
            self.trace.append(("wait", u, t0, now))
        return slot

    def _resync(self, index: int) -> None:
        """Drop what was prefetched (called with the lock held) and restart loading at sequence[index]."""
        self._generation += 1
        self._ready.clear()
        self._held.clear()
        self._free = list(range(len(self.slots)))
        self._next = self._expect = index
        self._cv.notify_all()

    # -- prefetch thread ----------------------------------------------------------------------------
    def _prefetch_loop(self) -> None:
        last_gen = self._generation
        while True:
            with self._cv:
                while not self._stop and (not self._free or self._error is not None
                                          or self.sequence[self._next] in self._ready):
                    self._cv.wait()
                if self._stop:
                    return
                slot = self._free.pop()
                key = self.sequence[self._next]
                gen = self._generation
                self._next = (self._next + 1) % len(self.sequence)
            if gen != last_gen:          # decodes of a discarded pass may still write into a recycled slot
                self._drain()
                last_gen = gen
            try:
                self._load(key, slot, gen)
            except BaseException as e:           # surfaces in the caller as FormatError, never a hang
                self._drain()
                self._publish(key, slot, gen, e)

    def _publish(self, key: tuple[int, int], slot: int, gen: int, err: BaseException | None) -> None:
        """A piece's last chunk is decoded (or failed): hand its slot to the model, or back to the free list."""
        with self._cv:
            if err is not None and gen == self._generation:
                self._error = err
            if err is None and gen == self._generation:
                self._ready[key] = slot
            elif slot not in self._free:
                self._free.append(slot)
            self._cv.notify_all()

    def _drain(self) -> None:
        for jobs in self._ring:
            for j in jobs:
                j.exception()
            jobs.clear()

    def _load(self, key: tuple[int, int], slot: int, gen: int) -> None:
        """Read piece `key`'s chunks in groups of about PIECE bytes into a ring of staging buffers; each group's
        chunks decode on the pool while the next group is read, so decompression and checksumming overlap
        the reads and staging stays a few MB instead of a whole layer. The ring outlives the piece: the next
        piece's reads start while this one's last groups decode, and the last decode publishes the piece."""
        out = memoryview(self.slots[slot])
        u = key[0]
        entries = sorted((self.f.tensors[n] for n in self.piece_names[key]), key=lambda e: e.chunks[0].offset)
        groups = _groups([(e, c) for e in entries for c in e.chunks], self.group_bytes)
        state = {"left": sum(len(g) for g in groups), "decode_s": 0.0, "err": None}
        lock = threading.Lock()
        rec = self.stats.unit(u)

        def decode(e, c, stored, dst):
            t = time.perf_counter()
            err = None
            try:
                self.f.decode_chunk(e, c, stored, dst)
            except BaseException as ex:
                err = ex
            end = time.perf_counter()
            if self.trace is not None:
                self.trace.append(("decompress", u, t, end))
            with lock:
                state["decode_s"] += end - t
                state["err"] = state["err"] or err
                state["left"] -= 1
                last = state["left"] == 0
            if last:
                with self._cv:                 # decode threads finish units concurrently
                    self.stats.decode_s += state["decode_s"]
                    self.stats.units_loaded += key[1] == 0      # a unit, not each of its pieces
                    rec["decode_s"] += state["decode_s"]
                    rec["loads"] += key[1] == 0
                self._publish(key, slot, gen, state["err"])

        t_read = [0.0]
        try:
            for group in groups:
                r = self._k % RING
                self._k += 1
                for j in self._ring[r]:                        # that buffer's previous chunks are decoded
                    j.exception()
                self._ring[r].clear()
                buf, base = self._read_group(group, r, u, t_read)
                for e, c in group:
                    off = self.piece_offsets[key][e.name]
                    args = (e, c, buf[c.offset - base:c.offset - base + c.length], out[off:off + e.raw_bytes])
                    if self._pool is not None:
                        self._ring[r].append(self._pool.submit(decode, *args))
                    else:
                        decode(*args)
        finally:
            rec["read_s"] += t_read[0]

    def _read_group(self, group, r: int, u: int, t_read: list | None = None):
        """One read request for consecutive chunks into staging buffer r; returns (view, file offset of
        its first byte)."""
        start = group[0][1].offset
        end = group[-1][1].offset + group[-1][1].length
        lo, hi = (start - start % PAGE, -(-end // PAGE) * PAGE) if self.direct else (start, end)
        buf = self.staging[r * self.group_room:r * self.group_room + (hi - lo)]
        t0 = time.perf_counter()
        got = os.preadv(self._fd, [memoryview(buf)], lo)
        self.throttle.wait(got, t0)
        end = time.perf_counter()
        self.stats.read_s += end - t0
        if t_read is not None:
            t_read[0] += end - t0
        if self.trace is not None:
            self.trace.append(("read", u, t0, end))
        self.stats.bytes_read += max(got, 0)
        if got < end - lo:
            raise FormatError(f"{self.f.path}: file ended at {lo + max(got, 0)} while reading a layer "
                              f"(truncated or removed?)")
        if not self.direct:
            os.posix_fadvise(self._fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        return buf, lo

    def _open_direct(self) -> int:
        if self.f.alignment % PAGE or not hasattr(os, "O_DIRECT"):
            return self.f.fileno()
        try:
            return os.open(self.f.path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return self.f.fileno()

    def _fetch_row(self, row: int) -> np.ndarray:
        """One embedding row, read from its chunks (a raw chunk: just the row's bytes)."""
        e = self.f.tensors[EMBED]
        lay = e.layout
        if not 0 <= row < lay.rows:
            raise EdgeLLMError(f"token id {row} is outside the vocabulary")
        buf = np.empty(lay.code_row_bytes + lay.scale_row_bytes, np.uint8)
        pieces = [(row * lay.code_row_bytes, lay.code_row_bytes, 0)]
        if lay.quantized:
            pieces.append((lay.codes_nbytes + row * lay.scale_row_bytes, lay.scale_row_bytes, lay.code_row_bytes))
        for raw_off, n, dst in pieces:
            c = next(c for c in e.chunks if c.raw_offset <= raw_off < c.raw_offset + c.raw_length)
            inner = raw_off - c.raw_offset
            if c.codec == "raw" and not self.f.verify_checksums:
                data = os.pread(self.f.fileno(), n, c.offset + inner)
            else:
                full = np.empty(c.raw_length, np.uint8)
                stored = os.pread(self.f.fileno(), c.length, c.offset)
                self.f.decode_chunk(e, c, stored, memoryview(full), chunk_only=True)
                data = full[inner:inner + n].tobytes()
                n_read = c.length
                self.stats.bytes_read += n_read - n
            self.stats.bytes_read += n
            buf[dst:dst + n] = np.frombuffer(data, np.uint8)
        from ..quant import Layout
        one = QTensor.from_buffer(Layout(lay.stype, 1, lay.cols, lay.group), buf)
        return one.dequantize()[0]


def _spans(entries) -> list[tuple[int, int, list]]:
    """Group a unit's tensors into contiguous file spans (a tied head spans the embedding and the norm)."""
    spans: list[tuple[int, int, list]] = []
    for e in sorted(entries, key=lambda e: e.chunks[0].offset):
        s, t = e.chunks[0].offset, e.chunks[-1].offset + e.chunks[-1].length
        if spans and s - spans[-1][1] < PAGE * 16:
            spans[-1] = (spans[-1][0], t, spans[-1][2] + [e])
        else:
            spans.append((s, t, [e]))
    return spans


class StreamedLayer:
    """The tensors of a streamed layer, fetched piece by piece as the forward pass asks for them (see
    PIECE_ORDER); asking for a later piece hands the earlier one's slot back, since the pass never returns
    to a piece within a layer."""

    def __init__(self, weights: StreamedWeights, u: int, prefix: str):
        self.weights, self.u, self.prefix = weights, u, prefix
        self.where = weights.piece_of[u]
        self.piece, self.tensors = -1, {}

    def __getitem__(self, name: str) -> QTensor:
        k = self.where[name]
        if k != self.piece:
            if k < self.piece:
                raise EdgeLLMError(f"layer {self.u}: {name} asked for after a later piece (see PIECE_ORDER)")
            self.tensors = self.weights._take(self.u, k, self.prefix)
            self.piece = k
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str, default=None):
        return self[name] if name in self.where else default
