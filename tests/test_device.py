"""Device profiles load on every supported Python (3.10 has no tomllib: the tomli package stands in)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgellm.runtime.device import list_devices, load_device


def test_every_profile_loads():
    for name in list_devices():
        d = load_device(name)
        assert d.name == name and d.cpu_scale > 0


def test_profiles_load_without_tomllib():
    """What Python 3.10 sees: importing tomllib fails, so device.py must fall back to tomli."""
    pytest.importorskip("tomli")
    code = (
        "import sys; sys.modules['tomllib'] = None\n"  # `import tomllib` now raises ImportError
        "from edgellm.runtime import device\n"
        "assert device.tomllib.__name__ == 'tomli', device.tomllib\n"
        "print(device.load_device('rpi5-nvme').read_mb_s)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == load_device("rpi5-nvme").read_mb_s
