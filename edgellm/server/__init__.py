"""`edgellm serve`: an OpenAI-compatible HTTP server for one model, safe by default.

Request flow, one module per step:

    process.py  the socket, uvicorn and the signals (Ctrl-C / SIGTERM: stop accepting, cancel what runs, exit 0)
    app.py      starlette routes, the API-key and body-size middleware, OpenAI error bodies
    schema.py   a JSON body -> a checked ChatRequest / CompletionRequest; anything unsupported -> RequestError
    jobs.py     a checked request -> the Model's stream: prompt tokens counted, max_tokens bounded by the context
    worker.py   the one thread that runs the model: a bounded queue, one job at a time, cancellation per token
    sse.py      OpenAI's response objects and their server-sent-event framing

Only process.py and app.py import starlette / uvicorn (the `server` extra), so the core install stays light.
"""

from __future__ import annotations

from ..errors import MissingExtraError

EXTRA_MISSING = 'the server needs its extra: pip install "edgellm[server]"'


def require_extra() -> None:
    """Raise MissingExtraError unless starlette and uvicorn can be imported."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtraError(EXTRA_MISSING) from None
