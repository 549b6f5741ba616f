#!/usr/bin/env python3
"""Write tests/data/smollm2_tokenizer_ids.json: SmolLM2's GGUF tokenizer as transformers builds it.

    HF_HUB_OFFLINE=1 /work/refvenv/bin/python tools/make_gguf_reference.py

transformers (5.x, with torch: its GGUF reader needs it) loads the tokenizer straight from the GGUF file in
../shared; tests/test_gguf_tokenizer.py checks that edgellm.converter.gguf_tokenizer rebuilds it to the same
ids and decoded text, without transformers.

One known difference is recorded, not hidden: transformers has no rule for `tokenizer.ggml.pre = smollm` and
splits text with GPT-2's regex alone, while SmolLM2's own tokenizer.json (and llama.cpp's "smollm") first cut
every digit off (Digits(individual_digits=True)), then apply GPT-2's regex. The two differ only where a run of
whitespace ends at a digit ("x =  1": transformers " ", " 1" -> Ġ Ġ 1; SmolLM2 "  ", "1" -> ĠĠ 1). For those
texts the entry also has "smollm_ids": transformers' own vocabulary and merges with SmolLM2's pre-tokenizer,
which is what edgellm must give.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests" / "data" / "smollm2_tokenizer_ids.json"

TEXTS = [
    "",
    "Hello, world!",
    "café, naïve, Ångström, façade, Straße",
    "日本語のテキスト",
    "中文分词测试",
    "emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵",
    "def add(a, b):\n    return a + b\n\n\tif x:\n\t\tpass\n",
    "1234567890 3.14159 2026-12-02 x=42",
    "word  two   spaces    four",
    "line\n\n\nbreaks\r\nand\ttabs\t\there",
    "x =  1\ty\t\t2\n\n3   4",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are SmolLM.<|im_end|>\n<|im_start|>assistant\n",
    "MiXeD CaSe, ALLCAPS and lowercase",
    'Punctuation!?... (brackets) [square] {curly} <angle> "quotes" — dashes – ellipsis…',
    "don't, I'LL, we've, they're, it's, 'quoted'",
    "   leading and trailing spaces   ",
    "URL https://example.com/path?q=1&r=2 and email a.b@example.org",
    "Mixed 日本 text with émojis 🎉 and numbers 12345",
    "\u00a0non-breaking\u2009thin\u200bzero-width",
]


def smollm_rules(backend: Tokenizer) -> Tokenizer:
    """The same vocabulary and merges, split the way SmolLM2 was trained (its tokenizer.json's pre-tokenizer)."""
    tok = Tokenizer.from_str(backend.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return tok


def main() -> None:
    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=GGUF_NAME)
    own = smollm_rules(tok.backend_tokenizer)
    cases = []
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        case = {
            "text": text,
            "ids": ids,
            "ids_no_special": tok(text, add_special_tokens=False)["input_ids"],
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        }
        smollm_ids = own.encode(text, add_special_tokens=False).ids
        if smollm_ids != case["ids_no_special"]:
            case["smollm_ids"] = smollm_ids
        cases.append(case)
    doc = {
        "source": f"transformers {__import__('transformers').__version__} AutoTokenizer(gguf_file={GGUF_NAME!r})",
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    differ = [c["text"] for c in cases if "smollm_ids" in c]
    print(f"wrote {OUT} ({len(cases)} texts; transformers differs from SmolLM2's own rules on {differ})")


if __name__ == "__main__":
    main()
