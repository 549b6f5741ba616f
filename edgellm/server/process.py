"""The server process: its socket, uvicorn, and how it stops.

The socket is bound before the model loads (a port in use is one error line, not a wait for the model) and
listens only once the model is ready, so a client polling /health is refused until it can be served.
Ctrl-C or SIGTERM: uvicorn stops accepting, the worker cancels the waiting requests and the running one at its
next token (each told "the server is shutting down"), the open responses end, and the process exits 0; a
second signal skips the wait. uvicorn's own handling would re-raise the signal once done, ending a clean stop
as "interrupted" (130) or death by SIGTERM: a server stopped on request has done its job.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import sys
import threading
from collections.abc import Iterator

import uvicorn

from ..errors import EdgeLLMError
from .app import build_app
from .config import ServerConfig
from .jobs import Jobs
from .worker import Worker

GRACE_SECONDS = 10.0  # longest wait for open responses after a stop: they end within a token once cancelled
JOIN_SECONDS = 30.0  # longest wait for the worker's last token (a streamed layer on slow flash takes a while)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not listening yet); EdgeLLMError naming the problem if it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise EdgeLLMError(f"cannot serve on {host!r}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise EdgeLLMError(f"port {port} on {host} is in use: stop what holds it or choose --port") from None
        raise EdgeLLMError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn's server, stopping the worker first and exiting without re-raising the signal."""

    def __init__(self, config: uvicorn.Config, worker: Worker):
        super().__init__(config)
        self.worker = worker

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets=None) -> None:
        self.worker.stop()  # on the event loop, not in the signal handler: the worker's lock is never re-entered
        await super().shutdown(sockets=sockets)


def serve(model, sock: socket.socket, config: ServerConfig) -> None:
    """Serve `model` on the bound `sock` until Ctrl-C or SIGTERM."""
    worker = Worker(config.max_queue)
    jobs = Jobs(model, config)
    app = build_app(jobs, worker, config)
    uv = uvicorn.Config(
        app,
        log_level=config.log_level,
        access_log=config.log_level in ("info", "debug"),
        lifespan="off",
        timeout_graceful_shutdown=int(GRACE_SECONDS),
        server_header=False,
    )
    server = Server(uv, worker)
    worker.start()
    sock.listen(128)
    where = url(sock)
    auth = ", API key required" if config.api_key else ""
    print(f"edgellm: serving {config.model_name} at {where}/v1{auth} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        worker.stop()
        worker.join(JOIN_SECONDS)
    print("edgellm: server stopped", file=sys.stderr, flush=True)
