"""The one cost model: the bytes of every buffer the runtime allocates, as the planner counts them and the
pager allocates them (a byte counted in the plan is a byte allocated; nothing is sized twice).

    unit buffer     a pinned unit's tensors back to back, each 64-byte aligned    (packed_offsets)
    slot            the largest piece of a streamed unit, packed the same way      (LayerCost.piece)
    head resident   a streamed head's final norm and scales (and mins)             (LayerCost.resident)
    staging ring    RING read buffers of one read each, page-rounded          (staging_bytes)
    fixed           run state, tokenizer, decoder scratch, embedding rows            (fixed_costs)

A streamed head travels as blocks of rows of its codes stream, each no larger than the largest layer piece or an
eighth of the head, whichever is larger; its scales stay resident (1/16 of q8's codes) and every block is scaled
from them.
Without this the head was always pinned, and on SmolLM2 its 30 MB tied table alone exceeded half the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..format import EllmFile
from ..format.spec import EMBED_CHUNK
from .units import head_names, names_of, unit_names, unit_pieces

READ_SIZE = 2 << 20  # bytes per read request: large enough for full bandwidth, small enough that
# decoding the last read of a layer (not overlapped) stays short
PAGE = 4096  # O_DIRECT alignment of file offsets, lengths and buffer addresses
RING = 3  # staging buffers: one being read while the other two decode
TENSOR_ALIGN = 64  # each tensor's offset inside a unit buffer or slot
HEAD_BLOCKS = 8  # the head's row blocks, at most (or as many as a layer piece needs): each is a kernel call
# per token, pinned or streamed (108 blocks of SmolLM2's 442 KB pieces cost 2.7 ms of 11.5 per token)
RUN_STATE = "run state (KV cache, activations, scratch)"  # fixed_costs' line for the RunState's bytes
TOKENIZER_FACTOR = 6  # RSS of a loaded `tokenizers` object per byte of tokenizer.json (measured)


@dataclass
class LayerCost:
    layer: int  # -1 embedding, 0..L-1, L head (final norm + lm_head)
    raw: int  # decoded bytes: the size of its unit buffer when pinned
    stored: int  # bytes of its contiguous span on disk (what a read fetches)
    piece: int = 0  # decoded bytes of its largest streaming piece (a slot's size); 0: the whole unit
    reads: int = 0  # read requests that stream it once: each piece cut into reads; 0: not counted
    resident: int = 0  # bytes it keeps in RAM while it streams (the head's norm and scales)


Placement = tuple  # (TensorEntry, StoredChunk, offset of the chunk's decoded bytes in the piece's buffer)


def packed_offsets(f: EllmFile, names: list[str]) -> tuple[dict[str, int], int]:
    """Offset of each tensor inside a unit buffer or slot (TENSOR_ALIGN-aligned) and the buffer's size."""
    out, pos = {}, 0
    for n in names:
        out[n] = pos
        pos += -(-f.tensors[n].raw_bytes // TENSOR_ALIGN) * TENSOR_ALIGN
    return out, pos


def file_spans(entries) -> list[tuple[int, int, list]]:
    """Group a unit's tensors into contiguous file spans (a tied head spans the embedding and the norm)."""
    spans: list[tuple[int, int, list]] = []
    for e in sorted(entries, key=lambda e: e.chunks[0].offset):
        s, t = e.chunks[0].offset, e.chunks[-1].offset + e.chunks[-1].length
        if spans and s - spans[-1][1] < PAGE * 16:
            spans[-1] = (spans[-1][0], t, spans[-1][2] + [e])
        else:
            spans.append((s, t, [e]))
    return spans


def unit_costs(f: EllmFile, n_layers: int) -> dict[int, LayerCost]:
    """Decoded, stored and largest-piece bytes and read requests of every unit (the layers, then the head;
    the head's as it streams: in blocks, its scales resident)."""
    costs, limit = {}, read_size(f)
    for u in range(n_layers):
        names = unit_names(f, u, n_layers)
        spans = file_spans([f.tensors[n] for n in names])
        pieces = unit_pieces(f, u, n_layers)
        piece = max(packed_offsets(f, p)[1] for p in pieces)
        reads = sum(len(read_batches(piece_chunks(f, p), limit)) for p in pieces)
        costs[u] = LayerCost(u, packed_offsets(f, names)[1], max(e - s for s, e, _ in spans), piece, reads)
    codes = f.tensors[head_names(f)[1]].layout.codes_nbytes
    blocks = head_blocks(f, max(max((c.piece for c in costs.values()), default=0), -(-codes // HEAD_BLOCKS)))
    costs[n_layers] = LayerCost(
        n_layers,
        packed_offsets(f, unit_names(f, n_layers, n_layers))[1],
        sum(c.length for b in blocks for c in b),
        max(sum(c.raw_length for c in b) for b in blocks),
        sum(len(read_batches([(None, c) for c in b], limit)) for b in blocks),
        head_resident(f)[1],
    )
    return costs


def piece_chunks(f: EllmFile, names: list[str]) -> list[Placement]:
    """A piece's chunks in file order, placed as the tensors sit in its buffer (packed_offsets)."""
    offsets = packed_offsets(f, names)[0]
    entries = sorted((f.tensors[n] for n in names), key=lambda e: e.chunks[0].offset)
    return [(e, c, offsets[e.name] + c.raw_offset) for e in entries for c in e.chunks]


def head_blocks(f: EllmFile, limit: int) -> list[list]:
    """The chunks of the logits matrix's codes stream, cut into blocks of at most `limit` decoded bytes (at
    least one chunk each): whole rows, as chunks end on row boundaries (SPEC)."""
    e = f.tensors[head_names(f)[1]]
    out: list[list] = [[]]
    for c in e.chunks:
        if c.raw_offset >= e.layout.codes_nbytes:
            break
        if out[-1] and sum(x.raw_length for x in out[-1]) + c.raw_length > limit:
            out.append([])
        out[-1].append(c)
    return out


def head_resident(f: EllmFile) -> tuple[dict[str, int], int]:
    """What a streamed head keeps in RAM: the final norm and the logits matrix's streams after its codes
    (scales, and mins for q4a), each TENSOR_ALIGN-aligned: ({"norm" | stream name: offset}, bytes)."""
    norm, head = (f.tensors[n] for n in head_names(f))
    parts = [("norm", norm.raw_bytes)] + [(name, nb) for name, _rb, nb in head.layout.streams()[1:]]
    out, pos = {}, 0
    for name, nb in parts:
        out[name] = pos
        pos += -(-nb // TENSOR_ALIGN) * TENSOR_ALIGN
    return out, pos


def read_size(f: EllmFile) -> int:
    """Bytes per read request: READ_SIZE, or a third of the largest layer when layers are small, so the whole
    staging ring never outweighs one layer."""
    return min(READ_SIZE, -(-max((s.end - s.start for s in f.layer_spans()), default=READ_SIZE) // RING))


def staging_bytes(f: EllmFile) -> int:
    """Bytes of the staging ring: RING buffers, each one read (or one larger chunk) plus O_DIRECT
    page rounding on both ends."""
    biggest = max((c.length for e in f.entries for c in e.chunks), default=0)
    one = -(-(max(read_size(f), biggest) + 2 * PAGE) // PAGE) * PAGE
    return RING * one


def read_batches(chunks, limit: int) -> list[list]:
    """Consecutive (entry, chunk, ...) tuples cut into reads of at most `limit` bytes (a larger chunk alone)."""
    out: list[list] = []
    cur: list = []
    start = 0
    for item in chunks:
        c = item[1]
        if cur and c.offset + c.length - start > limit:
            out.append(cur)
            cur = []
        if not cur:
            start = c.offset
        cur.append(item)
    if cur:
        out.append(cur)
    return out


def fixed_costs(f: EllmFile, run_state_bytes: int, decode_threads: int) -> dict[str, int]:
    """Everything besides the weights: the run state, the tokenizer, a chunk of scratch per decoder (the
    decode pool's threads and the calling thread), and the embedding-row fetch's buffers."""
    tok = f.tokenizer or {}
    max_chunk = max(c.raw_length for e in f.entries for c in e.chunks)
    embed = f.tensors[names_of(f).embed].layout
    return {
        RUN_STATE: run_state_bytes,
        "tokenizer": TOKENIZER_FACTOR * len(tok.get("json", "")),
        "decoder scratch": (decode_threads + 1) * max_chunk,
        "embedding rows": 2 * max(EMBED_CHUNK, embed.code_row_bytes) + embed.nbytes // max(embed.rows, 1) * 4,
    }
