#!/usr/bin/env python3
"""What `edgellm serve` adds: time to first token and tokens/s through the server against Model.chat, one run.

    python tools/bench_server.py MODEL [--clients 16] [--requests 2] [--max-tokens 48] [--ram-budget X]
        [--context N] [--threads N] [--chat-template NAME] [--client raw|openai] [--json out.json]

Three phases on the same greedy chat prompts: Model.chat(stream=True) in this process, one request after the
other; then `edgellm serve MODEL` as a child process, driven by the openai client, first by one client (one
request at a time: the server's own overhead), then by --clients concurrent clients, each sending --requests
(the load: a request's time to first token includes its wait in the queue). Each phase starts with WARMUP
unmeasured requests (kernels, thread tuning). Time to first token is measured where the caller sees it (the
first non-empty text); decode tok/s per request is (tokens - 1) / (last - first token); aggregate tok/s is
all completion tokens / the phase's wall time. Ratios are against the direct phase. Every server answer must
equal the direct answer to the same prompt (greedy), or the run says which did not.

The clients share the machine with the server: `--client raw` (the default) reads the event stream with
http.client and json, which costs next to nothing, so the figures are the server's; `--client openai` uses the
official client, whose per-chunk parsing (pydantic objects) takes CPU time the model's threads then lack on a
small machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

PROMPTS = [
    "Name the capital of France.",
    "Give me three tips for sleeping well.",
    "What is a prime number?",
    "Write a haiku about the sea.",
    "Explain what a CPU does in two sentences.",
    "Why is the sky blue?",
    "List four fruits that are red.",
    "What does a compiler do?",
]
WARMUP = 3  # unmeasured requests first: kernels load, and the decode thread count settles (ThreadTuner)
STARTED = re.compile(r" at (http://127\.0\.0\.1:\d+)/v1")


@dataclass
class Sample:
    prompt: int
    ttft_s: float
    decode_tps: float
    tokens: int
    text: str


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


# -- the phases -------------------------------------------------------------------------------------------------
def direct(a) -> tuple[list[Sample], float]:
    import edgellm

    samples = []
    with edgellm.load(a.model, ram_budget=a.ram_budget, context=a.context, threads=a.threads) as m:
        kw = dict(max_tokens=a.max_tokens, temperature=0, chat_template=a.chat_template)
        for i in range(WARMUP):
            m.chat(messages(i), **kw)
        t0 = time.perf_counter()
        for i in range(len(PROMPTS)):
            start, times, parts, last = time.perf_counter(), [], [], None
            for c in m.chat(messages(i), stream=True, **kw):
                if c.text:
                    times.append(time.perf_counter())
                    parts.append(c.text)
                last = c
            assert last is not None and last.stats is not None
            samples.append(_sample(i, start, times, last.stats.generated_tokens, "".join(parts)))
        wall = time.perf_counter() - t0
    return samples, wall


def _sample(i: int, start: float, times: list[float], tokens: int, text: str) -> Sample:
    ttft = times[0] - start if times else 0.0
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return Sample(i % len(PROMPTS), ttft, (tokens - 1) / span if span else 0.0, tokens, text)


def ask_raw(url: str, i: int, a) -> Sample:
    """One streamed chat read with http.client: the server's cost, hardly any of the client's."""
    host, port = url.removeprefix("http://").split(":")
    body = {
        "model": "bench",
        "messages": messages(i),
        "max_tokens": a.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start, times, parts, tokens = time.perf_counter(), [], [], 0
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        obj = json.loads(line[6:])
        if obj["choices"] and obj["choices"][0]["delta"].get("content"):
            times.append(time.perf_counter())
            parts.append(obj["choices"][0]["delta"]["content"])
        if obj.get("usage"):
            tokens = obj["usage"]["completion_tokens"]
    conn.close()
    return _sample(i, start, times, tokens, "".join(parts))


def ask(client, i: int, a) -> Sample:
    start, times, parts, tokens = time.perf_counter(), [], [], 0
    stream = client.chat.completions.create(
        model="bench",
        messages=messages(i),
        max_tokens=a.max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return _sample(i, start, times, tokens, "".join(parts))


def through_server(url: str, a, clients: int, per_client: int) -> tuple[list[Sample], float]:
    import openai

    def client():
        return openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)

    def one(cl, i: int) -> Sample:
        return ask(cl, i, a) if a.client == "openai" else ask_raw(url, i, a)

    for i in range(WARMUP):
        one(client(), i)
    samples: list[Sample] = []
    errors: list[BaseException] = []

    def run(c: int) -> None:
        cl = client()
        try:
            for k in range(per_client):
                samples.append(one(cl, c * per_client + k))
        except BaseException as e:  # reported after the phase
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return samples, wall


def start_server(a) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-m", "edgellm.cli.main", "serve", a.model, "--port", "0", "--max-queue", str(a.clients)]
    for flag, value in (
        ("--ram-budget", a.ram_budget),
        ("--context", a.context),
        ("--threads", a.threads),
        ("--chat-template", a.chat_template),
    ):
        if value is not None:
            argv += [flag, str(value)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        m = STARTED.search(line)
        if m:
            threading.Thread(target=lambda: [sys.stderr.write(x) for x in proc.stderr or ()], daemon=True).start()
            return proc, m.group(1)
    raise SystemExit(f"edgellm serve exited ({proc.wait()}) before it started")


# -- the report --------------------------------------------------------------------------------------------------
def summary(samples: list[Sample], wall: float) -> dict:
    ttft = [s.ttft_s for s in samples]
    return {
        "requests": len(samples),
        "ttft_ms_mean": 1e3 * statistics.mean(ttft),
        "ttft_ms_median": 1e3 * statistics.median(ttft),
        "ttft_ms_max": 1e3 * max(ttft),
        "decode_tps_mean": statistics.mean(s.decode_tps for s in samples),
        "aggregate_tps": sum(s.tokens for s in samples) / wall,
        "wall_s": wall,
    }


def report(rows: dict[str, dict]) -> None:
    base = rows["Model.chat (direct)"]
    head = f"{'':<26}{'req':>5}{'TTFT ms mean':>14}{'median':>8}{'max':>8}{'decode tok/s':>14}{'aggregate':>11}"
    print(head + f"{'TTFT x':>9}{'decode x':>10}{'aggr x':>8}")
    for name, r in rows.items():
        print(
            f"{name:<26}{r['requests']:>5}{r['ttft_ms_mean']:>14.1f}{r['ttft_ms_median']:>8.1f}{r['ttft_ms_max']:>8.1f}"
            f"{r['decode_tps_mean']:>14.1f}{r['aggregate_tps']:>11.1f}"
            f"{r['ttft_ms_mean'] / base['ttft_ms_mean']:>9.2f}{r['decode_tps_mean'] / base['decode_tps_mean']:>10.2f}"
            f"{r['aggregate_tps'] / base['aggregate_tps']:>8.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--ram-budget", default=None)
    p.add_argument("--context", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--chat-template", default=None)
    p.add_argument("--client", choices=("raw", "openai"), default="raw", help="how the clients read the stream")
    p.add_argument("--json", default=None, help="write the figures and every sample here")
    a = p.parse_args()

    rows, raw = {}, {}
    samples, wall = direct(a)
    answers = {s.prompt: s.text for s in samples}
    rows["Model.chat (direct)"], raw["direct"] = summary(samples, wall), samples
    proc, url = start_server(a)
    try:
        samples, wall = through_server(url, a, 1, len(PROMPTS))
        rows["server, 1 client"], raw["server_1"] = summary(samples, wall), samples
        samples, wall = through_server(url, a, a.clients, a.requests)
        rows[f"server, {a.clients} clients"], raw["server_n"] = summary(samples, wall), samples
    finally:
        proc.terminate()
        proc.wait(60)
    report(rows)
    differ = [(name, s.prompt) for name in ("server_1", "server_n") for s in raw[name] if s.text != answers[s.prompt]]
    print("every server answer equals Model.chat's" if not differ else f"answers that differ: {differ}")
    if a.json:
        out = {"rows": rows, "samples": {k: [asdict(s) for s in v] for k, v in raw.items()}, "differ": differ}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
