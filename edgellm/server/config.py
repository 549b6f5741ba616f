"""What `edgellm serve` was started with: one dataclass the process, the app and the jobs read."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import InvalidArgumentError

MAX_BODY_BYTES = 1 << 20  # a request body past this is refused with 413 (a 1 MiB prompt is ~250k tokens)
DEFAULT_MAX_TOKENS = 1024  # a request's max_tokens when it gives none (at most what the context leaves)


@dataclass(frozen=True)
class ServerConfig:
    model_name: str  # what /v1/models lists and every response names
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None  # None: no authentication (then only loopback is safe)
    max_queue: int = 16  # requests waiting behind the running one; one more is refused with 429
    max_tokens: int = DEFAULT_MAX_TOKENS
    chat_template: str | None = None  # a built-in name or a file, instead of the model's own
    speculative: bool | None = None  # a request's default for the `speculative` field
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers, so browsers keep other sites out
    max_body_bytes: int = MAX_BODY_BYTES
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"--port must be between 0 and 65535, got {self.port}")
        if self.max_queue < 0:
            raise InvalidArgumentError(f"--max-queue must be >= 0, got {self.max_queue}")
        if self.max_tokens < 1:
            raise InvalidArgumentError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidArgumentError("--api-key is empty: give a key, or leave the option out")

    @property
    def exposed(self) -> bool:
        """True when the server listens beyond this machine (anything but a loopback address)."""
        return not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
