"""The starlette application: routes, the API-key and body-size middleware, OpenAI error bodies.

Routes: GET /health (open even with --api-key: for probes), GET /v1/models, GET /v1/models/{id},
POST /v1/chat/completions, POST /v1/completions. Each generation route checks its body (schema.py), prepares
the model's stream off the event loop (jobs.py), queues it (worker.py), then answers as one JSON object or as
server-sent events (sse.py). A client that goes away cancels its job: a streamed one when starlette notices
the disconnect (it cancels the event generator), a plain one through a task that waits for http.disconnect.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import EdgeLLMError
from ..generate.stream import Chunk
from .config import ServerConfig
from .jobs import Jobs, Prepared
from .schema import RequestError, error_body, parse_chat, parse_completion, parse_json
from .sse import DONE, PING, Response, event
from .worker import DISCONNECTED, SHUTDOWN, End, Job, QueueFull, ShuttingDown, Worker

OPEN_PATHS = ("/health",)  # answered without the API key
PING_SECONDS = 15.0  # a streamed request waiting in the queue gets an SSE comment this often


def build_app(jobs: Jobs, worker: Worker, config: ServerConfig) -> Starlette:
    api = Api(jobs, worker, config)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", api.model, methods=["GET"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
    ]
    middleware = []
    if config.cors_origins:  # outermost: a browser's preflight OPTIONS carries no key
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    middleware += [
        Middleware(ApiKey, key=config.api_key),
        Middleware(BodyLimit, limit=config.max_body_bytes),
    ]
    handlers = {RequestError: _request_error, HTTPException: _http_error, Exception: _internal_error}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


class Api:
    def __init__(self, jobs: Jobs, worker: Worker, config: ServerConfig):
        self.jobs, self.worker, self.config = jobs, worker, config

    # -- information -----------------------------------------------------------------------------------------
    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **self.worker.status()})

    def _card(self) -> dict:
        path = Path(self.jobs.model.file.path)
        created = int(path.stat().st_mtime) if path.exists() else 0
        return {
            "id": self.config.model_name,
            "object": "model",
            "created": created,
            "owned_by": "edgellm",
            "context_length": self.jobs.context,
        }

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [self._card()]})

    async def model(self, request: Request) -> JSONResponse:
        if request.path_params["model_id"] != self.config.model_name:
            raise RequestError(404, f"no model {request.path_params['model_id']!r} here", code="model_not_found")
        return JSONResponse(self._card())

    # -- generation ----------------------------------------------------------------------------------------------
    async def chat(self, request: Request):
        req = parse_chat(parse_json(await request.body()))
        prepared = await run_in_threadpool(self.jobs.chat, req)
        response = Response(self.config.model_name, "chatcmpl", req.include_usage)
        return await self._answer(request, prepared, response, req.stream, chat=True)

    async def completions(self, request: Request):
        req = parse_completion(parse_json(await request.body()))
        prepared = await run_in_threadpool(self.jobs.completion, req)
        response = Response(self.config.model_name, "cmpl", req.include_usage)
        return await self._answer(request, prepared, response, req.stream, chat=False)

    async def _answer(self, request: Request, prepared: Prepared, response: Response, stream: bool, chat: bool):
        job = Job(prepared.chunks, asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except QueueFull as e:
            raise RequestError(
                429,
                f"{self.worker.max_queue} requests are already waiting for the model; retry later",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(e.retry_after)},
            ) from None
        except ShuttingDown:
            raise _shutting_down() from None
        if stream:
            return EventStream(self._events(job, response, chat), job, self.worker)
        text, finish, stats = await self._collect(request, job)
        body = response.chat(text, finish, stats) if chat else response.completion(text, finish, stats)
        return JSONResponse(body)

    async def _collect(self, request: Request, job: Job):
        """A plain response's text, finish reason and stats; a disconnect meanwhile cancels the job."""
        watcher = asyncio.create_task(_on_disconnect(request, lambda: self.worker.cancel(job, DISCONNECTED)))
        parts: list[str] = []
        last: Chunk | None = None
        end = End()
        try:
            async for item in job.items():
                if isinstance(item, Chunk):
                    parts.append(item.text)
                    last = item
                else:
                    end = item
        finally:
            watcher.cancel()
            self.worker.cancel(job, DISCONNECTED)  # this task was cancelled: stop the model too (no-op once ended)
        _raise_for(end)
        assert last is not None and last.finish_reason is not None  # a job that ended well had its last chunk
        return "".join(parts), last.finish_reason, last.stats

    async def _events(self, job: Job, response: Response, chat: bool) -> AsyncIterator[bytes]:
        """The streamed response; starlette cancels it (and so the job) when the client disconnects. The chunks
        that arrived together go out in one write: a client or loop that fell behind catches up at once."""
        try:
            if chat:
                yield response.chat_chunk({"role": "assistant", "content": ""})
            last: Chunk | None = None  # the chunk with the finish reason
            async for items in job.batches(PING_SECONDS):
                if items is None:
                    yield PING
                    continue
                out = []
                for item in items:
                    if isinstance(item, Chunk):
                        if item.text:
                            out.append(
                                response.chat_chunk({"content": item.text})
                                if chat
                                else response.completion_chunk(item.text)
                            )
                        last = item if item.finish_reason else last
                    else:
                        out += _closing(item, last, response, chat)
                yield b"".join(out)
        finally:
            self.worker.cancel(job, DISCONNECTED)


def _closing(end: End, last: Chunk | None, response: Response, chat: bool) -> list[bytes]:
    """A stream's last events: the finish chunk, the usage if asked, [DONE]; or the error that cut it short."""
    if end.cancelled or end.error is not None or last is None:
        return [event(_failure(end).body())]  # the openai client raises it as an APIError
    finish = last.finish_reason
    out = [response.chat_chunk({}, finish) if chat else response.completion_chunk("", finish)]
    if response.include_usage:
        out.append(response.usage_chunk("chat.completion.chunk" if chat else "text_completion", last.stats))
    return out + [DONE]


class EventStream(StreamingResponse):
    """text/event-stream whose job is cancelled however the response ends, even if the client went away
    before its generator first ran (then starlette never starts it, so its `finally` would not run)."""

    def __init__(self, events: AsyncIterator[bytes], job: Job, worker: Worker):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.job, self.worker = job, worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.worker.cancel(self.job, DISCONNECTED)


async def _on_disconnect(request: Request, gone) -> None:
    """Call gone() when the client disconnects (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone()
            return


def _shutting_down() -> RequestError:
    return RequestError(503, "the server is shutting down", type="server_error", code="shutting_down")


def _failure(end: End) -> RequestError:
    """What a job that did not finish tells its client."""
    if end.cancelled == SHUTDOWN:
        return _shutting_down()
    if end.cancelled:
        return RequestError(499, "the request was cancelled: the client disconnected", code="cancelled")
    e = end.error
    if isinstance(e, EdgeLLMError):  # e.g. a damaged chunk of the model file: the server's problem, said plainly
        return RequestError(500, str(e), type="server_error")
    if e is not None:
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    return RequestError(
        500, f"internal error ({type(e).__name__}); the server log has the details", type="server_error"
    )


def _raise_for(end: End) -> None:
    if end.cancelled or end.error is not None:
        raise _failure(end)


# -- middleware ---------------------------------------------------------------------------------------------------
class ApiKey:
    """With a key, every route but OPEN_PATHS needs `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str | None):
        self.app = app
        self.key = key.encode() if key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = error_body(
            "a valid API key is needed: send the header Authorization: Bearer KEY", code="invalid_api_key"
        )
        await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        assert self.key is not None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        # compare_digest on equal-length inputs runs in constant time; on others it is false anyway
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413: by its Content-Length at once, else while it arrives."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        try:
            too_big = length is not None and int(length) > self.limit
        except ValueError:
            await JSONResponse(error_body("the Content-Length header is not a number"), 400)(scope, receive, send)
            return
        if too_big:
            await JSONResponse(self._error().body(), 413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._error()  # inside the route's body read: answered by _request_error
            return message

        await self.app(scope, limited, send)

    def _error(self) -> RequestError:
        return RequestError(413, f"the request body is over {self.limit} bytes", code="request_too_large")


# -- error bodies ----------------------------------------------------------------------------------------------------
async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(error_body(message, code=code), exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # starlette logs the traceback after this answer: an exception here is a bug
    body = error_body(f"internal error ({type(exc).__name__}); the server log has the details", type="server_error")
    return JSONResponse(body, 500)
