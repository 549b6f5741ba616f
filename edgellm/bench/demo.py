"""`edgellm demo`: the streaming benchmark on a model built here, with nothing downloaded.

A Llama-shaped checkpoint with random weights and a BPE tokenizer trained on a built-in text is generated
once into the cache directory, converted with zstd, and then benchmarked under RAM budgets below its size
on an emulated device. Later runs reuse the converted file.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ..paths import cache_dir

RANDOM = "the model's weights are random, so any text it writes is noise; the numbers are real."
REAL = "a real chat model (SmolLM2-135M-Instruct, imported from its GGUF), streamed as it would be on the device."
EXPLAIN = """\
What this shows: {weights}
Each row runs the model in a fresh process under a RAM budget (a share of the model file). Layers that do not
fit are streamed from the file through {device}'s emulated flash every token, while the CPU computes:
  decode tok/s   tokens per second after the first token (mean ± sd over repeats)
  MB/token       bytes read from flash per generated token: what the budget could not hold
  overlap        share of read + decompression time hidden behind compute (100% = I/O is free)
  RSS MB         peak memory of the run above its interpreter + numba baseline: stays within the budget
  predicted      the planner's estimate: min(flash bandwidth / MB per token, compute speed)
  ratio          decode speed against the first row
A bigger budget pins more layers and reads fewer bytes per token; that is the whole game on a device."""


def demo_model(preset: str = "demo", rebuild: bool = False, log=print) -> Path:
    """The cached demo .ellm, built on first use (synthetic checkpoint -> zstd .ellm)."""
    from ..converter.converter import convert
    from ..synthetic import make_checkpoint

    out = cache_dir() / "demo" / f"{preset}-q4-zstd.ellm"
    if out.is_file() and not rebuild:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"building the demo model once (random weights, {preset} shape) into {out} ...")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="build-") as tmp:
        src = make_checkpoint(Path(tmp) / "hf", preset, dtype="float16")
        convert(src, out, quant="q4", codec="zstd", progress=False)
        shutil.rmtree(src, ignore_errors=True)
    log(f"built in {time.perf_counter() - t0:.1f} s")
    return out


def sample_text(path: Path, tokens: int = 24) -> str:
    import edgellm

    with edgellm.load(path, context=64) as m:
        return m.generate("Once upon a time", max_tokens=tokens, temperature=0.0)
