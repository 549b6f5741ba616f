"""Issue 15: `edgellm serve`, driven as a real process on 127.0.0.1 with the official openai client.

Two servers start once for the module, both on stories260K (q4) with the chatml template: a fast one with an
API key, and a slow one (its layers stream from an emulated flash of 2 MB/s, ~0.2 s a token, --max-queue 1)
on which a request is reliably still running while the test cancels it, queues behind it or stops the server.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

KEY = "test-key-0123456789"
TEMPLATE = "chatml"  # stories260K has no chat template of its own
STARTED = re.compile(r"edgellm: serving \S+ at http://127\.0\.0\.1:(\d+)/v1")
ERROR = "edgellm: error: "
PROMPT = [{"role": "user", "content": "Tell me a story about a cat."}]


# -- a server process ------------------------------------------------------------------------------------------
class Server:
    """`edgellm serve MODEL --port 0 ARGS` in a subprocess; its stderr collected by a thread."""

    def __init__(self, model: Path, *args: str, env: dict):
        argv = [sys.executable, "-m", "edgellm.cli.main", "serve", str(model), "--port", "0", *args]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self.lines: list[str] = []
        self._port = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._port.wait(300):  # a cold numba cache compiles the kernels first
            self.proc.kill()
            raise AssertionError("the server did not start:\n" + self.stderr)
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace")
            self.lines.append(line)
            m = STARTED.search(line)
            if m:
                self.port = int(m.group(1))
                self._port.set()
        self._port.set()  # the process ended (before it started, if port is still 0)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def client(self, key: str | None = KEY, **kw):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=0, timeout=60, **kw)

    def health(self) -> dict:
        status, _, body = request(self, "GET", "/health")
        assert status == 200, body
        return body

    def wait_health(self, pred, timeout: float = 20.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            h = self.health()
            if pred(h) or time.monotonic() > end:
                return h
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def request(server: Server, method: str, path: str, body=None, key: str | None = KEY, headers=None, timeout=60):
    """(status, headers, parsed JSON body) of one raw HTTP request; `body` a dict, or bytes sent as they are."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    hdrs = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        raw = r.read()
        is_json = (r.getheader("content-type") or "").startswith("application/json")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(raw) if is_json else raw
    finally:
        conn.close()


def chat_body(**kw) -> dict:
    return {"model": "stories", "messages": PROMPT, "max_tokens": 8, "temperature": 0, **kw}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    e = dict(os.environ, EDGELLM_CACHE=str(tmp_path_factory.mktemp("cache")))
    e.pop("EDGELLM_API_KEY", None)
    return e


@pytest.fixture(scope="module")
def model(stories_ellm) -> Path:
    return stories_ellm["q4"]


@pytest.fixture(scope="module")
def fast(model, env) -> Iterator[Server]:
    s = Server(model, "--chat-template", TEMPLATE, "--api-key", KEY, env=env)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def slow_args(model, tmp_path_factory) -> list[str]:
    """Flags that make every token stream the layers from a 2 MB/s flash: ~0.2 s a token on stories260K."""
    import edgellm

    device = tmp_path_factory.mktemp("device") / "slow.toml"
    device.write_text('name = "test-slow"\ndescription = "2 MB/s flash"\nread_mb_s = 2.0\n')
    budget = edgellm.plan(model, ram_budget=1, context=256).minimum_budget  # everything that can stream does
    flags = ["--ram-budget", str(budget), "--device", str(device), "--context", "256", "--no-speculative"]
    return [*flags, "--chat-template", TEMPLATE]


@pytest.fixture(scope="module")
def slow(model, env, slow_args) -> Iterator[Server]:
    s = Server(model, *slow_args, "--max-queue", "1", env=env)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def direct(model):
    """The same model in this process, for answers to compare the server's with."""
    import edgellm

    with edgellm.load(model) as m:
        yield m


def start_stream(server: Server, max_tokens: int = 200):
    """A streamed chat whose first content chunk has arrived: it is running now. Returns (stream, chunk iterator)."""
    stream = server.client().chat.completions.create(
        model="x", messages=PROMPT, max_tokens=max_tokens, temperature=0, stream=True
    )
    it = iter(stream)
    first = next(it)
    assert first.choices[0].delta.role == "assistant"
    while not next(it).choices[0].delta.content:
        pass
    return stream, it


# -- the endpoints ------------------------------------------------------------------------------------------------
def test_models_and_health(fast, model):
    data = fast.client().models.list().data
    assert [m.id for m in data] == [model.name]
    assert fast.client().models.retrieve(model.name).id == model.name
    status, _, body = request(fast, "GET", "/health", key=None)  # open even with --api-key
    assert status == 200 and body["status"] == "ok" and body["running"] == 0


def test_chat_equals_model_chat(fast, direct):
    r = fast.client().chat.completions.create(model="anything", messages=PROMPT, max_tokens=24, temperature=0)
    want = direct.chat(PROMPT, max_tokens=24, temperature=0, chat_template=TEMPLATE)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content == want and want
    assert c.finish_reason == "length" and r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.usage.completion_tokens == 24 and r.usage.total_tokens == r.usage.prompt_tokens + 24
    assert r.model.endswith(".ellm")


def test_streamed_chat_in_openai_chunks(fast, direct):
    stream = fast.client().chat.completions.create(
        model="x", messages=PROMPT, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == direct.chat(PROMPT, max_tokens=24, temperature=0, chat_template=TEMPLATE)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert len({c.id for c in chunks}) == 1 and all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done_and_stops_at_a_stop_string(fast, direct):
    want = direct.chat(PROMPT, max_tokens=40, temperature=0, chat_template=TEMPLATE)
    stop = want[10:14]
    conn = http.client.HTTPConnection("127.0.0.1", fast.port, timeout=60)
    body = json.dumps(chat_body(max_tokens=40, stream=True, stop=[stop])).encode()
    conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    events = [e for e in r.read().decode().split("\n\n") if e]
    conn.close()
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == want[: want.index(stop)] and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_plain_streamed_and_token_ids(fast, direct):
    c = fast.client()
    want = direct.generate("Once upon a time", max_tokens=20, temperature=0)
    r = c.completions.create(model="x", prompt="Once upon a time", max_tokens=20, temperature=0)
    assert r.choices[0].text == want and r.object == "text_completion" and r.usage.prompt_tokens > 0
    parts = list(c.completions.create(model="x", prompt="Once upon a time", max_tokens=20, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == want and parts[-1].choices[0].finish_reason == "length"
    ids = direct.tokenizer.encode("Once upon a time")
    assert c.completions.create(model="x", prompt=ids, max_tokens=20, temperature=0).choices[0].text == want


def test_extra_fields_and_seeded_sampling(fast, direct):
    c = fast.client()
    extra = {"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.5, "speculative": False}
    kw = dict(model="x", messages=PROMPT, max_tokens=24, temperature=0.8, top_p=0.9, seed=7)
    a = c.chat.completions.create(**kw, extra_body=extra).choices[0].message.content
    assert a == c.chat.completions.create(**kw, extra_body=extra).choices[0].message.content  # the seed holds
    want = direct.chat(
        PROMPT, max_tokens=24, temperature=0.8, top_p=0.9, seed=7, chat_template=TEMPLATE, **extra
    )  # the extra fields reach the model: same answer as Model.chat with them
    assert a == want
    assert a != c.chat.completions.create(**kw).choices[0].message.content  # ...and they change it


def test_a_chat_that_extends_the_last_reuses_its_kv_cache(fast):
    c = fast.client()
    first = c.chat.completions.create(model="x", messages=PROMPT, max_tokens=16, temperature=0)
    convo = PROMPT + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And then?"},
    ]
    second = c.chat.completions.create(model="x", messages=convo, max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_harmless_default_fields_are_accepted(fast):
    r = fast.client().chat.completions.create(
        model="x",
        messages=[{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, *PROMPT],
        max_completion_tokens=4,
        n=1,
        frequency_penalty=0,
        presence_penalty=0,
        logit_bias={},
        user="someone",
        response_format={"type": "text"},
        logprobs=False,
    )
    assert r.usage.completion_tokens == 4


# -- refusals ------------------------------------------------------------------------------------------------------
def test_without_the_key_every_route_but_health_is_401(fast):
    with pytest.raises(openai.AuthenticationError):
        fast.client(key="wrong").chat.completions.create(model="x", messages=PROMPT, max_tokens=2)
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")):
        for key in (None, "wrong", KEY + "x", KEY[:-1]):
            status, headers, body = request(fast, method, path, chat_body(), key=key)
            assert status == 401 and body["error"]["code"] == "invalid_api_key", (path, key)
            assert headers["www-authenticate"] == "Bearer"
    assert (
        request(fast, "POST", "/v1/chat/completions", chat_body(), headers={"Authorization": "Basic " + KEY})[0] == 401
    )
    assert request(fast, "GET", "/health", key=None)[0] == 200


UNSUPPORTED = [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"audio": {"voice": "x"}}, "audio"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0]",
    ),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0].name"),
]
MALFORMED = [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"seed": -1}, "seed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_completion_tokens"),
    ({"stop": [1]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"speculative": "yes"}, "speculative"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": True, "bogus": 1}}, "stream_options.bogus"),
    ({"chat_template": "/etc/passwd"}, "chat_template"),  # a request never names a file
    ({"model_path": "/tmp/other.ellm"}, "model_path"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize("fields,param", UNSUPPORTED + MALFORMED, ids=[p for _, p in UNSUPPORTED + MALFORMED])
def test_bad_or_unsupported_fields_are_400_naming_the_field(fast, fields, param):
    status, _, body = request(fast, "POST", "/v1/chat/completions", chat_body(**fields))
    assert status == 400, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param and err["message"]
    assert (err["code"] == "unsupported_parameter") == ((fields, param) in UNSUPPORTED)


def test_the_openai_client_sees_a_bad_request_error(fast):
    with pytest.raises(openai.BadRequestError) as e:
        fast.client().chat.completions.create(model="x", messages=PROMPT, n=3)
    assert e.value.code == "unsupported_parameter" and e.value.param == "n"


@pytest.mark.parametrize(
    "path,fields,param",
    [
        ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
        ("/v1/completions", {"prompt": "a", "echo": True}, "echo"),
        ("/v1/completions", {"prompt": "a", "best_of": 3}, "best_of"),
        ("/v1/completions", {"prompt": "a", "suffix": "z"}, "suffix"),
        ("/v1/completions", {"prompt": [10**9]}, "prompt"),
        ("/v1/completions", {}, "prompt"),
        ("/v1/completions", {"prompt": "a", "messages": PROMPT}, "messages"),
    ],
)
def test_completions_refusals(fast, path, fields, param):
    status, _, body = request(fast, "POST", path, {"max_tokens": 4, **fields})
    assert status == 400 and body["error"]["param"] == param, body


def test_malformed_bodies_and_routes(fast):
    for raw in (b"{bad", b"[1, 2]", b'"text"', b"\xff\xfe", b""):
        status, _, body = request(fast, "POST", "/v1/chat/completions", raw)
        assert status == 400 and body["error"]["type"] == "invalid_request_error", raw
    status, _, body = request(fast, "GET", "/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _, body = request(fast, "GET", "/v1/chat/completions")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert request(fast, "GET", "/v1/models/other.ellm")[0] == 404


def test_a_body_over_the_limit_is_413(fast):
    big = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * (1 << 20)}])).encode()
    status, _, body = request(fast, "POST", "/v1/chat/completions", big)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    # without a Content-Length (chunked), counted while it arrives
    conn = http.client.HTTPConnection("127.0.0.1", fast.port, timeout=60)
    conn.request(
        "POST",
        "/v1/completions",
        iter([big[: len(big) // 2], big[len(big) // 2 :]]),
        {"Authorization": f"Bearer {KEY}"},
    )
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["code"] == "request_too_large"
    conn.close()


def test_max_tokens_is_bounded_by_the_context(fast, direct):
    n_prompt = fast.client().chat.completions.create(model="x", messages=PROMPT, max_tokens=1).usage.prompt_tokens
    room = direct.state.context - n_prompt
    status, _, body = request(fast, "POST", "/v1/chat/completions", chat_body(max_tokens=room + 1))
    assert (
        status == 400 and body["error"]["code"] == "context_length_exceeded" and str(room) in body["error"]["message"]
    )
    long_prompt = [{"role": "user", "content": "cat " * direct.state.context}]
    status, _, body = request(fast, "POST", "/v1/chat/completions", chat_body(messages=long_prompt))
    assert status == 400 and body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "messages"
    # no max_tokens: the reply may fill what the context leaves, and ends there
    r = fast.client().completions.create(model="x", prompt="Once upon a time", temperature=0)
    assert r.usage.total_tokens <= direct.state.context and r.choices[0].finish_reason in ("stop", "length")


# -- one at a time: queue, cancel, load ------------------------------------------------------------------------------
def test_a_disconnect_mid_stream_frees_the_model(slow):
    before = slow.health()
    stream, it = start_stream(slow)
    next(it)  # a second content chunk
    stream.close()  # the connection goes away with ~190 tokens (~40 s) still to generate
    h = slow.wait_health(lambda h: h["cancelled"] > before["cancelled"] and not h["running"])
    assert h["cancelled"] == before["cancelled"] + 1 and h["running"] == 0, h
    t0 = time.monotonic()
    r = slow.client().chat.completions.create(model="x", messages=PROMPT, max_tokens=2, temperature=0)
    assert r.usage.completion_tokens == 2 and time.monotonic() - t0 < 15  # not behind the cancelled one (~40 s)


def test_a_plain_request_whose_client_leaves_is_cancelled(slow):
    before = slow.health()
    sock = socket.create_connection(("127.0.0.1", slow.port))
    body = json.dumps(chat_body(max_tokens=200)).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    slow.wait_health(lambda h: h["running"])
    sock.close()
    h = slow.wait_health(lambda h: h["cancelled"] > before["cancelled"] and not h["running"])
    assert h["cancelled"] == before["cancelled"] + 1 and h["running"] == 0, h


def test_past_max_queue_is_429_with_retry_after(slow):
    stream, _ = start_stream(slow)  # running
    queued: list = []
    waiter = threading.Thread(
        target=lambda: queued.append(request(slow, "POST", "/v1/chat/completions", chat_body(max_tokens=2)))
    )
    waiter.start()
    assert slow.wait_health(lambda h: h["waiting"] == 1)["waiting"] == 1  # --max-queue 1: the queue is full
    with pytest.raises(openai.RateLimitError) as e:
        slow.client().chat.completions.create(model="x", messages=PROMPT, max_tokens=2)
    assert int(e.value.response.headers["retry-after"]) >= 1 and e.value.code == "queue_full"
    status, headers, body = request(slow, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 2})
    assert status == 429 and int(headers["retry-after"]) >= 1 and body["error"]["type"] == "rate_limit_error"
    stream.close()  # the running one goes; the queued one runs and answers
    waiter.join(60)
    assert queued and queued[0][0] == 200 and queued[0][2]["usage"]["completion_tokens"] == 2
    assert slow.health()["rejected"] >= 2


LOAD_REQUESTS = (
    [
        ("chat", {"messages": [{"role": "user", "content": f"Tell me a story about {w}."}], "max_tokens": 12 + 4 * i})
        for i, w in enumerate(["a cat", "a dog", "the sun", "a big red ball", "Lily", "a tree", "the sea"])
    ]
    + [("completion", {"prompt": p, "max_tokens": 20}) for p in ("Once upon a time", "The little bird", "Tom was sad")]
    + [
        ("chat", {"messages": PROMPT, "max_tokens": 30, "temperature": 0.9, "seed": 11}),  # seeded sampling
        ("completion", {"prompt": "One day", "max_tokens": 24, "temperature": 0.7, "top_p": 0.9, "seed": 3}),
        ("chat", {"messages": PROMPT, "max_tokens": 40, "stop": ["."]}),
    ]
)


def ask(client, kind: str, req: dict, stream: bool) -> str:
    kw = {"model": "x", "temperature": 0, **req}
    if kind == "chat":
        if not stream:
            return client.chat.completions.create(**kw).choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stream=True))
    if not stream:
        return client.completions.create(**kw).choices[0].text
    return "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))


def test_load_16_concurrent_clients_get_their_serial_answers(fast):
    serial = [ask(fast.client(), kind, req, stream=False) for kind, req in LOAD_REQUESTS]
    assert all(serial) and len(set(serial)) == len(serial)
    before = fast.health()
    results: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def client_thread(t: int) -> None:
        c = fast.client()
        try:
            for k in range(3):
                i = (t * 3 + k) % len(LOAD_REQUESTS)
                results[(t, k)] = ask(c, *LOAD_REQUESTS[i], stream=(t + k) % 2 == 0)
        except BaseException as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not errors, errors[:3]
    assert len(results) == 48
    for (t, k), text in results.items():
        assert text == serial[(t * 3 + k) % len(LOAD_REQUESTS)], (t, k)
    h = fast.health()
    assert h["completed"] == before["completed"] + 48 and h["failed"] == before["failed"] and h["rejected"] == 0


def test_draft_model_and_cors_when_asked_for(model, env, fast, direct):
    """--draft reaches edgellm.load (the same greedy answer, drafted); --cors-origin lets one origin in, and
    without it (the fast server) a response carries no CORS header."""
    origin = "http://app.example"
    s = Server(model, "--chat-template", TEMPLATE, "--draft", str(model), "--cors-origin", origin, env=env)
    try:
        r = s.client().chat.completions.create(model="x", messages=PROMPT, max_tokens=24, temperature=0)
        assert r.choices[0].message.content == direct.chat(PROMPT, max_tokens=24, temperature=0, chat_template=TEMPLATE)
        pre = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        status, headers, _ = request(s, "OPTIONS", "/v1/chat/completions", key=None, headers=pre)
        assert status == 200 and headers["access-control-allow-origin"] == origin
        status, headers, _ = request(
            s, "OPTIONS", "/v1/chat/completions", key=None, headers={**pre, "Origin": "http://evil.example"}
        )
        assert status == 400 and "access-control-allow-origin" not in headers
    finally:
        s.stop()
    status, headers, _ = request(fast, "GET", "/v1/models", headers={"Origin": origin})
    assert status == 200 and not any(h.startswith("access-control-") for h in headers)


# -- the process ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_cleanly_cancelling_what_runs(model, env, slow_args, sig):
    s = Server(model, *slow_args, env=env)
    try:
        stream, it = start_stream(s)
        queued: list = []
        waiter = threading.Thread(target=lambda: queued.append(request(s, "POST", "/v1/chat/completions", chat_body())))
        waiter.start()
        s.wait_health(lambda h: h["waiting"] == 1)
        t0 = time.monotonic()
        s.proc.send_signal(sig)
        with pytest.raises(openai.APIError, match="shutting down"):
            for _ in it:  # the running stream ends with an error event, not a silent cut
                pass
        waiter.join(30)
        rc = s.stop(timeout=30)
        assert rc == 0 and time.monotonic() - t0 < 15, s.stderr
        assert queued and queued[0][0] == 503 and queued[0][2]["error"]["code"] == "shutting_down"
        assert "Traceback" not in s.stderr and "edgellm: server stopped" in s.stderr, s.stderr
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgellm.cli.main", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def one_error(r: subprocess.CompletedProcess, match: str) -> None:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith(ERROR)]
    assert len(errors) == 1 and match in errors[0], r.stderr


def test_binding_beyond_loopback_without_a_key_warns(env, tmp_path):
    missing = str(tmp_path / "missing.ellm")  # the warning comes first; the bad path then ends the run
    r = cli("serve", missing, "--host", "0.0.0.0", "--port", "0", env=env)
    assert any(ln.startswith("edgellm: warning: serving on 0.0.0.0 without --api-key") for ln in r.stderr.splitlines())
    one_error(r, "no such file")
    r = cli("serve", missing, "--host", "0.0.0.0", "--port", "0", "--api-key", "k", env=env)
    assert "warning" not in r.stderr
    r = cli("serve", missing, "--port", "0", env=env)
    assert "warning" not in r.stderr


def test_user_errors_are_one_line(model, env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        one_error(cli("serve", str(model), "--port", str(taken.getsockname()[1]), env=env), "in use")
    one_error(cli("serve", str(model), "--max-queue", "-1", env=env), "--max-queue")
    one_error(cli("serve", str(model), "--port", "70000", env=env), "--port")
    one_error(cli("serve", str(model), "--api-key", " ", env=env), "--api-key")
    one_error(cli("serve", str(model), "--host", "no-such-host.invalid", env=env), "no-such-host.invalid")
    one_error(cli("serve", str(model), "--port", "0", "--chat-template", "/nonexistent.jinja", env=env), "nonexistent")


def test_without_the_extra_serve_says_how_to_install_it(model, env):
    code = "import sys; sys.modules['uvicorn'] = None; from edgellm.cli.main import main; sys.exit(main())"
    r = subprocess.run(
        [sys.executable, "-c", code, "serve", str(model)], capture_output=True, text=True, env=env, timeout=120
    )
    one_error(r, 'the server needs its extra: pip install "edgellm[server]"')
    assert r.stderr.strip() == 'edgellm: error: the server needs its extra: pip install "edgellm[server]"'
