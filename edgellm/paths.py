"""Where edgellm keeps files between runs: converted models, the demo model, chat history."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$EDGELLM_CACHE, else $XDG_CACHE_HOME/edgellm, else ~/.cache/edgellm."""
    env = os.environ.get("EDGELLM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgellm"
