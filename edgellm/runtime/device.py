"""Device profiles (devices/*.toml): the flash, memory and CPU of a target board, to plan for and emulate;
Throttle: the emulation of a profile's flash."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgeLLMError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

DEVICES_DIR = Path(__file__).parent / "devices"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str = ""
    read_mb_s: float = 0.0  # sequential read bandwidth; 0 = unthrottled
    read_latency_us: float = 0.0  # per read request
    ram_mb: int = 0
    cores: int = 0
    mem_bw_gb_s: float = 0.0
    cpu_scale: float = 1.0  # one core of the device vs one core of the reference x86 host
    sources: dict = field(default_factory=dict, compare=False)

    @property
    def throttled(self) -> bool:
        return self.read_mb_s > 0


def list_devices() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.toml"))


def load_device(name_or_path) -> DeviceProfile:
    """A profile by name (`rpi5-nvme`) or by the path of a TOML file."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    p = Path(str(name_or_path))
    if p.suffix != ".toml":
        p = DEVICES_DIR / f"{name_or_path}.toml"
    if not p.is_file():
        raise EdgeLLMError(
            f"unknown device {name_or_path!r}; known: {', '.join(list_devices())} (or the path of a .toml profile)"
        )
    try:
        d = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EdgeLLMError(f"{p}: cannot read the device profile: {e}") from None
    known = set(DeviceProfile.__dataclass_fields__)
    return DeviceProfile(**{k: v for k, v in d.items() if k in known})


class Throttle:
    """Emulates a slower flash device: each request costs latency + bytes / bandwidth of device time."""

    def __init__(self, read_mb_s: float | None, latency_us: float | None):
        self.bw = (read_mb_s or 0) * 1e6
        self.latency = (latency_us or 0) / 1e6
        self.busy_until = 0.0

    @classmethod
    def of(cls, device: DeviceProfile | None) -> Throttle:
        """The throttle a profile's flash needs (None, or an unthrottled profile: no waiting)."""
        return cls(device.read_mb_s, device.read_latency_us) if device is not None else cls(None, None)

    def wait(self, nbytes: int, started: float) -> None:
        """Sleep until a request of `nbytes` issued at `started` would have finished on the device."""
        if not self.bw:
            return
        start = max(started, self.busy_until)
        self.busy_until = start + self.latency + nbytes / self.bw
        delay = self.busy_until - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
