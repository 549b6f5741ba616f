"""edgellm verify FILE"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("file", help=".ellm file")


def run(args) -> int:
    from pathlib import Path

    from ..errors import EdgeLLMError
    from ..format import EllmFile

    if Path(args.file).suffix.lower() == ".gguf":
        raise EdgeLLMError(f"{args.file}: verify checks .ellm files; import a GGUF with edgellm convert first")
    with EllmFile(args.file) as f:
        f.verify()
        n = sum(len(e.chunks) for e in f.entries)
    print(f"{args.file}: OK ({len(f.entries)} tensors, {n} chunks, all checksums match)")
    return 0
