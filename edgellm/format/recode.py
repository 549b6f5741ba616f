"""Re-encode an .ellm file with another codec: same tensors and chunk sizes, new chunk payloads.

Used by `edgellm bench --sweep codec=...` to compare codecs on one model without its source checkpoint.
"""

from __future__ import annotations

from . import codecs
from .reader import EllmFile
from .spec import TensorEntry
from .writer import Writer


def recode(src, dst, codec: str, *, level: int = 3, device=None, threads: int = 2) -> int:
    """Write `dst` = `src` with every chunk re-encoded as `codec` (raw, lz4, zstd or auto for `device`).
    Returns the stored bytes of the new file's tensors."""
    with EllmFile(src) as f:
        meta = {k: v for k, v in f.header.items() if k not in ("tensors", "alignment")}
        meta["codec"] = {"mode": codec, "level": level, "device": getattr(device, "name", None)}
        entries = [TensorEntry(e.name, e.shape, e.layout, e.layer) for e in f.entries]
        sizes = {e.name: e.chunks[0].raw_length for e in f.entries if e.chunks}
        w = Writer(
            dst,
            meta,
            entries,
            codec=codec,
            level=level,
            cost=codecs.CostModel.for_device(device),
            chunk_sizes=sizes,
            alignment=f.alignment,
            threads=threads,
        )
        with w:
            for e in f.entries:
                w.feed(e.name, f.read_tensor(e.name).to_bytes())
        return w.stored_total
