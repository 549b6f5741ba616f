"""The pager: the weight provider the model code uses (provider.WeightProvider), for any plan.

Pinned units (plan.pinned) are read and decoded once, into one buffer each, and stay in RAM; the streamed
ones (plan.streamed) come piece by piece through plan.slots slots that the prefetcher (prefetch.py) fills
while the model computes. A fully pinned plan starts no thread at all. Every buffer is the size the plan
counted (costs.py).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator

import numpy as np

from ..errors import EdgeLLMError
from ..format import EllmFile
from ..quant import Layout, QTensor, integer_kernels
from .costs import head_blocks, head_resident, packed_offsets, piece_chunks
from .device import Throttle
from .embedding import fetch_row
from .iostats import IOStats
from .plan import Plan
from .prefetch import Prefetcher
from .provider import LayerWeights
from .units import head_names, names_of, unit_names, unit_pieces


class Pager:
    def __init__(self, f: EllmFile, plan: Plan, *, direct_io: bool = False, decode_threads: int = 1):
        self.f, self.plan, self.n_layers = f, plan, plan.n_layers
        self.names = names_of(f)  # the architecture's tensor names
        self.stats = IOStats()
        self.throttle = Throttle.of(plan.device)
        # pinned units: read and decoded now, each tensor at its packed offset in its unit's buffer
        self.pinned: dict[int, dict[str, QTensor]] = {}
        self.pinned_bufs: list[np.ndarray] = []  # one (costs[u].raw,) uint8 buffer per pinned unit
        for u in plan.pinned:
            offsets, size = packed_offsets(f, unit_names(f, u, self.n_layers))
            assert size == plan.costs[u].raw, "the plan counts what the pager allocates"
            buf = np.empty(size, np.uint8)
            self.pinned_bufs.append(buf)
            self.pinned[u] = {n: f.read_into(n, buf[o : o + f.tensors[n].raw_bytes]) for n, o in offsets.items()}
            self.stats.bytes_read += sum(f.tensors[n].stored_bytes for n in offsets)
        self._embed_table = self.pinned.get(self.n_layers, {}).get(self.names.embed)
        # streamed layers: (unit, piece) keys in use order, each piece's tensors at their offsets in a slot
        layers = [u for u in plan.streamed if u < self.n_layers]
        pieces = {u: unit_pieces(f, u, self.n_layers) for u in layers}
        sequence = [(u, k) for u in layers for k in range(len(pieces[u]))]
        self.layout = {(u, k): packed_offsets(f, names)[0] for u in layers for k, names in enumerate(pieces[u])}
        placements = {(u, k): piece_chunks(f, names) for u in layers for k, names in enumerate(pieces[u])}
        # streamed layer -> {name without the layer prefix: piece}, what StreamedLayer looks names up in
        self.piece_of = {
            u: {n[len(self.names.layer(u)) :]: k for k, ns in enumerate(pieces[u]) for n in ns} for u in layers
        }
        # the head's row blocks, (first row, rows): pinned or streamed, the logits are computed block by block
        # on the same blocks, so a budget never changes a bit of them (BLAS rounds by the shapes it is given)
        self.head_blocks = head_blocks(f, plan.costs[self.n_layers].piece)
        rb = f.tensors[head_names(f)[1]].layout.code_row_bytes
        self.head_rows = [(b[0].raw_offset // rb, sum(c.raw_length for c in b) // rb) for b in self.head_blocks]
        # a pinned head is one block, packed whole (pack_pinned): one parallel region for its logits where its
        # streamed row blocks took one each (SmolLM2's q8 head, 9 blocks of 5915 rows: 1.9 -> 1.65 ms, same bits)
        self.pinned_head: list[tuple[int, QTensor]] = []
        if self.n_layers in plan.pinned:
            self.pinned_head = [(0, self.pinned[self.n_layers][head_names(f)[1]])]
        self._pack_pinned()
        if self.n_layers in plan.streamed:
            sequence += self._stream_head(placements)
        self.prefetch: Prefetcher | None = None
        if plan.streamed:
            slots = [np.empty(plan.slot_bytes, np.uint8) for _ in range(plan.slots)]  # plan.slots x (slot_bytes,)
            self.prefetch = Prefetcher(
                f,
                sequence,
                placements,
                slots,
                plan.staging_bytes,
                self.stats,
                self.throttle,
                direct_io=direct_io,
                decode_threads=decode_threads,
            )
        self._acquired: dict[int, float] = {}  # unit -> when the model got it (compute time = until release)
        self._together: dict[int, range] = {}  # unit -> the layers taken with it by layers() (one clock)
        self._views = {u: self._strip(u) for u in self.pinned if u < self.n_layers}  # layer() of a pinned layer
        self._waited: dict[int, float] = {}  # unit -> its wait_s then (waits for later pieces are not compute)

    def _pack_pinned(self) -> None:
        """Rearrange the pinned matrices the integer tiles take into their packed layout (lanes.pack: the tiles
        load straight what they otherwise transpose in registers, SmolLM2's q4 matrices 2x faster a thread),
        in place: a pinned layer's matrices whole, a pinned head whole too (a tied embedding table looks its rows
        up through it). The same numbers as the streamed, row-major pieces give."""
        from ..kernels import lanes

        def pack(t: QTensor) -> None:
            if integer_kernels(t.layout) and t.layout.rows >= lanes.ROWS and t.scales is not None:
                lanes.pack(t.codes, t.scales, t.mins, t.layout.stype)
                t.packed = lanes.ROWS

        for u, tensors in self.pinned.items():
            if u < self.n_layers:
                for t in tensors.values():
                    pack(t)
        for _, block in self.pinned_head:
            pack(block)
        self._embed_blocks = (  # a tied table's rows, looked up in the packed head blocks
            self.pinned_head
            if self._embed_table is not None
            and self.names.embed == head_names(self.f)[1]
            and any(b.packed for _, b in self.pinned_head)
            else []
        )

    # -- the provider verbs -------------------------------------------------------------------------
    def embed(self, ids, out) -> None:
        if self._embed_blocks:
            starts = [r0 for r0, _ in self._embed_blocks]
            for t, i in enumerate(np.asarray(ids, dtype=np.int64)):
                r0, block = self._embed_blocks[bisect.bisect_right(starts, int(i)) - 1]
                out[t] = block.row_major(np.array([int(i) - r0])).dequantize()[0]
            return
        if self._embed_table is not None:
            out[:] = self._embed_table.dequantize(np.asarray(ids, dtype=np.int64))
            return
        for t, i in enumerate(np.asarray(ids, dtype=np.int64)):
            out[t] = fetch_row(self.f, int(i), self.stats)

    def layer(self, i: int) -> LayerWeights:
        if i in self._views:
            return self._pinned_unit(i)
        self._acquire(i)
        return StreamedLayer(self, i, self.names.layer(i))

    def resident_run(self, i: int) -> int:
        end = i
        while end < self.n_layers and end in self._views:
            end += 1
        return end

    def layers(self, first: int, end: int) -> list[LayerWeights]:
        assert self.resident_run(first) >= end, "layers() takes pinned layers"
        now, run = time.perf_counter(), range(first, end)
        for u in run:
            self._acquired[u], self._together[u] = now, run
        return [self._views[u] for u in run]

    def release(self, i: int) -> None:
        t0 = self._acquired.pop(i, None)
        if t0 is not None:
            now = time.perf_counter()
            run = self._together.pop(i, range(i, i + 1))
            for u in run:  # the first release of a run books all of it, a share each
                self._acquired.pop(u, None)
                self._together.pop(u, None)
                rec = self.stats.unit(u)
                busy = (now - t0) / len(run) - (rec["wait_s"] - self._waited.pop(u, rec["wait_s"]))  # minus waits
                rec["compute_s"] += busy
                rec["uses"] += 1
                self.stats.compute_s += busy
            self.stats.event("compute", run[0], t0, now)
        if self.prefetch is not None:
            self.prefetch.give_back(i)

    def head(self) -> tuple[QTensor, Iterable[tuple[int, QTensor]]]:
        u = self.n_layers
        if u in self.pinned:
            return self._pinned_unit(u)[head_names(self.f)[0]], self.pinned_head
        self._acquire(u)
        return self.head_norm, self._head_blocks()

    def _head_blocks(self) -> Iterator[tuple[int, QTensor]]:
        """A streamed head's row blocks: codes from the slot, scales (and mins) from the resident copy."""
        assert self.prefetch is not None, "a plan with streamed units has a prefetcher"
        lay = self.head_layout
        for k, (r0, n) in enumerate(self.head_rows):
            codes = self.prefetch.take((self.n_layers, k))[: n * lay.code_row_bytes].view(lay.code_dtype)
            yield r0, _block(lay, codes.reshape(n, -1), self.head_scales, self.head_mins, r0)

    def _stream_head(self, placements: dict) -> list[tuple[int, int]]:
        """Read what a streamed head keeps resident (costs.head_resident) and lay out its row blocks
        (costs.head_blocks); returns their sequence keys."""
        f, u = self.f, self.n_layers
        norm, head = (f.tensors[n] for n in head_names(f))
        offsets, size = head_resident(f)
        assert size == self.plan.costs[u].resident, "the plan counts what the pager allocates"
        buf = np.empty(size, np.uint8)  # (resident bytes,): the norm, then the head's scales (and mins)
        self.pinned_bufs.append(buf)
        self.head_norm = f.read_into(norm.name, buf[offsets["norm"] : offsets["norm"] + norm.raw_bytes])
        lay = self.head_layout = head.layout
        starts, pos = {}, 0
        for name, _rb, nbytes in lay.streams():
            starts[name], pos = pos, pos + nbytes
        for c in head.chunks:
            name = next(n for n, st in reversed(starts.items()) if c.raw_offset >= st)
            if name != "codes":
                dst = offsets[name] + c.raw_offset - starts[name]
                f.read_chunk_into(head, c, buf[dst : dst + c.raw_length].data)
                self.stats.bytes_read += c.length
        view = {  # (rows, groups) f16 views of the resident scales and mins
            n: buf[offsets[n] : offsets[n] + lay.scales_nbytes].view(np.float16).reshape(lay.rows, -1)
            for n in starts
            if n != "codes"
        }
        self.head_scales, self.head_mins = view.get("scales"), view.get("mins")
        for k, chunks in enumerate(self.head_blocks):
            placements[(u, k)] = [(head, c, c.raw_offset - chunks[0].raw_offset) for c in chunks]
        return [(u, k) for k in range(len(self.head_blocks))]

    @property
    def bytes_read(self) -> int:
        return self.stats.bytes_read

    def io_stats(self) -> dict:
        return self.stats.as_dict()

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()

    # -- helpers ------------------------------------------------------------------------------------
    def take(self, u: int, k: int, prefix: str) -> dict[str, QTensor]:
        """Piece k of streamed unit u as tensors named without `prefix`, viewing the slot that holds it."""
        assert self.prefetch is not None, "a plan with streamed units has a prefetcher"
        buf = self.prefetch.take((u, k))
        tensors = self.f.tensors
        return {
            n[len(prefix) :]: QTensor.from_buffer(tensors[n].layout, buf[o : o + tensors[n].raw_bytes])
            for n, o in self.layout[(u, k)].items()
        }

    def _acquire(self, u: int) -> None:
        """Start unit u's compute clock; waits for its later pieces are taken off at release."""
        self._acquired[u] = time.perf_counter()
        self._waited[u] = self.stats.unit(u)["wait_s"]

    def _pinned_unit(self, u: int) -> dict[str, QTensor]:
        self._acquire(u)
        return self._views[u] if u < self.n_layers else self.pinned[u]

    def _strip(self, u: int) -> dict[str, QTensor]:
        """Pinned layer u's tensors named without the layer prefix (made once: layer() hands out the same)."""
        prefix = self.names.layer(u)
        return {n[len(prefix) :]: t for n, t in self.pinned[u].items()}


def _block(lay: Layout, codes: np.ndarray, scales, mins, r0: int) -> QTensor:
    """A head's rows r0.. as a QTensor: `codes` holds just those rows, scales and mins (if any) all of them."""
    n = codes.shape[0]
    sel = slice(r0, r0 + n)
    return QTensor(
        Layout(lay.stype, n, lay.cols, lay.group),
        codes,
        None if scales is None else scales[sel],
        None if mins is None else mins[sel],
    )


class StreamedLayer:
    """The tensors of a streamed layer, fetched piece by piece as the forward pass asks for them (see
    the model's LAYER_PIECES); asking for a later piece hands the earlier one's slot back, since the pass never
    returns to a piece within a layer."""

    def __init__(self, pager: Pager, u: int, prefix: str):
        self.pager, self.u, self.prefix = pager, u, prefix
        self.where = pager.piece_of[u]
        self.piece = -1
        self.tensors: dict[str, QTensor] = {}

    def __getitem__(self, name: str) -> QTensor:
        k = self.where[name]
        if k != self.piece:
            if k < self.piece:
                raise EdgeLLMError(f"layer {self.u}: {name} asked for after a later piece (see LAYER_PIECES)")
            self.tensors = self.pager.take(self.u, k, self.prefix)
            self.piece = k
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str, default=None):
        return self[name] if name in self.where else default
