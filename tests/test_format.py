"""The reader treats every byte as hostile: each MUST-reject case of formats/SPEC.md is a FormatError."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgellm.errors import FormatError
from edgellm.format import EllmFile, TensorEntry, Writer
from edgellm.format.spec import PREAMBLE_SIZE, checksum, layout_for
from edgellm.quant import quantize

GOLDEN = Path(__file__).resolve().parents[1] / "formats" / "golden" / "tiny.ellm"
BLOB = GOLDEN.read_bytes()
HLEN = struct.unpack_from("<Q", BLOB, 8)[0]


def _read_all(path: Path) -> None:
    with EllmFile(path) as f:
        for e in f.entries:
            f.read_tensor(e.name)
        f.verify()


def _with_header(tmp_path: Path, mutate) -> Path:
    """The golden file with its header JSON changed by `mutate` and a valid header checksum."""
    header = json.loads(BLOB[PREAMBLE_SIZE:PREAMBLE_SIZE + HLEN])
    mutate(header)
    body = json.dumps(header, separators=(",", ":")).encode()
    assert len(body) <= HLEN, "mutation grew the header past its reserved room"
    body += b" " * (HLEN - len(body))
    out = bytearray(BLOB)
    out[PREAMBLE_SIZE:PREAMBLE_SIZE + HLEN] = body
    struct.pack_into("<Q", out, 16, int(checksum(body), 16))
    p = tmp_path / "m.ellm"
    p.write_bytes(bytes(out))
    return p


def _tensor(h, i=0):
    return h["tensors"][i]


HEADER_CASES = {
    "alignment": (lambda h: h.update(alignment=100), "alignment"),
    "alignment range": (lambda h: h.update(alignment=8), "alignment"),
    "duplicate name": (lambda h: _tensor(h, 1).update(name=_tensor(h, 0)["name"]), "twice"),
    "no name": (lambda h: _tensor(h).pop("name"), "no name"),
    "unknown stype": (lambda h: _tensor(h).update(stype="q3"), "storage type"),
    "bad group": (lambda h: _tensor(h).update(group=48), "group size"),
    "3-D shape": (lambda h: _tensor(h).update(shape=[3, 40, 1]), "shape"),
    "zero dim": (lambda h: _tensor(h).update(shape=[0, 40]), "shape"),
    "layer order": (lambda h: _tensor(h, 4).update(layer=0) or _tensor(h, 3).update(layer=1), "layer"),
    "unknown codec": (lambda h: _tensor(h, 1)["chunks"][0].__setitem__(3, "brotli"), "codec"),
    "unaligned": (lambda h: _tensor(h, 1)["chunks"][0].__setitem__(0, _tensor(h, 1)["chunks"][0][0] + 8),
                  "aligned"),
    "overlap": (lambda h: _tensor(h, 1)["chunks"][0].__setitem__(0, _tensor(h, 0)["chunks"][-1][0]),
                "overlaps"),
    "into header": (lambda h: _tensor(h)["chunks"][0].__setitem__(0, 0), "overlaps"),
    "beyond EOF": (lambda h: _tensor(h, 4)["chunks"][0].__setitem__(0, 1 << 40), "truncated"),
    "raw lengths sum": (lambda h: _tensor(h, 3)["chunks"][0].__setitem__(2, 18), "raw"),
    "row boundary": (lambda h: _tensor(h, 2)["chunks"][0].__setitem__(2, 100), "row boundary"),
    "raw length mismatch": (lambda h: _tensor(h, 4)["chunks"][0].__setitem__(1, 31), "raw chunk"),
    "oversize chunk": (lambda h: _tensor(h, 4)["chunks"][0].__setitem__(1, 1 << 30), "length"),
    "malformed chunk": (lambda h: _tensor(h, 4)["chunks"].__setitem__(0, [1, 2]), "malformed"),
    "no tensor table": (lambda h: h.pop("tensors"), "tensor table"),
    "no config": (lambda h: h.pop("config"), "config"),
    "bad checksum text": (lambda h: _tensor(h, 4)["chunks"][0].__setitem__(4, "xyz"), "checksum"),
    "non-int offset": (lambda h: _tensor(h, 4)["chunks"][0].__setitem__(0, "4096"), "offset"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_header_table_rejections(case, tmp_path):
    mutate, words = HEADER_CASES[case]
    path = _with_header(tmp_path, mutate)
    with pytest.raises(FormatError, match=words):
        _read_all(path)


def _write(tmp_path, name, blob) -> Path:
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def test_preamble_rejections(tmp_path):
    cases = {
        "magic": b"GGUF" + BLOB[4:],
        "major version": BLOB[:4] + struct.pack("<H", 2) + BLOB[6:],
        "header length": BLOB[:8] + struct.pack("<Q", 1 << 40) + BLOB[16:],
        "header checksum": BLOB[:16] + bytes(8) + BLOB[24:],
    }
    words = {"magic": "not an .ellm", "major version": "version 2", "header length": "exceeds",
             "header checksum": "checksum"}
    for k, blob in cases.items():
        with pytest.raises(FormatError, match=words[k]):
            EllmFile(_write(tmp_path, f"{k}.ellm", blob))


def test_minor_version_is_accepted(tmp_path):
    _read_all(_write(tmp_path, "minor.ellm", BLOB[:6] + struct.pack("<H", 7) + BLOB[8:]))


def test_truncation_at_every_boundary_and_at_random(tmp_path):
    with EllmFile(GOLDEN) as f:
        cuts = {0, 3, 4, 8, 16, 23, 24, PREAMBLE_SIZE + HLEN // 2, PREAMBLE_SIZE + HLEN}
        for e in f.entries:
            for c in e.chunks:
                cuts |= {c.offset, c.offset + 1, c.offset + c.length - 1}
    cuts |= set(np.random.default_rng(0).integers(0, len(BLOB), 40).tolist())
    for cut in sorted(c for c in cuts if c < len(BLOB)):
        p = _write(tmp_path, "cut.ellm", BLOB[:cut])
        with pytest.raises(FormatError):
            _read_all(p)


def test_flipped_data_bytes_fail_checksum(tmp_path):
    with EllmFile(GOLDEN) as f:
        targets = [(e.name, c.offset + c.length // 2) for e in f.entries for c in e.chunks]
    for name, pos in targets:
        blob = bytearray(BLOB)
        blob[pos] ^= 0x5A
        p = _write(tmp_path, "flip.ellm", bytes(blob))
        with pytest.raises(FormatError, match="checksum"):
            with EllmFile(p) as f:
                f.read_tensor(name)
        with pytest.raises(FormatError, match=name.replace(".", r"\.")):
            with EllmFile(p) as f:
                f.verify()


def test_unverified_corrupt_compressed_chunk_never_crashes(tmp_path):
    with EllmFile(GOLDEN) as f:
        comp = [(e.name, c) for e in f.entries for c in e.chunks if c.codec != "raw"]
    assert comp
    for name, c in comp:
        for pos in range(c.offset, c.offset + c.length):
            blob = bytearray(BLOB)
            blob[pos] ^= 0xFF
            with EllmFile(_write(tmp_path, "z.ellm", bytes(blob)), verify=False) as f:
                try:
                    f.read_tensor(name)      # may decode to wrong bytes; must not raise anything else
                except FormatError:
                    pass


def test_fuzz_single_byte_flips_and_truncations(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(300):
        blob = bytearray(BLOB)
        if i % 3 == 0:
            blob = blob[:int(rng.integers(0, len(blob)))]
        else:
            pos = int(rng.integers(0, len(blob)))
            blob[pos] ^= int(rng.integers(1, 256))
        p = _write(tmp_path, "fuzz.ellm", bytes(blob))
        try:
            _read_all(p)
        except FormatError:
            pass


def test_not_a_file(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        EllmFile(tmp_path / "missing.ellm")
    with pytest.raises(FormatError, match="directory"):
        EllmFile(tmp_path)


def _entries():
    w = np.linspace(-1, 1, 64 * 40, dtype=np.float32).reshape(64, 40)
    return w, [TensorEntry("model.layers.0.mlp.up_proj.weight", w.shape, layout_for(w.shape, "q4", 32), 0),
               TensorEntry("model.norm.weight", (8,), layout_for((8,), "f32", 32), 1)]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_writer_leaves_nothing_on_error(tmp_path, exc):
    w, entries = _entries()
    out = tmp_path / "x.ellm"
    with pytest.raises(exc):
        with Writer(out, {"config": {}}, entries, alignment=64) as wr:
            wr.feed(entries[0].name, quantize(w, "q4")[0])
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_missing_tensor(tmp_path):
    w, entries = _entries()
    with pytest.raises(ValueError, match="never written"):
        with Writer(tmp_path / "x.ellm", {"config": {}}, entries, alignment=64) as wr:
            for s in quantize(w, "q4"):
                wr.feed(entries[0].name, s)
    assert list(tmp_path.iterdir()) == []
