"""The front door: what a user may name as MODEL, turned into the .ellm file the runtime opens.

    .ellm file              used as it is
    Hugging Face directory  converted once into the cache directory (keyed by its files), then reused
    .gguf file              imported once into the cache in the same way (--quant auto unless told)

The cached conversion is atomic (the writer renames a finished temporary file) and one process at a time
converts a given entry (a lock file beside it), so two commands started together convert once and both
use the result.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from .errors import EdgeLLMError
from .paths import cache_dir

DEFAULT_QUANT = "q4"  # for a Hugging Face directory
GGUF_QUANT = "auto"  # for a GGUF file: keep its types where ours hold them exactly


def resolve_model(src, quant: str | None = None, log=None) -> Path:
    """The .ellm path for `src` (an .ellm file, or a Hugging Face directory or GGUF file converted on first use
    to `quant`: default q4 for a directory, auto for GGUF). `log(message)` hears about a conversion (default:
    a line on stderr)."""
    if quant is not None:
        _check_quant(quant)
    path = Path(src)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EdgeLLMError(f"{path}: not a Hugging Face model directory (no config.json)")
        return _cached_conversion(path, quant or DEFAULT_QUANT, log or _stderr)
    if path.suffix.lower() == ".gguf" and path.is_file():
        return _cached_conversion(path, quant or GGUF_QUANT, log or _stderr)
    if path.suffix.lower() in (".safetensors", ".bin", ".pt", ".pth") and path.is_file():
        raise EdgeLLMError(
            f"{src}: a weights file alone cannot be run; give its Hugging Face model directory "
            f"(config.json, tokenizer.json and the weights) or an .ellm file"
        )
    if not path.exists():
        raise EdgeLLMError(f"{src}: no such file or directory")
    return path  # EllmFile checks that it is one, with a precise message


def cache_entry(path: Path, quant: str) -> Path:
    """Where the conversion of `path` (a directory or a file) to `quant` is cached. The key covers every
    file's name, size and mtime, so an edited checkpoint is converted again."""
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_dir() / "models" / f"{path.resolve().name}-{quant}-{h.hexdigest()[:12]}.ellm"


def _cached_conversion(path: Path, quant: str, log) -> Path:
    out = cache_entry(path, quant)
    if out.is_file():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeLLMError(
            f"{out.parent}: cannot create the cache directory ({e.strerror}); set EDGELLM_CACHE to a writable directory"
        ) from None
    with _Lock(out.with_name(out.name + ".lock")):
        if out.is_file():  # another process converted it while this one waited
            return out
        from .converter.converter import convert

        log(f"converting {path} to {quant} (once; cached in {out})")
        convert(path, out, quant=quant)
    return out


def _check_quant(quant: str) -> None:
    from .errors import InvalidArgumentError
    from .quant import QUANT_CHOICES

    if quant not in QUANT_CHOICES:
        raise InvalidArgumentError(f"quant (--quant) must be one of {', '.join(QUANT_CHOICES)}, got {quant!r}")


class _Lock:
    """An exclusive advisory lock on a file (flock); where flock is unavailable, no lock: the atomic rename
    still keeps the entry whole, two processes may just both convert."""

    def __init__(self, path: Path):
        self.path, self.fh = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()  # closing releases the lock; the lock file stays (removing it races)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
