#!/usr/bin/env python3
"""Chat benchmark (issue: offline chat): time to first token per turn of a growing conversation.

    python tools/bench_chat.py MODEL.ellm [--ram-budget 50%] [--turns 10] [--reply-tokens 24] [--context 1024]

With KV-cache reuse each turn prefills only its new tokens, so time to first token must stay flat as the
history grows. The last line repeats the final turn with the cache cleared: what the turn would cost without
reuse.
"""

from __future__ import annotations

import argparse
import os

import edgellm
from edgellm.bench.bench import budget_bytes

QUESTIONS = [
    "Tell me about the sea.",
    "What do fish eat?",
    "Why is the sky blue?",
    "Name three colours.",
    "How tall can trees grow?",
    "What is a comet?",
    "Describe a quiet morning.",
    "Who builds bridges?",
    "What makes bread rise?",
    "Say something kind.",
    "What is the moon made of?",
    "How do birds fly?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ram-budget", default="50%")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--reply-tokens", type=int, default=24)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    budget = budget_bytes(a.ram_budget, os.path.getsize(a.model))
    with edgellm.load(a.model, ram_budget=budget, context=a.context, device=a.device) as m:
        print(
            f"{a.model}: budget {budget / 1e6:,.0f} MB, {len(m.plan.streamed)} of "
            f"{len(m.plan.streamed) + len(m.plan.pinned)} units streamed, context {a.context}"
        )
        print(f"{'turn':>4} {'history tok':>11} {'cached':>7} {'prefilled':>9} {'TTFT ms':>8} {'decode tok/s':>12}")
        msgs = [{"role": "system", "content": "You are a helpful assistant."}]
        for t in range(a.turns):
            msgs.append({"role": "user", "content": QUESTIONS[t % len(QUESTIONS)]})
            chunks = list(m.chat(msgs, stream=True, max_tokens=a.reply_tokens, temperature=0.0))
            st = chunks[-1].stats
            msgs.append({"role": "assistant", "content": "".join(c.text for c in chunks)})
            print(
                f"{t + 1:>4} {st.prompt_tokens:>11} {st.cached_tokens:>7} {st.prompt_tokens - st.cached_tokens:>9} "
                f"{st.ttft_seconds * 1e3:>8.0f} {st.decode_tps:>12.2f}"
            )
        m.session.ids = []
        msgs.pop()
        st = list(m.chat(msgs, stream=True, max_tokens=2, temperature=0.0))[-1].stats
        print(
            f"turn {a.turns} again with the cache cleared: {st.prompt_tokens} tokens prefilled, "
            f"TTFT {st.ttft_seconds * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
