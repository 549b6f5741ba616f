#!/usr/bin/env python3
"""Write tests/data/chat_templates.json: chat templates rendered by transformers itself.

    HF_HUB_OFFLINE=1 PYTHONPATH=. /work/refvenv/bin/python tools/make_chat_reference.py

tests/test_chat_templates.py checks that edgellm renders every case to the same string, without
needing transformers. Rerun this after changing a template in edgellm/chat/templates.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import transformers

from edgellm.chat.templates import BUILTIN_TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

CONVERSATIONS = [
    [{"role": "user", "content": "Tell me a story."}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ],
    # surrounding spaces and newlines catch templates that strip() or trim content
    [
        {"role": "system", "content": "Réponds en français.\nSois bref."},
        {"role": "user", "content": "  Qu'est-ce que « naïf » ?\n日本語も  "},
        {"role": "assistant", "content": "Naïf veut dire… 🙂\nVoilà.\n"},
        {"role": "user", "content": "Merci !\n\n"},
    ],
]

# The special tokens each family's tokenizer really has, so the expected strings read naturally.
TOKENS = {"chatml": ("", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>")}
DEFAULT_TOKENS = ("<s>", "</s>")

# HuggingFaceH4/zephyr-7b-beta's template, copied verbatim: newlines between tags and loop.last.
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content']"
    " + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token"
    " }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# The helpers transformers adds to jinja: tojson (non-ASCII kept, indent), namespace, loop controls,
# and `tools` defaulting to none.
FEATURES = """{%- set ns = namespace(n=0) -%}
{%- for message in messages -%}
    {%- if message.role == 'system' %}{% continue %}{% endif -%}
    {%- set ns.n = ns.n + 1 -%}
    {{ ns.n }}. {{ message | tojson }}
{% if ns.n >= 2 %}{% break %}{% endif -%}
{%- endfor -%}
{%- if tools is not none %}tools: {{ tools | tojson(indent=2) }}
{% endif -%}
{%- if add_generation_prompt %}>>> {% endif -%}"""

EXTRA_CASES = {"features": [{"tools": [{"name": "clock", "description": "Heure exacte ⏰"}]}]}


def embedded_template(model_dir: Path) -> str | None:
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    template = cfg.get("chat_template")
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def templates() -> dict[str, str]:
    out = {**BUILTIN_TEMPLATES, "zephyr": ZEPHYR, "features": FEATURES}
    stories = SHARED / "models" / "stories260K"
    if (src := embedded_template(stories)) is not None:
        out["stories260K"] = src
    else:
        print(f"note: {stories} has no chat template")
    return out


def render(tok, source: str, bos: str, eos: str, conversation, add_generation_prompt: bool, extra: dict) -> str:
    # apply_chat_template hands the tokenizer's own special tokens to the template
    tok.bos_token, tok.eos_token = bos, eos
    return tok.apply_chat_template(
        conversation, chat_template=source, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )


def build() -> dict:
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(SHARED / "tokenizers" / "llama2" / "tokenizer.json"))
    out = {"transformers": transformers.__version__, "templates": {}}
    for name, source in templates().items():
        bos, eos = TOKENS.get(name, DEFAULT_TOKENS)
        cases = []
        for extra in [{}, *EXTRA_CASES.get(name, [])]:
            for conversation in CONVERSATIONS:
                for agp in (True, False):
                    cases.append(
                        {
                            "conversation": conversation,
                            "add_generation_prompt": agp,
                            "bos": bos,
                            "eos": eos,
                            "extra": extra,
                            "expected": render(tok, source, bos, eos, conversation, agp, extra),
                        }
                    )
        out["templates"][name] = {"source": source, "cases": cases}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "chat_templates.json")
    args = ap.parse_args()
    data = build()
    args.out.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n = sum(len(t["cases"]) for t in data["templates"].values())
    print(f"wrote {n} cases for {len(data['templates'])} templates to {args.out}")


if __name__ == "__main__":
    main()
