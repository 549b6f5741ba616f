"""edgellm verify FILE"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("file", help=".ellm file")


def run(args) -> int:
    from pathlib import Path

    from ..format import EllmFile
    from ..source import refuse_unsupported

    refuse_unsupported(Path(args.file))
    with EllmFile(args.file) as f:
        f.verify()
        n = sum(len(e.chunks) for e in f.entries)
    print(f"{args.file}: OK ({len(f.entries)} tensors, {n} chunks, all checksums match)")
    return 0
