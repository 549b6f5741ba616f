#!/usr/bin/env python3
"""Dev-only (needs torch + transformers + gguf, NOT project dependencies): log transformers' logits for the
SmolLM2 GGUF once, as transformers' own GGUF loader dequantizes it (float32).

    /work/refvenv/bin/python tools/make_gguf_logits_reference.py

Writes tests/data/reference/smollm2-gguf/: input_ids.json (fixed token ids, so the tokenizer is not under
test here) and logits.npz with, for every position, the top-64 logit ids and values and the logits of a fixed
stride of 512 vocabulary entries (the whole matrix is 49152 wide: 190 KB a position).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests" / "data" / "reference" / "smollm2-gguf"
IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198]
STRIDE = 96  # 49152 / 96 = 512 sampled columns


def main() -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        GGUF.parent, gguf_file=GGUF.name, torch_dtype=torch.float32
    )
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].float().numpy()
    top = np.argsort(-logits, axis=1)[:, :64]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "input_ids.json").write_text(json.dumps({"ids": IDS, "transformers": transformers.__version__}))
    np.savez_compressed(
        OUT / "logits.npz",
        top_ids=top.astype(np.int32),
        top_values=np.take_along_axis(logits, top, axis=1).astype(np.float32),
        strided=logits[:, ::STRIDE].astype(np.float32),
        stride=np.array(STRIDE),
    )
    print(f"wrote {OUT}: {len(IDS)} positions, argmax {logits.argmax(1).tolist()}")


if __name__ == "__main__":
    main()
