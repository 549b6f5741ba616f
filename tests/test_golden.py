"""The golden file: decoded contents, byte-exact regeneration, and the spec's 15-line reader."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from edgellm.format import EllmFile

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "formats" / "golden"


def test_reader_decodes_golden_to_its_json():
    want = json.loads((GOLDEN / "tiny.json").read_text())
    with EllmFile(GOLDEN / "tiny.ellm") as f:
        assert f.header == want["header"]
        assert list(f.tensors) == list(want["tensors"])
        for e in f.entries:
            t = f.read_tensor(e.name)
            w = want["tensors"][e.name]
            assert [c.codec for c in e.chunks] == w["codecs"]
            assert t.to_bytes().hex() == w["raw_hex"]
            assert [float(x) for x in t.dequantize().ravel()] == w["values"]
    assert {c for w in want["tensors"].values() for c in w["codecs"]} == {"raw", "lz4", "zstd"}
    assert {t["stype"] for t in want["header"]["tensors"]} == {"f32", "f16", "q8", "q4"}


def test_writer_reproduces_golden_byte_for_byte(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_golden.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "tiny.ellm").read_bytes() == (GOLDEN / "tiny.ellm").read_bytes()
    assert json.loads((tmp_path / "tiny.json").read_text()) == json.loads((GOLDEN / "tiny.json").read_text())


def test_spec_reader_reads_golden():
    """The 15-line reader printed in formats/SPEC.md must decode the golden file: the spec stays honest."""
    spec = (ROOT / "formats" / "SPEC.md").read_text()
    code = re.search(r"```python\n(.*?)```", spec, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    ns: dict = {}
    exec(code, ns)
    header, raw = ns["read_ellm"](GOLDEN / "tiny.ellm")
    want = json.loads((GOLDEN / "tiny.json").read_text())
    assert header["tensors"] == want["header"]["tensors"]
    assert {k: v.hex() for k, v in raw.items()} == {k: v["raw_hex"] for k, v in want["tensors"].items()}
