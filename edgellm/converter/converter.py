"""Hugging Face directory or GGUF file -> .ellm, one row block at a time (peak RSS: a block, a tensor's scales,
chunks). A GGUF tensor whose values one of our types holds exactly (Q8_0 -> q8, Q4_0 -> q4) is repacked, not
re-quantized; `quant="auto"` (GGUF only) picks each tensor's type (gguf.auto_stype)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConvertError
from ..format import codecs
from ..format.spec import DEFAULT_CHUNK, EMBED_CHUNK, TensorEntry, layout_for
from ..format.writer import Writer
from ..quant import GROUP_SIZES, QUANT_CHOICES, QUANT_TYPES, quantize
from . import recipe
from .archs import plan
from .gguf import GGUFSource
from .source import Tensor, open_source

BLOCK_BYTES = 8 << 20  # f32 bytes of source rows quantized at once
CODEC_CHOICES = ("auto", "zstd", "lz4", "raw")


@dataclass
class ConvertReport:
    path: Path
    params: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    source_bytes: int = 0
    seconds: float = 0.0
    codec_mix: dict = field(default_factory=dict)


def _check_args(quant: str, group_size: int, codec: str, level: int) -> None:
    if quant not in QUANT_CHOICES:
        raise ConvertError(f"--quant {quant!r}: choose one of {', '.join(QUANT_CHOICES)}")
    if group_size not in GROUP_SIZES:
        raise ConvertError(f"--group-size {group_size}: choose one of {', '.join(map(str, GROUP_SIZES))}")
    if codec not in CODEC_CHOICES:
        raise ConvertError(f"--codec {codec!r}: choose one of {', '.join(CODEC_CHOICES)}")
    if not 1 <= level <= 22:
        raise ConvertError(f"--level {level}: zstd levels run from 1 to 22")


class _Progress:
    """A one-line bar on a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool | None):
        self.total, self.done, self.t0 = max(total, 1), 0, time.perf_counter()
        self.on = sys.stderr.isatty() if enabled is None else enabled

    def add(self, n: int) -> None:
        self.done += n
        if self.on:
            frac = self.done / self.total
            mb_s = self.done / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
            bar = "#" * int(30 * frac)
            sys.stderr.write(
                f"\rconverting [{bar:<30}] {100 * frac:5.1f}%  {self.done / 1e6:,.0f}/"
                f"{self.total / 1e6:,.0f} MB  {mb_s:,.0f} MB/s"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def convert(
    src,
    dst,
    *,
    quant: str | None = None,
    group_size: int = 32,
    codec: str = "auto",
    level: int = 3,
    device=None,
    chunk_size: int = DEFAULT_CHUNK,
    threads: int = 2,
    pure: bool = False,
    progress: bool | None = None,
    on_commit=None,
) -> ConvertReport:
    """Convert a Hugging Face model directory or a GGUF file `src` into the .ellm file `dst` (written
    atomically: interrupted or failed, `dst` is untouched and no temporary file stays). `quant` defaults to
    q4 for a directory, auto for GGUF. `on_commit()` runs the moment `dst` is in place, before a Ctrl-C that
    came in during the rename is delivered."""
    t0 = time.perf_counter()
    source = open_source(src)
    gguf = isinstance(source, GGUFSource)
    quant = quant or ("auto" if gguf else "q4")
    _check_args(quant, group_size, codec, level)
    if quant == "auto" and not gguf:
        raise ConvertError(
            "--quant auto keeps a GGUF file's own types; for a Hugging Face directory choose "
            f"one of {', '.join(QUANT_TYPES)}"
        )
    dst = Path(dst)
    if dst.is_dir():
        raise ConvertError(f"{dst}: is a directory; give the output file name, e.g. {dst / 'model.ellm'}")
    if not dst.parent.is_dir():
        raise ConvertError(f"{dst.parent}: output directory does not exist")
    planned = plan(source.config, set(source.tensors))
    tied = not any(p.role == "head" for p in planned)  # no lm_head: the embedding table is the head
    entries = []
    for p in planned:
        st = source.tensors[p.name]
        if tuple(st.shape) != p.shape:
            raise ConvertError(f"tensor {p.name!r} has shape {list(st.shape)}, config implies {list(p.shape)}")
        stype, group = recipe.storage(p, quant, group_size, tied=tied, pure=pure, source_dtype=st.dtype)
        entries.append(TensorEntry(p.name, p.shape, layout_for(p.shape, stype, group), p.layer))
    dev = None
    if device is not None:
        from ..runtime.device import load_device

        dev = load_device(device) if isinstance(device, str) else device
    params = sum(int(np.prod(p.shape)) for p in planned)
    meta = {
        "format": "ellm",
        "converter": f"edgellm {__version__}",
        "config": source.config,
        "quant": {"type": quant, "group_size": group_size, "pure": pure},
        "codec": {"mode": codec, "level": level, "device": getattr(dev, "name", None)},
        "source": _source_meta(source, entries, params),
        "tokenizer": {
            "json": source.tokenizer_json,
            "config": source.tokenizer_config,
            "generation_config": source.generation_config,
        },
    }
    report = ConvertReport(dst, params=params)
    bar = _Progress(sum(source.tensors[p.name].rows * source.tensors[p.name].row_bytes for p in planned), progress)
    writer = Writer(
        dst,
        meta,
        entries,
        codec=codec,
        level=level,
        cost=codecs.CostModel.for_device(dev),
        chunk_size=chunk_size,
        # small chunks let a token's row be fetched alone; a tied table is also the head, read whole per token
        chunk_sizes={} if tied else {"model.embed_tokens.weight": min(chunk_size, EMBED_CHUNK)},
        threads=threads,
        on_commit=on_commit,
    )
    try:
        with writer:
            for e in entries:
                report.source_bytes += _write_tensor(writer, e, source.tensors[e.name], bar)
    finally:
        bar.close()
    report.raw_bytes, report.stored_bytes = writer.raw_total, writer.stored_total
    for e in entries:
        for c in e.chunks:
            report.codec_mix[c.codec] = report.codec_mix.get(c.codec, 0) + 1
    report.seconds = time.perf_counter() - t0
    return report


def _source_meta(source, entries: list[TensorEntry], params: int) -> dict:
    """What the file came from; for GGUF each tensor's type and which ones were kept exactly (`inspect`)."""
    out: dict = {"dtype": source.dtype, "params": params}
    if isinstance(source, GGUFSource):
        out["format"] = "gguf"
        out["types"] = {e.name: source.tensors[e.name].dtype for e in entries}
        out["exact"] = [e.name for e in entries if source.tensors[e.name].keeps_values(e.layout.stype, e.layout.group)]
    return out


def _write_tensor(writer: Writer, entry: TensorEntry, st: Tensor, bar: _Progress) -> int:
    """Quantize `st` block by block into the writer: codes as they come, scales (and mins) once all rows are
    done. A tensor the source holds exactly in the target type is repacked instead."""
    lay = entry.layout
    rows_per = max(1, BLOCK_BYTES // (4 * lay.cols))
    later: list[list[np.ndarray]] = [[] for _ in lay.streams()[1:]]  # blocks of the scales (and mins) streams
    repack = lay.quantized and st.keeps_values(lay.stype, lay.group)
    for start in range(0, st.rows, rows_per):
        stop = min(st.rows, start + rows_per)
        if repack:
            streams = st.read_streams(start, stop, lay.stype)
            if not all(np.isfinite(a).all() for a in streams[1:]):
                raise ConvertError(f"tensor {entry.name!r} holds NaN or infinite scales")
        else:
            block = st.read_rows(start, stop)
            if not np.isfinite(block).all():
                raise ConvertError(f"tensor {entry.name!r} holds NaN or infinite values")
            streams = quantize(block, lay.stype, lay.group)
        writer.feed(entry.name, np.ascontiguousarray(streams[0]))
        for blocks, a in zip(later, streams[1:], strict=True):
            blocks.append(a)
        bar.add((stop - start) * st.row_bytes)
    for blocks in later:
        writer.feed(entry.name, np.ascontiguousarray(np.concatenate(blocks)))
    return st.rows * st.row_bytes
