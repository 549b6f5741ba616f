"""edgellm inspect FILE [--json]"""

from __future__ import annotations

import json
import os

from .options import add_model_argument


def add_arguments(p) -> None:
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    p.add_argument("--tensors", action="store_true", help="list every tensor (the default lists layer 0 only)")


def summarize(f) -> dict:
    """Everything `inspect` reports, as plain data."""
    cfg = f.config
    params = sum(e.layout.rows * e.layout.cols for e in f.entries)
    layers: dict[int, dict[str, int]] = {}
    codecs: dict[str, dict[str, int]] = {}
    for e in f.entries:
        row = layers.setdefault(e.layer, {"layer": e.layer, "raw_bytes": 0, "stored_bytes": 0, "tensors": 0})
        row["raw_bytes"] += e.raw_bytes
        row["stored_bytes"] += e.stored_bytes
        row["tensors"] += 1
        for c in e.chunks:
            mix = codecs.setdefault(c.codec, {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
            mix["chunks"] += 1
            mix["raw_bytes"] += c.raw_length
            mix["stored_bytes"] += c.length
    raw = sum(e.raw_bytes for e in f.entries)
    stored = sum(e.stored_bytes for e in f.entries)
    file_bytes = os.path.getsize(f.path)
    src = f.header.get("source") or {}
    kinds, exact = src.get("types") or {}, set(src.get("exact") or [])  # GGUF imports: each tensor's origin
    return {
        "file": str(f.path),
        "file_bytes": file_bytes,
        "converter": f.header.get("converter"),
        "model_type": cfg.get("model_type"),
        "config": cfg,
        "quant": f.header.get("quant"),
        "params": params,
        "raw_bytes": raw,
        "stored_bytes": stored,
        "compression_ratio": raw / max(stored, 1),
        "bits_per_weight": 8 * file_bytes / max(params, 1),
        "codecs": codecs,
        "weight_types": f.weight_types(),
        "layers": [layers[k] for k in sorted(layers)],
        "tensors": [
            {
                "name": e.name,
                "shape": list(e.shape),
                "stype": e.layout.stype,
                "layer": e.layer,
                "group": e.layout.group if e.layout.quantized else None,
                "raw_bytes": e.raw_bytes,
                "stored_bytes": e.stored_bytes,
                "chunks": len(e.chunks),
                "source_type": kinds.get(e.name),  # the GGUF type it came from (None: not a GGUF import)
                "exact": e.name in exact if kinds else None,  # kept without changing a value
            }
            for e in f.entries
        ],
        "has_chat_template": bool((f.tokenizer or {}).get("config", {}).get("chat_template")),
    }


def _layer_name(layer: int, n_layers: int) -> str:
    return "embedding" if layer < 0 else ("head" if layer >= n_layers else f"layer {layer}")


def run(args) -> int:
    from ..format import EllmFile
    from ..source import resolve_model

    with EllmFile(resolve_model(args.model, args.quant), verify=False) as f:
        s = summarize(f)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    cfg, q = s["config"], s["quant"] or {}
    n_layers = cfg.get("num_hidden_layers", 0)
    print(f"{s['file']}  ({s['converter']})")
    print(
        f"  model     {s['model_type']}: hidden {cfg.get('hidden_size')}, {n_layers} layers, "
        f"{cfg.get('num_attention_heads')}/{cfg.get('num_key_value_heads')} heads, "
        f"intermediate {cfg.get('intermediate_size')}, vocab {cfg.get('vocab_size')}, "
        f"tied {bool(cfg.get('tie_word_embeddings', False))}"
    )
    print(
        f"  weights   {s['params'] / 1e6:,.2f}M params, {q.get('type')}{' --pure' if q.get('pure') else ''} "
        f"group {q.get('group_size')}, "
        f"{s['bits_per_weight']:.3f} bits/weight (file bytes / params)"
    )
    print(
        f"  bytes     {s['raw_bytes'] / 1e6:,.2f} MB raw -> {s['stored_bytes'] / 1e6:,.2f} MB stored "
        f"({s['compression_ratio']:.4f}x), file {s['file_bytes'] / 1e6:,.2f} MB"
    )
    mix = ", ".join(
        f"{k}: {v['chunks']} chunks {v['raw_bytes'] / max(v['stored_bytes'], 1):.3f}x" for k, v in s["codecs"].items()
    )
    types = ", ".join(f"{k} {v / 1e6:,.2f} MB" for k, v in s["weight_types"].items())
    print(f"  types     {types} (raw bytes of the matrices; each tensor's below)")
    print(f"  codecs    {mix}")
    print(f"  template  {'yes' if s['has_chat_template'] else 'none'}")
    print(f"\n  {'part':<11} {'tensors':>7} {'raw MB':>10} {'stored MB':>10} {'ratio':>7}")
    for row in s["layers"]:
        print(
            f"  {_layer_name(row['layer'], n_layers):<11} {row['tensors']:>7} {row['raw_bytes'] / 1e6:>10.3f} "
            f"{row['stored_bytes'] / 1e6:>10.3f} {row['raw_bytes'] / max(row['stored_bytes'], 1):>7.3f}"
        )
    shown = [t for t in s["tensors"] if args.tensors or t["layer"] in (-1, 0, n_layers)]
    gguf = any(t["source_type"] for t in s["tensors"])
    origin = f"  {'from GGUF':<18}" if gguf else ""
    print(f"\n  {'tensor':<44} {'type':<5} {'shape':<14} {'stored KB':>10} {'chunks':>6}{origin}")
    for t in shown:
        shape = "x".join(map(str, t["shape"]))
        how = f"  {t['source_type']} {'exact' if t['exact'] else 're-quantized'}" if gguf else ""
        print(f"  {t['name']:<44} {t['stype']:<5} {shape:<14} {t['stored_bytes'] / 1e3:>10.1f} {t['chunks']:>6}{how}")
    if gguf:
        n_exact = sum(bool(t["exact"]) for t in s["tensors"])
        print(f"  GGUF import: {n_exact} of {len(s['tensors'])} tensors kept exactly, the rest re-quantized")
    if not args.tensors:
        print("  (layers 1.. omitted; --tensors lists all)")
    return 0
