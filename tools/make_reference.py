#!/usr/bin/env python3
"""Dev-only (needs torch + transformers, NOT project dependencies): log transformers' logits once.

    python -m venv /work/refvenv && /work/refvenv/bin/pip install torch==2.13.0 transformers safetensors numpy
    /work/refvenv/bin/python tools/make_reference.py

Writes tests/data/reference/<case>/: the tiny random checkpoints of tests/test_models.py's CASES (saved by
transformers itself, f32), input_ids.json and logits.npy; for stories260K (read from ../shared) the logits of
the "Once upon a time" prompt and transformers' greedy 40-token continuation.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import STORIES, TINY_TOKENIZER, make_tiny_model  # noqa: E402
from test_models import CASES, STORIES_PROMPT, _ids  # noqa: E402

OUT = ROOT / "tests" / "data" / "reference"
CLASSES = {
    "llama": transformers.LlamaForCausalLM,
    "mistral": transformers.MistralForCausalLM,
    "qwen2": transformers.Qwen2ForCausalLM,
}


def logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def tiny_case(name: str, kw: dict) -> None:
    d = OUT / name
    src = make_tiny_model(d / "src", **kw)
    cfg = json.loads((src / "config.json").read_text())
    model = CLASSES[cfg["model_type"]].from_pretrained(src, torch_dtype=torch.float32).eval()
    for p in src.iterdir():
        p.unlink()
    src.rmdir()
    model.save_pretrained(d, safe_serialization=True)  # transformers' own file and config
    (d / "tokenizer.json").write_text(json.dumps(TINY_TOKENIZER))
    (d / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True})
    )
    ids = _ids(24, cfg["vocab_size"])
    full = logits(model, ids)
    with torch.no_grad():  # KV-cache path must agree with the full pass
        out = model(torch.tensor([ids[:16]]), use_cache=True)
        rows, past = [out.logits[0, -1]], out.past_key_values
        for t in ids[16:]:
            out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
            rows.append(out.logits[0, -1])
            past = out.past_key_values
    assert np.abs(torch.stack(rows[:-1]).numpy() - full[15:23]).max() < 1e-4
    np.save(d / "logits.npy", full.astype(np.float32))
    (d / "input_ids.json").write_text(json.dumps(ids))


def stories_case() -> None:
    d = OUT / "stories260K"
    d.mkdir(parents=True, exist_ok=True)
    model = transformers.LlamaForCausalLM.from_pretrained(STORIES, torch_dtype=torch.float32).eval()
    np.save(d / "logits.npy", logits(model, STORIES_PROMPT).astype(np.float32))
    (d / "input_ids.json").write_text(json.dumps(STORIES_PROMPT))
    with torch.no_grad():
        g = model.generate(torch.tensor([STORIES_PROMPT]), do_sample=False, max_new_tokens=40)
    (d / "greedy.json").write_text(json.dumps(g[0, len(STORIES_PROMPT) :].tolist()))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, kw in CASES.items():
        tiny_case(name, kw)
    stories_case()
    (OUT / "MANIFEST.json").write_text(
        json.dumps(
            {
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "cases": {n: {k: v for k, v in kw.items()} for n, kw in CASES.items()} | {"stories260K": "../shared"},
            },
            indent=1,
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
