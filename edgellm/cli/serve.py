"""edgellm serve MODEL: an OpenAI-compatible HTTP server (the `server` extra: starlette + uvicorn)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .options import add_speculative_arguments
from .run import add_model_arguments, load_model

API_KEY_ENV = "EDGELLM_API_KEY"  # a key in the environment stays out of `ps` and the shell history

EPILOG = (
    "Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both also streamed as "
    "server-sent events), GET /health. One request runs at a time; up to --max-queue more wait, and one past "
    "that is refused with 429 and Retry-After. Sampling fields: temperature (default 1.0, as OpenAI's), top_p, "
    "max_tokens / max_completion_tokens, stop, seed, and edgellm's own top_k, min_p, repetition_penalty and "
    "speculative; an OpenAI feature it does not implement (n > 1, tools, logprobs, images...) is refused with 400."
)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (anything but loopback: use --api-key)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: a free one, printed at start)")
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require `Authorization: Bearer KEY` on every route but /health (default: ${API_KEY_ENV}, else none)",
    )
    p.add_argument("--max-queue", type=int, default=16, help="requests that may wait behind the running one")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=1024,
        help="max_tokens of a request that gives none (never more than the context leaves)",
    )
    p.add_argument(
        "--chat-template",
        default=None,
        help="built-in template (chatml, llama2, llama3, mistral, plain) or a jinja file, instead of "
        "the model's own (default: the model's, else plain)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="let web pages from ORIGIN call the server (repeatable; * for any) (default: none, CORS off)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="uvicorn's log level; info and debug also log every request",
    )
    add_speculative_arguments(p)  # --[no-]speculative: a request's default; --draft: a draft model
    p.epilog = EPILOG


def server_config(args):
    """The flags as a ServerConfig, checked (before the model loads)."""
    from ..server.config import ServerConfig

    return ServerConfig(
        model_name=Path(args.model).name,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        chat_template=args.chat_template,
        speculative=args.speculative,
        cors_origins=tuple(args.cors_origin or ()),
        log_level=args.log_level,
    )


def run(args) -> int:
    from ..server import require_extra

    require_extra()  # one error line naming the extra, before anything loads
    from ..server.process import bind, serve

    config = server_config(args)
    if config.exposed and not config.api_key:
        print(
            f"edgellm: warning: serving on {config.host} without --api-key: anyone who can reach this machine "
            "can use the model",
            file=sys.stderr,
            flush=True,
        )
    sock = bind(config.host, config.port)
    try:
        with load_model(args, draft=args.draft) as model:
            serve(model, sock, config)
    finally:
        sock.close()
    return 0
