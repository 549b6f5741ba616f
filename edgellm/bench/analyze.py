"""Entropy and codec study of a model's quantized weights: what compression saves, at what decode cost.

Every 2-D floating tensor is quantized to each storage type asked for (an .ellm file is studied as stored)
and each stored stream, codes then f16 scales, is measured on its own, because they behave differently:
q4 codes are near-uniform nibbles, scales are f16 bytes whose high bytes repeat.

  - order-0 entropy H in bits per symbol: q4 codes over the 16 nibble values (both nibbles of each byte),
    every other stream over the 256 byte values. The entropy bound of a stream is symbols * H / 8 bytes:
    what a static per-tensor entropy coder that ignores context would store.
  - each codec variant (raw, lz4, zstd at each --levels) compresses the stream in 256 KiB chunks of whole
    rows, as the writer does; a chunk that does not shrink counts as raw, as the writer stores it.
  - share = (raw - stored) / (raw - bound): the fraction of the order-0 saving the codec captures. 0 = none,
    1 = reaches the bound; above 1 the codec exploits repeats that order-0 entropy does not see (it happens
    on scales). Clipped below at 0; null where the bound saves nothing.
  - decode MB/s: raw bytes per second decoding up to SAMPLE_BYTES of each stream's chunks with
    `codecs.decode_into` (best of 3, one core of this host, hot cache).

The device prediction for loading all studied weights is stored / read bandwidth + raw / (measured decode
MB/s x cpu_scale) per stream (host: 750 MB/s cold disk, as `CostModel.for_device`). The per-read latency
is left out: every codec reads the same number of chunks, so it does not change the ranking.

JSON schema (`edgellm analyze SRC --json`; bytes, seconds, MB/s = 1e6 bytes/s):

    {"source": str, "kind": "ellm" | "safetensors", "chunk_bytes": int, "levels": [int],
     "variants": ["raw", "lz4", "zstd-1", ...],          # codec variant names, the keys of CODECS below
     "share": str,                                        # the definition above
     "skipped": [{"name", "shape", "dtype", "reason"}],   # not studied: "1-D", "dtype I64", "empty"...
     "limited": int,                                      # 2-D tensors left out by --max-tensors
     "quant": {stype: {"group": int,
                       "tensors": [{"name", "shape", **PART, "file": FILE,   # "file": .ellm only
                                    "streams": {"codes": STREAM, "scales": STREAM, "mins": STREAM}}],  # mins: q4a
                       "total": {"tensors": int, **PART, "streams": {...}, "file": FILE}}},
     "devices": {name: {"read_mb_s", "cpu_scale",
                        "load": {stype: {variant: LOAD, "file": LOAD}}}},   # "file": .ellm only
     "recommendation": {name: {stype: {"codec", "seconds", "raw_seconds", "time_saving_pct",
                                       "size_saving_pct"}}}}
    PART   = {"weights", "raw_bytes", "bound_bytes", "bits_per_weight", "bound_bits_per_weight",
              "codecs": CODECS}                           # codes and scales together
    STREAM = PART + {"symbol": "nibble" | "byte", "symbols", "entropy_bits"}
    CODECS = {variant: {"stored_bytes", "ratio", "bits_per_weight", "share", "decode_mb_s"}}
    FILE   = {"mode", "level", "stored_bytes", "raw_bytes", "chunks": {codec: {"chunks", "raw_bytes",
              "stored_bytes"}}}                           # the file's own per-chunk codec choice
    LOAD   = {"seconds", "read_seconds", "decode_seconds"}

Totals sum the per-tensor bounds, so a total's entropy_bits is the symbol-weighted mean of its tensors'.
"""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..converter.source import _DTYPES, _MAX_ST_HEADER, SourceTensor
from ..errors import EdgeLLMError
from ..format import codecs
from ..format.spec import DEFAULT_CHUNK, TensorEntry
from ..quant import QUANT_TYPES, Layout, quantize
from .streams import Part, StreamStudy, variants

BLOCK_BYTES = 8 << 20  # f32 source bytes quantized at once: memory stays bounded on any model
DEFAULT_LEVELS = (1, 3, 19)
SHARE = "(raw - stored) / (raw - entropy bound): fraction of the order-0 saving captured, clipped below at 0"


# ---- sources: (name, shape, layout, block iterator) per tensor, plus what is skipped ----


@dataclass
class _Item:
    name: str
    shape: tuple
    source: SourceTensor | TensorEntry  # SourceTensor (safetensors) or TensorEntry (.ellm)


def _safetensors_index(path: Path) -> tuple[list[SourceTensor], list[dict]]:
    """The 2-D float tensors of one file in data order, and the others as skipped. Unlike the converter's
    index this tolerates integer or 1-D tensors: any architecture is studied, tensor by tensor."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        hlen = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < hlen <= _MAX_ST_HEADER or 8 + hlen > size:
            raise EdgeLLMError(f"{path}: not a safetensors file")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EdgeLLMError(f"{path}: safetensors header is not valid JSON") from None
    header.pop("__metadata__", None)
    out, skipped = [], []
    for name, info in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", (0, 0))[0]):
        dtype, shape = info.get("dtype"), tuple(info.get("shape", ()))
        a, b = info.get("data_offsets", (0, 0))
        why = (
            f"dtype {dtype}"
            if dtype not in _DTYPES
            else f"{len(shape)}-D"
            if len(shape) != 2
            else "empty"
            if 0 in shape
            else None
        )
        if why:
            skipped.append({"name": name, "shape": list(shape), "dtype": dtype, "reason": why})
            continue
        if b - a != shape[0] * shape[1] * _DTYPES[dtype][1] or a < 0 or 8 + hlen + b > size:
            raise EdgeLLMError(f"{path}: tensor {name!r} has invalid data offsets (file corrupt?)")
        out.append(SourceTensor(name, path, dtype, shape, 8 + hlen + a))
    return out, skipped


def _open_safetensors(src: Path) -> tuple[list[_Item], list[dict]]:
    files = sorted(src.glob("*.safetensors")) if src.is_dir() else [src]
    if not files:
        raise EdgeLLMError(f"{src}: no *.safetensors files in this directory")
    items, skipped = [], []
    for f in files:
        ts, sk = _safetensors_index(f)
        items += [_Item(t.name, t.shape, t) for t in ts]
        skipped += sk
    return items, skipped


def _block_rows(lay: Layout, chunk: int) -> int:
    """Rows per block: a whole number of code chunks (so chunks match the file's), about BLOCK_BYTES of f32."""
    per_chunk = max(1, chunk // lay.code_row_bytes)
    return per_chunk * max(1, BLOCK_BYTES // (per_chunk * 4 * lay.cols))


# ---- the study ----


def analyze(
    src,
    *,
    quants=None,
    levels=DEFAULT_LEVELS,
    devices=None,
    max_tensors: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress=None,
) -> dict:
    """The study of `src` (.ellm, .safetensors or a directory of them) as the JSON-ready dict above."""
    from ..runtime.device import list_devices, load_device

    path = Path(src)
    if not path.exists():
        raise EdgeLLMError(f"{src}: no such file or directory")
    levels = tuple(dict.fromkeys(levels))  # repeated values would be counted twice
    for lv in levels:
        if not 1 <= lv <= 22:
            raise EdgeLLMError(f"--levels: zstd levels run from 1 to 22, got {lv}")
    profiles = [load_device(d) for d in (devices or list_devices())]
    vs = variants(levels)
    names = [v.name for v in vs]
    ellm = path.is_file() and path.suffix == ".ellm"
    if ellm and quants:
        raise EdgeLLMError("--quant applies to safetensors sources; an .ellm file is studied as stored")
    quants = list(dict.fromkeys(quants or ("q4", "q8")))
    for q in quants:
        if q not in QUANT_TYPES:
            raise EdgeLLMError(f"--quant {q!r}: choose among {', '.join(QUANT_TYPES)}")
    f = None
    if ellm:
        from ..format import EllmFile

        f = EllmFile(path)
        items = [_Item(e.name, e.shape, e) for e in f.entries if len(e.shape) == 2]
        skipped = [
            {"name": e.name, "shape": list(e.shape), "dtype": e.layout.stype, "reason": "1-D"}
            for e in f.entries
            if len(e.shape) != 2
        ]
    elif path.is_dir() or path.suffix == ".safetensors":
        items, skipped = _open_safetensors(path)
    else:
        raise EdgeLLMError(f"{src}: expected an .ellm file, a .safetensors file or a model directory")
    limited = max(0, len(items) - max_tensors) if max_tensors else 0
    items = items[: len(items) - limited]
    if not items:
        if f:
            f.close()
        raise EdgeLLMError(f"{src}: no 2-D floating tensor to study")

    quant: dict[str, dict] = {}
    totals: dict[str, dict] = {}  # stype -> {"tensors", "weights", "codes"/"scales"/"mins": Part, "file"}
    try:
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
            for i, it in enumerate(items):
                if progress:
                    progress(i, len(items), it.name)
                for stype, group, rec, parts in _study(it, f, quants, vs, pool, chunk):
                    quant.setdefault(stype, {"group": group, "tensors": []})["tensors"].append(rec)
                    tot = totals.setdefault(
                        stype,
                        {"tensors": 0, "weights": 0, **{k: Part() for k in STREAMS}, "file": _file_mix([])},
                    )
                    tot["tensors"] += 1
                    tot["weights"] += rec["weights"]
                    for k, p in parts.items():
                        tot[k].add(p)
                    if "file" in rec:
                        _add_mix(tot["file"], rec["file"])
        file_codec = (f.header.get("codec") or {}) if f else {}
    finally:
        if f:
            f.close()

    out: dict[str, Any] = {
        "source": str(src),
        "kind": "ellm" if ellm else "safetensors",
        "chunk_bytes": chunk,
        "levels": list(levels),
        "variants": names,
        "share": SHARE,
        "skipped": skipped,
        "limited": limited,
        "quant": quant,
        "devices": {},
        "recommendation": {},
    }
    for stype, tot in totals.items():
        streams = {k: tot[k] for k in STREAMS if tot[k].raw}
        rec = {
            "tensors": tot["tensors"],
            **_combined(streams, tot["weights"], names),
            "streams": {k: _stream_json(p, tot["weights"], names, _symbol(stype, k)) for k, p in streams.items()},
        }
        if ellm:
            rec["file"] = {"mode": file_codec.get("mode"), "level": file_codec.get("level"), **tot["file"]}
        quant[stype]["total"] = rec
    for dev in profiles:
        cm = codecs.CostModel.for_device(dev)
        load: dict[str, dict[str, Any]] = {}
        rec = out["recommendation"].setdefault(dev.name, {})
        for stype, tot in totals.items():
            parts = [tot[k] for k in STREAMS]  # an empty stream costs nothing
            load[stype] = {
                v: _load(sum(p.stored.get(v, p.raw) for p in parts), _decode_s(parts, v, cm.cpu_scale), cm)
                for v in names
            }
            if ellm:
                load[stype]["file"] = _file_load(tot["file"], parts, names, file_codec.get("level"), cm)
            # a variant whose every chunk fell back to raw is raw: never recommend it on timing noise
            total = quant[stype]["total"]
            shrinks = [v for v in names if v == "raw" or total["codecs"][v]["stored_bytes"] < total["raw_bytes"]]
            best = min(shrinks, key=lambda v: load[stype][v]["seconds"])
            raw_s, best_s = load[stype]["raw"]["seconds"], load[stype][best]["seconds"]
            rec[stype] = {
                "codec": best,
                "seconds": best_s,
                "raw_seconds": raw_s,
                "time_saving_pct": 100 * (1 - best_s / raw_s) if raw_s else 0.0,
                "size_saving_pct": 100 * (1 - total["codecs"][best]["stored_bytes"] / max(total["raw_bytes"], 1)),
            }
        out["devices"][dev.name] = {"read_mb_s": cm.read_mb_s, "cpu_scale": cm.cpu_scale, "load": load}
    return out


STREAMS = ("codes", "scales", "mins")  # every stream a stored tensor may have (quant.Layout.streams)


def _symbol(stype: str, stream: str) -> str:
    return "nibble" if stype in ("q4", "q4a") and stream == "codes" else "byte"


def _stream_json(p: Part, weights: int, names, symbol: str) -> dict:
    return {
        "symbol": symbol,
        "symbols": p.symbols,
        "entropy_bits": 8 * p.bound / max(p.symbols, 1),
        **p.to_json(weights, names),
    }


def _decode_s(streams, v: str, cpu_scale: float = 1.0) -> float:
    """Decode seconds of several streams, each at its own measured rate."""
    return sum(p.decode_seconds(v, cpu_scale) for p in streams)


def _combined(streams: dict, weights: int, names) -> dict:
    both = Part()
    for p in streams.values():
        both.add(p)
    return both.to_json(weights, names, {v: _decode_s(streams.values(), v) for v in names})


def _study(it: _Item, f, quants, vs, pool, chunk):
    """Yield (stype, group, tensor record, {stream: Part}) for each storage type `it` is studied in."""
    if f is not None:  # .ellm: the codes and scales as stored
        assert isinstance(it.source, TensorEntry)  # an .ellm file's items hold its entries
        e: TensorEntry = it.source
        lays = {e.layout.stype: e.layout}
        qt = f.read_tensor(e.name)
        step = _block_rows(e.layout, chunk)
        stored = [a for a in (qt.codes, qt.scales, qt.mins) if a is not None]
        feeds = ((e.layout.stype, [a[r : r + step] for a in stored]) for r in range(0, e.layout.rows, step))
    else:  # safetensors: quantize row blocks, each read once for every type
        st = it.source
        assert isinstance(st, SourceTensor)  # a safetensors file's items hold its tensors
        lays = {q: Layout(q, st.shape[0], st.shape[1]) for q in quants}
        step = min(_block_rows(lay, chunk) for lay in lays.values())

        def gen():
            for r in range(0, st.shape[0], step):
                block = st.read_rows(r, min(st.shape[0], r + step))
                for q in quants:
                    yield q, quantize(block, q, lays[q].group)

        feeds = gen()
    studies = {q: {"codes": StreamStudy(q in ("q4", "q4a"), lay.group, vs, pool, chunk)} for q, lay in lays.items()}
    extra: dict[str, list[list]] = {q: [] for q in lays}  # per type: blocks of its scales (and mins) streams
    for q, streams in feeds:
        studies[q]["codes"].feed(streams[0])
        extra[q].append(streams[1:])  # 1/16 of the f32 bytes: kept, then chunked once as the writer does
    names = [v.name for v in vs]
    for q, lay in lays.items():
        for i, (name, _rb, _n) in enumerate(lay.streams()[1:]):
            studies[q][name] = StreamStudy(False, lay.group, vs, pool, chunk)
            studies[q][name].feed(np.concatenate([blocks[i] for blocks in extra[q]]))
        parts = {k: s.finish() for k, s in studies[q].items()}
        weights = lay.rows * lay.cols
        rec = {
            "name": it.name,
            "shape": list(it.shape),
            **_combined(parts, weights, names),
            "streams": {k: _stream_json(p, weights, names, _symbol(q, k)) for k, p in parts.items()},
        }
        if f is not None:
            rec["file"] = _file_mix(e.chunks)
        yield q, (lay.group if lay.quantized else 0), rec, parts


def _file_mix(chunks) -> dict:
    """The file's own choice: chunk count, raw and stored bytes per codec."""
    mix: dict[str, Any] = {"stored_bytes": 0, "raw_bytes": 0, "chunks": {}}
    for c in chunks:
        m = mix["chunks"].setdefault(c.codec, {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
        m["chunks"] += 1
        m["raw_bytes"] += c.raw_length
        m["stored_bytes"] += c.length
        mix["raw_bytes"] += c.raw_length
        mix["stored_bytes"] += c.length
    return mix


def _add_mix(acc: dict, mix: dict) -> None:
    acc["stored_bytes"] += mix["stored_bytes"]
    acc["raw_bytes"] += mix["raw_bytes"]
    for codec, m in mix["chunks"].items():
        t = acc["chunks"].setdefault(codec, {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
        for k in t:
            t[k] += m[k]


def _load(stored: int, decode_s: float, cm) -> dict:
    read_s = stored / (cm.read_mb_s * 1e6)
    return {"seconds": read_s + decode_s, "read_seconds": read_s, "decode_seconds": decode_s}


def _file_load(mix: dict, streams: list[Part], names, level, cm) -> dict:
    """The file as stored: each codec's raw bytes decode at the rate measured here for that codec
    (zstd at the file's level when it was studied, else the first level studied)."""
    zstd = f"zstd-{level}" if f"zstd-{level}" in names else next(v for v in names if v.startswith("zstd"))
    raw = sum(p.raw for p in streams)
    dec = sum(
        m["raw_bytes"] * _decode_s(streams, zstd if c == "zstd" else c, cm.cpu_scale) / max(raw, 1)
        for c, m in mix["chunks"].items()
    )
    return _load(mix["stored_bytes"], dec, cm)
