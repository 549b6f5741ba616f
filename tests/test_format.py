"""The reader treats every byte as hostile: each MUST-reject case of formats/SPEC.md is a FormatError with an
exact message, and a well-formed file the runtime cannot run is refused naming the tensor."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard

from edgellm.errors import FormatError
from edgellm.format import EllmFile, TensorEntry, Writer
from edgellm.format.spec import PREAMBLE_SIZE, checksum, layout_for
from edgellm.models.tensors import check_tensors
from edgellm.quant import quantize

GOLDEN = Path(__file__).resolve().parents[1] / "formats" / "golden" / "tiny.ellm"
BLOB = GOLDEN.read_bytes()
HLEN = struct.unpack_from("<Q", BLOB, 8)[0]


def _read_tensors(path: Path) -> dict[str, bytes]:
    """{name: raw bytes} of every tensor (opening and reading only: no verify())."""
    with EllmFile(path) as f:
        return {e.name: f.read_tensor(e.name).to_bytes() for e in f.entries}


def _read_all(path: Path) -> tuple[dict, dict[str, bytes]]:
    """Open, read every tensor, verify the whole file: (header, {name: raw bytes})."""
    with EllmFile(path) as f:
        out = {e.name: f.read_tensor(e.name).to_bytes() for e in f.entries}
        f.verify()
        return f.header, out


def _with_header(tmp_path: Path, mutate) -> Path:
    """The golden file with its header JSON changed by `mutate` and a valid header checksum."""
    header = json.loads(BLOB[PREAMBLE_SIZE : PREAMBLE_SIZE + HLEN])
    mutate(header)
    body = json.dumps(header, separators=(",", ":")).encode()
    assert len(body) <= HLEN, "mutation grew the header past its reserved room"
    body += b" " * (HLEN - len(body))
    out = bytearray(BLOB)
    out[PREAMBLE_SIZE : PREAMBLE_SIZE + HLEN] = body
    struct.pack_into("<Q", out, 16, int(checksum(body), 16))
    p = tmp_path / "m.ellm"
    p.write_bytes(bytes(out))
    return p


def _tensor(h, i=0):
    return h["tensors"][i]


E0, N0, Q0, D0, NORM = (
    "'model.embed_tokens.weight'",
    "'model.layers.0.input_layernorm.weight'",
    "'model.layers.0.self_attn.q_proj.weight'",
    "'model.layers.0.mlp.down_proj.weight'",
    "'model.norm.weight'",
)
# case: (mutation of the golden header, the exact message after "<path>: ")
HEADER_CASES = {
    "alignment": (lambda h: h.update(alignment=100), "alignment 100 is not a power of two"),
    "alignment range": (lambda h: h.update(alignment=8), "alignment: 8 is not an integer in [64, 1048576]"),
    "duplicate name": (lambda h: _tensor(h, 1).update(name=_tensor(h, 0)["name"]), f"tensor {E0} appears twice"),
    "no name": (lambda h: _tensor(h).pop("name"), "tensor #0 has no name"),
    "unknown stype": (lambda h: _tensor(h).update(stype="q3"), f"tensor {E0}: unknown storage type 'q3'"),
    "bad group": (lambda h: _tensor(h).update(group=48), f"tensor {E0}: q4 group 48 not one of (32, 64, 128)"),
    "float group": (lambda h: _tensor(h).update(group=32.0), f"tensor {E0}: q4 group 32.0 not one of (32, 64, 128)"),
    "q4a group": (lambda h: _tensor(h).update(stype="q4a", group=64), f"tensor {E0}: q4a group 64 not one of (32,)"),
    "f32 group not 0": (lambda h: _tensor(h, 1).update(group=32), f"tensor {N0}: group 32 for f32 must be 0"),
    "f16 group absent": (lambda h: _tensor(h, 3).pop("group"), f"tensor {D0}: group None for f16 must be 0"),
    "3-D shape": (lambda h: _tensor(h).update(shape=[3, 40, 1]), f"tensor {E0}: shape must be 1-D or 2-D"),
    "zero dim": (
        lambda h: _tensor(h).update(shape=[0, 40]),
        f"tensor {E0}: shape: 0 is not an integer in [1, 2147483648]",
    ),
    "layer order": (
        lambda h: _tensor(h, 4).update(layer=0) or _tensor(h, 3).update(layer=1),
        f"tensor {NORM}: layer 0 stored after layer 1",
    ),
    "unknown codec": (
        lambda h: _tensor(h, 1)["chunks"][0].__setitem__(3, "brotli"),
        f"tensor {N0} chunk 0: unknown codec 'brotli'",
    ),
    "unaligned": (
        lambda h: _tensor(h, 1)["chunks"][0].__setitem__(0, 1792 + 8),
        f"tensor {N0} chunk 0: offset 1800 is not 64-aligned",
    ),
    "overlap": (
        lambda h: _tensor(h, 1)["chunks"][0].__setitem__(0, 1728),
        f"tensor {N0} chunk 0: offset 1728 overlaps the header or the previous chunk",
    ),
    "into header": (
        lambda h: _tensor(h)["chunks"][0].__setitem__(0, 0),
        f"tensor {E0} chunk 0: offset 0 overlaps the header or the previous chunk",
    ),
    "beyond EOF": (
        lambda h: _tensor(h, 4)["chunks"][0].__setitem__(0, 1 << 40),
        f"tensor {NORM} chunk 0: truncated file: chunk ends at {(1 << 40) + 32}, file has 2080",
    ),
    "gap": (
        lambda h: _tensor(h, 2)["chunks"][1].__setitem__(0, 1984),  # packed, it sits at 1920
        f"tensor {Q0} chunk 1: gap: offset 1984 leaves unreferenced bytes after 1905; chunks are packed, "
        f"this one belongs at 1920",
    ),
    "raw lengths sum": (
        lambda h: _tensor(h)["chunks"].pop(),  # the scales chunk
        f"tensor {E0}: chunks hold 96 bytes, layout needs 108",
    ),
    "row boundary": (
        lambda h: _tensor(h, 2)["chunks"][0].__setitem__(2, 100),
        f"tensor {Q0} chunk 0: does not end on a row boundary",
    ),
    "raw length mismatch": (
        lambda h: _tensor(h, 4)["chunks"][0].__setitem__(1, 31),
        f"tensor {NORM} chunk 0: raw chunk with stored 31 != raw 32",
    ),
    "oversize chunk": (
        lambda h: _tensor(h, 4)["chunks"][0].__setitem__(1, 1 << 30),
        f"tensor {NORM} chunk 0: length: 1073741824 is not an integer in [0, 67108864]",
    ),
    "malformed chunk": (
        lambda h: _tensor(h, 4)["chunks"].__setitem__(0, [1, 2]),
        f"tensor {NORM} chunk 0: malformed entry",
    ),
    "no tensor table": (lambda h: h.pop("tensors"), "header has no tensor table"),
    "no config": (lambda h: h.pop("config"), "header has no model config"),
    "bad checksum text": (
        lambda h: _tensor(h, 4)["chunks"][0].__setitem__(4, "xyz"),
        f"tensor {NORM} chunk 0: malformed checksum",
    ),
    "non-int offset": (
        lambda h: _tensor(h, 4)["chunks"][0].__setitem__(0, "4096"),
        f"tensor {NORM} chunk 0: offset: '4096' is not an integer in [0, 4611686018427387904]",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_header_table_rejections(case, tmp_path):
    mutate, message = HEADER_CASES[case]
    path = _with_header(tmp_path, mutate)
    with pytest.raises(FormatError) as err:
        EllmFile(path)
    assert str(err.value) == f"{path}: {message}"


def _write(tmp_path, name, blob) -> Path:
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def test_preamble_rejections(tmp_path):
    cases = {
        "magic": (b"GGUF" + BLOB[4:], "not an .ellm file (magic b'GGUF')"),
        "major version": (
            BLOB[:4] + struct.pack("<H", 2) + BLOB[6:],
            "format version 2.0 is not supported (this reader reads 1.x); upgrade edgellm or re-convert the model",
        ),
        "header length": (
            BLOB[:8] + struct.pack("<Q", 1 << 40) + BLOB[16:],
            f"header length {1 << 40} exceeds the {64 << 20}-byte limit",
        ),
        "header past EOF": (
            BLOB[:8] + struct.pack("<Q", len(BLOB)) + BLOB[16:],
            f"truncated: header needs {len(BLOB)} bytes, file has {len(BLOB) - 24} after the preamble",
        ),
        "header checksum": (BLOB[:16] + bytes(8) + BLOB[24:], "header checksum mismatch (file is corrupt)"),
    }
    for k, (blob, message) in cases.items():
        p = _write(tmp_path, f"{k}.ellm", blob)
        with pytest.raises(FormatError) as err:
            EllmFile(p)
        assert str(err.value) == f"{p}: {message}", k


def test_minor_version_is_accepted(tmp_path):
    assert _read_all(_write(tmp_path, "minor.ellm", BLOB[:6] + struct.pack("<H", 7) + BLOB[8:])) == _read_all(GOLDEN)


def _layout():
    """[(tensor name, chunk offset, chunk length)] of the golden file, in file order."""
    with EllmFile(GOLDEN) as f:
        return [(e.name, c.offset, c.length) for e in f.entries for c in e.chunks]


def _padding() -> list[tuple[int, int]]:
    """[(start, end)] of every padding run of the golden file (between the header and chunk 0, and between
    chunks)."""
    out, end = [], PREAMBLE_SIZE + HLEN
    for _n, off, length in _layout():
        if off > end:
            out.append((end, off))
        end = off + length
    return out


def test_golden_is_packed_and_padded_with_zeros():
    """The byte layout rule, on the writer's own output: each chunk at the next aligned offset, zero padding,
    the file ending with its last chunk."""
    end = PREAMBLE_SIZE + HLEN
    for _n, off, length in _layout():
        assert off == -(-end // 64) * 64
        assert BLOB[end:off] == bytes(off - end)
        end = off + length
    assert end == len(BLOB)
    assert sum(b - a for a, b in _padding()) > 0, "the golden file has no padding to test"


def test_gap_and_trailing_bytes_are_rejected_though_every_chunk_is_intact(tmp_path):
    # 64 zero bytes inserted before model.norm.weight's chunk, its offset moved to match: all data still verifies
    gap = _with_header(tmp_path, lambda h: _tensor(h, 4)["chunks"][0].__setitem__(0, 2112))
    gap.write_bytes(gap.read_bytes()[:2048] + bytes(64) + BLOB[2048:])
    with pytest.raises(FormatError) as err:
        EllmFile(gap)
    assert str(err.value) == (
        f"{gap}: tensor {NORM} chunk 0: gap: offset 2112 leaves unreferenced bytes after "
        f"2004; chunks are packed, this one belongs at 2048"
    )
    for tail in (b"\0", b"x" * 4096):
        p = _write(tmp_path, "tail.ellm", BLOB + tail)
        with pytest.raises(FormatError) as err:
            EllmFile(p)
        assert str(err.value) == (
            f"{p}: {len(tail)} trailing byte(s) after the last chunk (it ends at "
            f"{len(BLOB)}, the file at {len(BLOB) + len(tail)})"
        )


def test_nonzero_padding_fails_verify_only(tmp_path):
    """Opening and reading never look at padding; verify() reads it and names the first non-zero byte."""
    want = _read_tensors(GOLDEN)
    names = {off: n for n, off, _l in _layout()}
    for start, end in _padding():
        for pos in (start, end - 1):
            blob = bytearray(BLOB)
            blob[pos] = 0x20
            p = _write(tmp_path, "pad.ellm", bytes(blob))
            assert _read_tensors(p) == want
            with EllmFile(p) as f, pytest.raises(FormatError) as err:
                f.verify()
            assert str(err.value) == (
                f"{p}: non-zero padding byte at offset {pos} (before tensor {names[end]!r}); padding must be zero"
            )


def test_verify_reports_a_chunk_that_does_not_decode(tmp_path):
    """A zstd chunk whose checksum matches but which decodes short: opening cannot see it, verify() names it."""
    name, off, length = next(t for t in _layout() if t[0] == "model.layers.0.input_layernorm.weight")
    short = zstandard.ZstdCompressor().compress(bytes(200))  # a valid frame of 200 bytes, not 256

    def shrink(h):
        c = _tensor(h, 1)["chunks"][0]
        c[1], c[4] = len(short), checksum(short)

    p = _with_header(tmp_path, shrink)
    blob = bytearray(p.read_bytes())
    blob[off : off + length] = short + bytes(length - len(short))
    p.write_bytes(bytes(blob))
    with EllmFile(p) as f, pytest.raises(FormatError) as err:
        f.verify()
    assert str(err.value) == f"{p}: tensor {name!r}: zstd chunk decodes to 200 bytes, expected 256"


def test_truncation_at_every_boundary_and_at_random(tmp_path):
    cuts = {0, 3, 4, 8, 16, 23, 24, PREAMBLE_SIZE + HLEN // 2, PREAMBLE_SIZE + HLEN}
    for _n, off, length in _layout():
        cuts |= {off, off + 1, off + length - 1}
    cuts |= set(np.random.default_rng(0).integers(0, len(BLOB), 40).tolist())
    for cut in sorted(c for c in cuts if c < len(BLOB)):
        p = _write(tmp_path, "cut.ellm", BLOB[:cut])
        with pytest.raises(
            FormatError,
            match=r": truncated(:| header| file: chunk ends at \d+, file has "
            f"{cut}$)",
        ):
            EllmFile(p)


def test_flipped_data_bytes_fail_checksum(tmp_path):
    targets = [(name, off, off + length // 2) for name, off, length in _layout()]
    for name, off, pos in targets:
        blob = bytearray(BLOB)
        blob[pos] ^= 0x5A
        p = _write(tmp_path, "flip.ellm", bytes(blob))
        with EllmFile(p) as f, pytest.raises(FormatError) as err:
            f.read_tensor(name)
        assert str(err.value) == f"{p}: checksum mismatch in tensor {name!r} (chunk at {off})"
        with EllmFile(p) as f, pytest.raises(FormatError) as err:
            f.verify()
        assert str(err.value) == f"{p}: tensor {name!r} is damaged (checksum mismatch in chunk at offset {off})"


def test_unverified_corrupt_compressed_chunk_never_crashes(tmp_path):
    """Without checksums a flipped byte in a compressed chunk either fails to decode (a FormatError naming the
    tensor and codec) or decodes to wrong bytes confined to that chunk's raw range: never another exception."""
    with EllmFile(GOLDEN) as f:
        comp = [(e.name, c) for e in f.entries for c in e.chunks if c.codec != "raw"]
    want = _read_tensors(GOLDEN)
    outcomes = {"error": 0, "wrong bytes": 0}
    assert comp
    for name, c in comp:
        for pos in range(c.offset, c.offset + c.length):
            blob = bytearray(BLOB)
            blob[pos] ^= 0xFF
            p = _write(tmp_path, "z.ellm", bytes(blob))
            with EllmFile(p, verify=False) as f:
                try:
                    got = f.read_tensor(name).to_bytes()
                except FormatError as err:
                    assert re.fullmatch(
                        re.escape(f"{p}: tensor {name!r}: {c.codec} chunk ")
                        + rf"(does not decode: .+|decodes to \d+ bytes, expected {c.raw_length})",
                        str(err),
                    ), str(err)
                    outcomes["error"] += 1
                    continue
            lo, hi = c.raw_offset, c.raw_offset + c.raw_length
            assert len(got) == len(want[name]) and got != want[name]
            assert got[:lo] == want[name][:lo] and got[hi:] == want[name][hi:]
            outcomes["wrong bytes"] += 1
    assert min(outcomes.values()) > 0, outcomes


def _expected_damage(p: Path, pos: int) -> str | None:
    """The error `_read_all` must raise for the golden file with byte `pos` changed (None: accepted)."""
    if pos < 4:
        return re.escape(f"{p}: not an .ellm file (magic ")
    if pos < 6:
        return re.escape(f"{p}: format version ")
    if pos < 8:
        return None  # the minor version: any is accepted
    if pos < 16:  # the header length: too long, past the end, or wrong bytes
        return re.escape(f"{p}: ") + r"(header length \d+ exceeds|truncated: header needs|header checksum)"
    if pos < PREAMBLE_SIZE + HLEN:  # the header checksum or the header itself
        return re.escape(f"{p}: header checksum mismatch (file is corrupt)")
    for name, off, length in _layout():
        if pos < off:
            return re.escape(f"{p}: non-zero padding byte at offset {pos} (before tensor {name!r})")
        if pos < off + length:
            return re.escape(f"{p}: checksum mismatch in tensor {name!r} (chunk at {off})")
    raise AssertionError(pos)


def test_fuzz_single_byte_flips_and_truncations(tmp_path):
    """Every byte of the file is checked: a flip anywhere but the minor version is reported as exactly the
    damage it is, and any truncation as a truncation."""
    rng = np.random.default_rng(1)
    want = _read_all(GOLDEN)
    for i in range(300):
        blob = bytearray(BLOB)
        p = tmp_path / "fuzz.ellm"
        if i % 3 == 0:
            blob = blob[: int(rng.integers(0, len(blob)))]
            expect = re.escape(f"{p}: ") + r"(truncated|tensor '[^']+' chunk \d+: truncated file)"
        else:
            pos = int(rng.integers(0, len(blob)))
            blob[pos] ^= int(rng.integers(1, 256))
            expect = _expected_damage(p, pos)
        p.write_bytes(bytes(blob))
        if expect is None:
            assert _read_all(p) == want
            continue
        with pytest.raises(FormatError) as err:
            _read_all(p)
        assert re.match(expect, str(err.value)), (i, str(err.value))


def test_not_a_file(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        EllmFile(tmp_path / "missing.ellm")
    with pytest.raises(FormatError, match="directory"):
        EllmFile(tmp_path)


def _entries():
    w = np.linspace(-1, 1, 64 * 40, dtype=np.float32).reshape(64, 40)
    return w, [
        TensorEntry("model.layers.0.mlp.up_proj.weight", w.shape, layout_for(w.shape, "q4", 32), 0),
        TensorEntry("model.norm.weight", (8,), layout_for((8,), "f32", 32), 1),
    ]


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


# -- Tensors a model needs (formats/SPEC.md): a well-formed file the runtime cannot run is refused by name ----


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """`src` written again by the Writer with its tensor list [(name, stype, f32 values, layer)] passed
    through `edit`: a well-formed file holding whatever tensors a test wants."""
    with EllmFile(src) as f:
        items = [
            (e.name, e.layout.stype, f.read_tensor(e.name).dequantize().reshape(e.shape), e.layer) for e in f.entries
        ]
        meta = {k: v for k, v in f.header.items() if k not in ("tensors", "alignment")}
    items = edit(items)
    entries = [TensorEntry(n, v.shape, layout_for(v.shape, st, 32), layer) for n, st, v, layer in items]
    with Writer(dst, meta, entries, alignment=64, threads=1) as w:
        for (n, st, v, _layer), e in zip(items, entries):
            for stream in quantize(v.reshape(e.layout.rows, e.layout.cols), st, 32):
                w.feed(n, np.ascontiguousarray(stream))
    with EllmFile(dst) as f:
        f.verify()  # well-formed: only the tensor list can be wrong
    return dst


def _without(name):
    return lambda items: [t for t in items if t[0] != name]


def _replace(name, stype=None, values=None, layer=None):
    return lambda items: [
        (n, stype or st, v if values is None else values(v), layer if layer is not None else lay)
        if n == name
        else (n, st, v, lay)
        for n, st, v, lay in items
    ]


def _insert_after(name, new):
    return lambda items: [x for t in items for x in ([t, new] if t[0] == name else [t])]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Tiny converted models (hidden 48, q 96, kv 32, intermediate 100, vocab 64, 2 layers), by kind."""
    from conftest import make_tiny_model

    import edgellm

    root = tmp_path_factory.mktemp("needs")
    kinds = {
        "llama": {},
        "mistral": {"model_type": "mistral"},
        "qwen2": {"model_type": "qwen2"},
        "tied": {"tied": True},
    }
    return {
        k: edgellm.convert(make_tiny_model(root / k, **kw), root / f"{k}.ellm", quant="q8", progress=False).path
        for k, kw in kinds.items()
    }


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "tied"])
def test_converted_files_hold_every_tensor_the_runtime_needs(converted, kind):
    with EllmFile(converted[kind]) as f:
        check_tensors(f)
        assert ("lm_head.weight" in f.tensors) == (kind != "tied")
        assert ("model.layers.1.self_attn.v_proj.bias" in f.tensors) == (kind == "qwen2")


L1 = "model.layers.1."


def _missing(name: str, shape: list, model_type: str = "llama") -> str:
    return (
        f"{name!r} {shape} is missing: this {model_type} config needs it (the file is incomplete; re-convert the model)"
    )


NEEDS_CASES = {  # case: (model, edit, the exact message after "<path>: tensor ")
    "no embedding": ("llama", _without("model.embed_tokens.weight"), _missing("model.embed_tokens.weight", [64, 48])),
    "no k_proj": (
        "mistral",
        _without(L1 + "self_attn.k_proj.weight"),
        _missing(L1 + "self_attn.k_proj.weight", [32, 48], "mistral"),
    ),
    "no norm": (
        "llama",
        _without(L1 + "post_attention_layernorm.weight"),
        _missing(L1 + "post_attention_layernorm.weight", [48]),
    ),
    "no final norm": ("tied", _without("model.norm.weight"), _missing("model.norm.weight", [48])),
    "no head": ("llama", _without("lm_head.weight"), _missing("lm_head.weight", [64, 48])),
    "no qwen2 bias": (
        "qwen2",
        _without(L1 + "self_attn.v_proj.bias"),
        _missing(L1 + "self_attn.v_proj.bias", [32], "qwen2"),
    ),
    "short v_proj": (
        "llama",
        _replace(L1 + "self_attn.v_proj.weight", values=lambda v: v[:-1]),
        f"'{L1}self_attn.v_proj.weight' has shape [31, 48]; this llama config needs [32, 48]",
    ),
    "transposed o_proj": (
        "qwen2",
        _replace(L1 + "self_attn.o_proj.weight", values=lambda v: v.T.copy()),
        f"'{L1}self_attn.o_proj.weight' has shape [96, 48]; this qwen2 config needs [48, 96]",
    ),
    "f16 norm": (
        "llama",
        _replace("model.norm.weight", stype="f16"),
        "'model.norm.weight' is stored as f16; norms and biases must be f32",
    ),
    "wrong layer": (
        "llama",
        _replace(L1 + "mlp.down_proj.weight", layer=2),
        f"'{L1}mlp.down_proj.weight' is recorded in layer 2; its name puts it in layer 1",
    ),
    "bad extra bias": (
        "llama",
        _insert_after(
            L1 + "self_attn.q_proj.weight", (L1 + "self_attn.q_proj.bias", "f32", np.zeros(48, np.float32), 1)
        ),
        f"'{L1}self_attn.q_proj.bias' has shape [48]; this llama config needs [96]",
    ),
    "bad tied head": (
        "tied",
        _insert_after("model.norm.weight", ("lm_head.weight", "q8", np.zeros((64, 32), np.float32), 2)),
        "'lm_head.weight' has shape [64, 32]; this llama config needs [64, 48]",
    ),
}


@pytest.mark.parametrize("case", sorted(NEEDS_CASES))
def test_a_file_the_runtime_cannot_run_is_refused_by_name(converted, tmp_path, case):
    kind, edit, message = NEEDS_CASES[case]
    p = _rewrite(converted[kind], tmp_path / "x.ellm", edit)
    with EllmFile(p) as f, pytest.raises(FormatError) as err:
        check_tensors(f)
    assert str(err.value) == f"{p}: tensor {message}"


def test_unknown_extra_tensors_are_ignored(converted, tmp_path):
    p = _rewrite(
        converted["llama"],
        tmp_path / "x.ellm",
        _insert_after(L1 + "mlp.down_proj.weight", (L1 + "mlp.extra.weight", "f32", np.ones((3, 5)), 1)),
    )
    with EllmFile(p) as f:
        check_tensors(f)


@pytest.mark.parametrize("case", ["no k_proj", "no head"])
def test_load_and_plan_refuse_a_file_missing_a_tensor_by_name(converted, tmp_path, case):
    import edgellm

    kind, edit, message = NEEDS_CASES[case]
    p = _rewrite(converted[kind], tmp_path / "x.ellm", edit)
    for call in (edgellm.load, edgellm.plan):
        with pytest.raises(FormatError) as err:
            call(p)
        assert str(err.value) == f"{p}: tensor {message}"
