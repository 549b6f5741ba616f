#!/usr/bin/env python3
"""edgellm's q4 against llama.cpp's Q4_0 on the same float weights: file bytes, KL, top-1, perplexity.

    python tools/compare_llamacpp_quant.py MODEL.gguf --llamacpp BIN_DIR [--text FILE] [--window 512]
    python tools/compare_llamacpp_quant.py MODEL.gguf            (edgellm's recipes only)

1. The float weights: MODEL.gguf dequantized by `gguf` into an F32 GGUF (llama.cpp's tensor names and row
   order, every metadata key kept), so both quantizers start from the same numbers.
2. llama.cpp quantizes it (`llama-quantize`: Q4_0 with its default mix, and `--pure`); edgellm converts it
   (`--quant q4`, `--quant q4 --pure`, `--quant q8`) and, as the reference, `--quant f32`.
3. One evaluator scores them all: edgellm imports llama.cpp's files with `--quant auto`, which keeps Q4_0
   and Q8_0 tensors exactly (same codes and scales), so the rows differ only in how the weights were
   quantized. Windows of --window tokens, each from BOS, every token scored (`edgellm perplexity`).
4. With --llamacpp, `llama-perplexity --kl-divergence` scores llama.cpp's files and edgellm's q4 exported to
   GGUF (q4 -> Q4_0, q8 -> Q8_0 blocks of the same codes and scales): llama.cpp's runtime and its protocol
   (ctx --window, second half of each window scored), so the ranking does not rest on one evaluator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared/models/smollm2-135m-instruct/LICENSE"


def _copy_metadata(reader, writer) -> None:
    """Every metadata key of `reader` into `writer`, except the two the writer adds itself (GGUF.*,
    general.architecture) and general.file_type, which the caller sets for the new tensor types."""
    import gguf

    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, f.contents(), vtype, sub_type=sub)


def f32_gguf(src: Path, out: Path) -> None:
    """Every tensor of `src` dequantized to F32, metadata copied: the float weights llama.cpp starts from."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out, r.fields["general.architecture"].contents())
    _copy_metadata(r, w)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _blocks(qt) -> tuple[np.ndarray, object]:
    """A q4 / q4a / q8 / f32 tensor as GGUF rows (u8[rows, row_bytes], type): Q4_0 / Q4_1 / Q8_0 blocks of the
    very codes, scales and mins (a q8 group of 64 or 128 is 2 or 4 Q8_0 blocks sharing its scale)."""
    import gguf

    lay = qt.layout
    if lay.stype == "f32":
        return np.ascontiguousarray(qt.codes).view(np.uint8), gguf.GGMLQuantizationType.F32
    if lay.padded_cols != lay.cols or lay.stype not in ("q4", "q4a", "q8") or (lay.stype != "q8" and lay.group != 32):
        sys.exit(f"compare_llamacpp_quant: no GGUF block type holds {lay.stype} group {lay.group} x {lay.cols} exactly")
    per = lay.group // 32  # blocks per group
    fields = [qt.scales] + ([qt.mins] if lay.has_mins else [])  # f16 d (and m) before each block's codes
    head = [np.repeat(a, per, axis=1).view(np.uint8).reshape(lay.rows, -1, 2) for a in fields]
    step = 32 if lay.stype == "q8" else 16
    codes = np.ascontiguousarray(qt.codes).view(np.uint8).reshape(lay.rows, -1, step)
    kinds = {"q4": "Q4_0", "q4a": "Q4_1", "q8": "Q8_0"}
    kind = gguf.GGMLQuantizationType[kinds[lay.stype]]
    return np.concatenate([*head, codes], axis=2).reshape(lay.rows, -1), kind


def ellm_to_gguf(ellm: Path, template: Path, out: Path) -> None:
    """An .ellm file's weights, byte for byte, as a GGUF that llama.cpp runs (names, q/k row order and metadata
    from the F32 `template`), so llama.cpp's own evaluator can score edgellm's quantization too."""
    import gguf

    from edgellm.converter.gguf import _hf_name, open_gguf
    from edgellm.format import EllmFile

    src = open_gguf(template)
    r = gguf.GGUFReader(template)
    w = gguf.GGUFWriter(out, r.fields["general.architecture"].contents())
    _copy_metadata(r, w)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    with EllmFile(ellm) as ef:
        for t in r.tensors:
            hf = _hf_name(t.name)
            rows, kind = _blocks(ef.read_tensor(hf))
            row_map = src.tensors[hf].row_map
            if row_map is not None:  # Hugging Face row r goes back to stored row row_map[r]
                stored = np.empty_like(rows)
                stored[row_map] = rows
                rows = stored
            if len(t.shape) == 1:
                rows = rows.reshape(-1)
            w.add_tensor(t.name, rows, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"compare_llamacpp_quant: {Path(cmd[0]).name} failed:\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr


def llamacpp_kl(bin_dir: Path, base: Path, files: dict[str, Path], text: Path, window: int, work: Path) -> dict:
    """llama-perplexity's own mean KL per file (its protocol), or {} if it fails."""
    logits = work / "llamacpp-f32.kld"
    exe = str(bin_dir / "llama-perplexity")
    common = ["-f", str(text), "-c", str(window), "-t", "2", "--chunks", "64"]
    run([exe, "-m", str(base), *common, "--kl-divergence-base", str(logits)])
    out = {}
    for label, path in files.items():
        log = run([exe, "-m", str(path), *common, "--kl-divergence-base", str(logits), "--kl-divergence"])
        line = next((x for x in log.splitlines() if x.startswith("Mean    KLD:")), "")
        out[label] = float(line.split()[2]) if line else float("nan")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a GGUF file (its dequantized values are the float weights)")
    ap.add_argument(
        "--llamacpp", type=Path, default=None, help="llama.cpp's bin directory (llama-quantize, llama-perplexity)"
    )
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="text to score (default: the Apache-2.0 licence)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/tmp/compare-quant"), help="scratch directory")
    a = ap.parse_args()

    import edgellm
    from edgellm.cli.perplexity import score

    a.work.mkdir(parents=True, exist_ok=True)
    base = a.work / "f32.gguf"
    f32_gguf(a.model, base)
    ref_path = a.work / "ref-f32.ellm"
    edgellm.convert(base, ref_path, quant="f32")
    rows: list[tuple[str, Path, Path]] = []  # (label, file whose bytes count, file the evaluator loads)
    own = a.work / "source_auto.ellm"
    t0 = time.perf_counter()
    edgellm.convert(a.model, own)  # --quant auto: the source's own types, kept exactly where ours hold them
    print(f"source GGUF --quant auto: converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows.append((f"{a.model.name} --quant auto (its types kept exactly)", own, own))
    for label, kw in (("edgellm q4", {}), ("edgellm q4 --pure", {"pure": True}), ("edgellm q8", {"quant": "q8"})):
        out = a.work / (label.replace(" ", "_").replace("--", "") + ".ellm")
        t0 = time.perf_counter()
        edgellm.convert(base, out, **{"quant": "q4", **kw})
        print(f"{label}: converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows.append((label, out, out))
    lc_files = {}
    if a.llamacpp is not None:
        for label, extra in (("llama.cpp Q4_0 (default mix)", []), ("llama.cpp Q4_0 --pure", ["--pure"])):
            gg = a.work / (label.split()[1] + ("-pure" if extra else "") + ".gguf")
            run([str(a.llamacpp / "llama-quantize"), *extra, str(base), str(gg), "Q4_0"])
            imported = gg.with_suffix(".ellm")
            edgellm.convert(gg, imported, quant="auto")  # Q4_0 -> q4, Q8_0 -> q8: the same codes and scales
            rows.append((label, gg, imported))
            lc_files[label] = gg

    text = a.text.read_text(encoding="utf-8")
    ref = edgellm.load(ref_path, context=a.window, quant="f32")
    ids = ref.tokenizer.encode(text)
    results = []
    for label, counted, loaded in rows:
        with edgellm.load(loaded, context=a.window) as m:
            r = score(m, ref, ids, a.window)
        results.append((label, os.path.getsize(counted), r))
    ref.close()

    print(
        f"\n{a.model.name}: {results[0][2]['tokens']} tokens of {a.text.name}, windows of {a.window}; "
        f"KL and top-1 vs the f32 conversion\n"
    )
    print("| | file MB | mean KL (nats/token) | top-1 agreement | perplexity |")
    print("|---|---|---|---|---|")
    for label, size, r in results:
        kl, top1, ppl = r["kl_mean"], 100 * r["top1_agreement"], r["perplexity"]
        print(f"| {label} | {size / 1e6:.2f} | {kl:.4f} | {top1:.1f}% | {ppl:.3f} |")
    if lc_files:
        ours, back = a.work / "edgellm_q4.gguf", a.work / "source_auto.gguf"
        ellm_to_gguf(rows[1][1], base, ours)
        ellm_to_gguf(own, base, back)  # the auto import, exported: the source's blocks again
        files = {"edgellm q4 (exported)": ours, **lc_files, "source GGUF": a.model, "its auto import (exported)": back}
        kld = llamacpp_kl(a.llamacpp, base, files, a.text, a.window, a.work)
        print(
            "\nllama-perplexity --kl-divergence (its protocol: second half of each window): "
            + ", ".join(f"{k} {v:.4f}" for k, v in kld.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
