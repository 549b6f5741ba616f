"""The streaming runtime: same logits under any budget, slot count and device; budget errors; I/O errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import edgellm
import edgellm.api
from edgellm.runtime.device import DeviceProfile, Throttle, list_devices, load_device
from edgellm.runtime.plan import parse_size

PROMPT = [1, 5, 9, 33, 60]
CTX = 64


@pytest.fixture(scope="module")
def src_dir(tmp_path_factory):
    """Big enough (6 layers of 1.7 MB in q4, 12 MB in f32) that streaming beats pinning at every slot count."""
    from conftest import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("src") / "m",
        hidden=512,
        heads=8,
        kv_heads=4,
        head_dim=64,
        inter=1408,
        layers=6,
        std=0.05,
    )


@pytest.fixture(scope="module")
def f32_file(src_dir, tmp_path_factory):
    return edgellm.convert(src_dir, tmp_path_factory.mktemp("f32") / "m.ellm", quant="f32", progress=False).path


@pytest.fixture(scope="module")
def q4_file(src_dir, tmp_path_factory):
    return edgellm.convert(src_dir, tmp_path_factory.mktemp("q4") / "m.ellm", quant="q4", progress=False).path


def _reference(path):
    with edgellm.load(path, context=CTX) as m:
        return m.logits(PROMPT), m.generate("w3 w4 w5", max_tokens=24)


def _minimum(path, slots=2, **kw) -> int:
    p = edgellm.plan(path, context=CTX, ram_budget=1000, slots=slots, **kw)
    assert not p.fits and p.minimum_budget > 1000
    return p.minimum_budget


@pytest.mark.parametrize("which", ["f32", "q4"])
def test_bit_identical_across_budgets_and_slots(which, f32_file, q4_file):
    path = f32_file if which == "f32" else q4_file
    prompt, ids = "w3 w4 w5", PROMPT
    with edgellm.load(path, context=CTX) as m:
        ref_logits, ref_text, full = m.logits(ids), m.generate(prompt, max_tokens=24), m.plan.total
    streamed_per_slots = {}
    for slots in (1, 2, 3):
        lo = _minimum(path, slots)
        for budget in (lo, lo + (full - lo) // 3, lo + 2 * (full - lo) // 3, full):
            with edgellm.load(path, context=CTX, ram_budget=budget, slots=slots) as m:
                assert m.plan.total <= budget
                streamed_per_slots[slots] = streamed_per_slots.get(slots, 0) + bool(m.plan.streamed)
                np.testing.assert_array_equal(m.logits(ids), ref_logits)
                assert m.generate(prompt, max_tokens=24) == ref_text
    assert all(streamed_per_slots.get(n) for n in (1, 2, 3))  # the sweep really streamed, every slot count


def test_direct_io_and_decode_threads_identical(f32_file):
    ref_logits, _ = _reference(f32_file)
    budget = _minimum(f32_file, decode_threads=2)
    for direct in (False, True):
        with edgellm.load(f32_file, context=CTX, ram_budget=budget, direct_io=direct, decode_threads=2) as m:
            assert m.plan.streamed
            np.testing.assert_array_equal(m.logits(PROMPT), ref_logits)


def test_interrupted_pass_resynchronises(f32_file):
    """A forward pass abandoned mid-way (Ctrl-C in chat) must not deadlock the prefetcher."""
    ref_logits, _ = _reference(f32_file)
    with edgellm.load(f32_file, context=CTX, ram_budget=_minimum(f32_file)) as m:
        m.provider.layer(m.plan.streamed[0])
        m.provider.release(m.plan.streamed[0])  # the pass stops here
        np.testing.assert_array_equal(m.logits(PROMPT), ref_logits)


def test_budget_error_names_minimum(f32_file):
    with pytest.raises(edgellm.BudgetError, match="minimum workable budget is"):
        edgellm.load(f32_file, context=CTX, ram_budget="100KB")
    with edgellm.load(f32_file, context=CTX, ram_budget=_minimum(f32_file)) as m:
        assert m.plan.streamed


def test_default_context_shrinks_to_fit_a_tight_budget(q4_file, monkeypatch):
    """Without context=, a budget too small for the default context's KV cache gets a shorter context and a
    notice; an explicit context is never changed. (This model's own maximum, 256, is the default here.)"""
    monkeypatch.setattr(edgellm.api, "MIN_AUTO_CONTEXT", 32)
    budget = _minimum(q4_file)  # workable at context 64, not at 256
    ref, _ = _reference(q4_file)
    with pytest.raises(edgellm.BudgetError):
        edgellm.load(q4_file, context=256, ram_budget=budget)
    with pytest.warns(edgellm.api.ContextReduced, match="context reduced to"):
        m = edgellm.load(q4_file, ram_budget=budget)
    with m:
        assert CTX <= m.state.context < 256 and m.plan.total <= budget
        np.testing.assert_array_equal(m.logits(PROMPT), ref)


def test_corrupt_chunk_mid_run_raises_format_error(f32_file, tmp_path):
    path = tmp_path / "c.ellm"
    path.write_bytes(f32_file.read_bytes())
    m = edgellm.load(path, context=CTX, ram_budget=_minimum(path))
    try:
        m.logits(PROMPT)
        layer = m.plan.streamed[0]
        entry = m.file.tensors[f"model.layers.{layer}.mlp.up_proj.weight"]
        with open(path, "r+b") as f:
            f.seek(entry.chunks[0].offset + 10)
            b = f.read(1)
            f.seek(entry.chunks[0].offset + 10)
            f.write(bytes([b[0] ^ 0xFF]))
        with pytest.raises(edgellm.FormatError, match="checksum"):
            for _ in range(3):
                m.logits(PROMPT)
    finally:
        m.close()


def test_truncated_file_mid_run_raises_format_error(f32_file, tmp_path):
    path = tmp_path / "t.ellm"
    path.write_bytes(f32_file.read_bytes())
    m = edgellm.load(path, context=CTX, ram_budget=_minimum(path))
    try:
        last = m.file.tensors["model.layers.5.mlp.down_proj.weight"].chunks[0].offset
        with open(path, "r+b") as f:
            f.truncate(last)
        with pytest.raises(edgellm.FormatError):
            for _ in range(3):
                m.logits(PROMPT)
    finally:
        m.close()


def _fail_decoding(m, exc):
    """Make every chunk decode in the prefetcher's threads raise `exc` (embedding rows still decode)."""
    real = m.file.decode_chunk

    def decode_chunk(*a, **k):
        if threading.current_thread().name.startswith("edgellm-"):
            raise exc
        return real(*a, **k)

    m.file.decode_chunk = decode_chunk


@pytest.mark.parametrize(
    "exc,want",
    [(OSError(5, "Input/output error"), edgellm.FormatError), (ZeroDivisionError("a bug"), ZeroDivisionError)],
)
def test_only_io_and_codec_errors_become_format_error(f32_file, exc, want):
    """A read error is reported as FormatError; any other exception in the prefetch thread (a bug) is re-raised
    in the caller as it is, not disguised as a damaged file. Either way the next pass works again."""
    ref_logits, _ = _reference(f32_file)
    with edgellm.load(f32_file, context=CTX, ram_budget=_minimum(f32_file)) as m:
        real = m.file.decode_chunk
        _fail_decoding(m, exc)
        with pytest.raises(want) as e:
            m.logits(PROMPT)
        assert not isinstance(e.value, edgellm.FormatError) or "Input/output error" in str(e.value)
        m.file.decode_chunk = real
        np.testing.assert_array_equal(m.logits(PROMPT), ref_logits)


def test_after_an_error_the_prefetcher_waits_for_the_next_pass(f32_file):
    """A failed load stops the background reads until the model asks for a piece again: a failing device is not
    read on, and a pass after the fault is mended never meets an error left by a load made in between (the old
    prefetcher began the next cycle at once, failed again, and the mended pass raised that)."""
    with edgellm.load(f32_file, context=CTX, ram_budget=_minimum(f32_file)) as m:
        real = m.file.decode_chunk
        _fail_decoding(m, OSError(5, "Input/output error"))
        with pytest.raises(edgellm.FormatError):
            m.logits(PROMPT)
        time.sleep(0.3)  # time for a background load, were one made, to fail
        m.file.decode_chunk = real
        np.testing.assert_array_equal(m.logits(PROMPT), _reference(f32_file)[0])


def test_a_discarded_load_never_frees_a_slot_again(f32_file):
    """After an interrupted pass every slot is free; a load begun before it that finishes later must not put its
    slot on the free list again, where a load of the new cycle may already have taken it (two pieces, one slot)."""
    ref = _reference(f32_file)[0]
    with edgellm.load(f32_file, context=CTX, ram_budget=_minimum(f32_file)) as m:
        m.logits(PROMPT)
        pf = m.provider.prefetch
        with pf._cv:  # the loop thread waits on this lock: the steps below are its, in the order that raced
            stale, key = pf._generation, pf.sequence[pf._expect]
            pf._resync(pf._expect)
            slot = pf._free.pop()  # taken by a load of the new generation
            pf._publish(key, slot, stale, None)  # ... when a load of the old one finishes into it
            assert slot not in pf._free and key not in pf._ready
            pf._free.append(slot)
        np.testing.assert_array_equal(m.logits(PROMPT), ref)


def test_throttle_charges_latency_plus_bytes_over_bandwidth(monkeypatch):
    """Device time per request is latency + bytes / bandwidth, back to back, on a fake clock (a wall-clock
    bound would fail on a busy machine). A request issued while the device is busy queues behind it."""
    from edgellm.runtime import device as dev_mod

    now = [100.0]
    slept = []
    monkeypatch.setattr(dev_mod.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(dev_mod.time, "sleep", lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    t = Throttle(read_mb_s=50.0, latency_us=1000)
    for _ in range(10):
        t.wait(1_000_000, now[0])
    assert slept == pytest.approx([1e6 / 50e6 + 1e-3] * 10)
    now[0] += 5.0  # the device idles for 5 s ...
    t.wait(1_000_000, now[0] - 1.0)  # ... so a request issued 1 s ago has finished: no wait
    assert len(slept) == 10
    t.busy_until = now[0] + 0.5  # the device is still busy for 0.5 s: queue behind it
    t.wait(500_000, now[0])
    assert slept[-1] == pytest.approx(0.5 + 1e-3 + 0.01)
    assert Throttle(None, None).wait(10**9, 0.0) is None and len(slept) == 11


def test_device_emulation_slows_streaming_to_profile(f32_file):
    """With a 20 MB/s profile no streamed read beats the profile: the read seconds the I/O stats measure cover
    the bytes that went through the throttle at 20 MB/s. A lower bound on the reads alone, which a slow CPU
    (compute slower than the flash) keeps. (bytes_read also counts the unthrottled pinned loads and embedding
    rows, so the throttled bytes are tallied at the throttle itself.)"""
    bw = 20e6
    dev = DeviceProfile("slow", read_mb_s=bw / 1e6, read_latency_us=0)
    throttled = []
    with edgellm.load(f32_file, context=CTX, ram_budget=_minimum(f32_file), device=dev) as m:
        wait = m.provider.throttle.wait
        m.provider.throttle.wait = lambda n, started: (throttled.append(n), wait(n, started))
        for _ in range(3):
            m.logits(PROMPT)
    read_s = m.provider.io_stats()["read_s"]  # after close: the prefetcher has stopped, the counts are final
    assert sum(throttled) >= 3 * m.plan.streamed_bytes_per_pass > 0
    assert read_s >= sum(throttled) / bw * (1 - 1e-9)


def test_device_profiles_load():
    names = list_devices()
    for n in ("host", "rpi4-sdcard", "rpi5-sdcard", "rpi5-nvme", "phone-ufs31", "phone-ufs40"):
        assert n in names
        d = load_device(n)
        assert d.name == n and set(d.sources) >= {"read_mb_s", "cpu_scale"}
    with pytest.raises(edgellm.EdgeLLMError, match="unknown device"):
        load_device("toaster")


@pytest.mark.parametrize(
    "text,want",
    [("512MB", 512 * 10**6), ("1.5GiB", int(1.5 * 2**30)), (4096, 4096), ("300M", 300 * 2**20), ("2 kb", 2000)],
)
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("bad", ["", "lots", "-5MB", 0, "5XB"])
def test_parse_size_rejects(bad):
    with pytest.raises(edgellm.EdgeLLMError):
        parse_size(bad)


@pytest.fixture(scope="module")
def tied_files(tmp_path_factory):
    """A tied model whose table (4096 x 256) outweighs a layer piece: f32, and a GGUF import whose table is
    Q4_1 (q4a: scales and mins stay resident while the codes stream)."""
    from conftest import make_tiny_model
    from gguf_files import write_gguf

    d = tmp_path_factory.mktemp("tied")
    shape = {"hidden": 256, "heads": 4, "kv_heads": 2, "head_dim": 64, "inter": 512, "layers": 3, "vocab": 4096}
    src = make_tiny_model(d / "m", **shape, tied=True)
    gguf = write_gguf(src, d / "m.gguf", lambda n, a: "F32" if a.ndim == 1 else ("Q4_1" if "embed" in n else "Q4_0"))
    return {
        "f32": edgellm.convert(src, d / "f32.ellm", quant="f32", progress=False).path,
        "q4a": edgellm.convert(gguf, d / "q4a.ellm", progress=False).path,
    }


@pytest.mark.parametrize("which", ["f32", "q4a"])
def test_a_head_larger_than_the_budget_streams_in_row_blocks(which, tied_files):
    """Under a budget the pinned table cannot fit, the head streams block by block (its scales resident)
    and the embedding rows come from the file: the same logits and text as the all-pinned run."""
    from edgellm.runtime.plan import HEAD_RESIDENT

    path = tied_files[which]
    ref_logits, ref_text = _reference(path)
    budget = _minimum(path)
    with edgellm.load(path, context=CTX, ram_budget=budget) as m:
        head = m.plan.n_layers
        assert head in m.plan.streamed and not m.plan.embed_pinned
        pinning_it = m.plan.total - m.plan.fixed.get(HEAD_RESIDENT, 0) + m.plan.costs[head].raw
        assert m.plan.total <= budget < pinning_it  # no room for the table
        assert len(m.provider.head_rows) >= 2 and m.plan.costs[head].piece <= m.plan.slot_bytes
        if which == "q4a":
            assert m.provider.head_mins is not None
            assert m.plan.fixed[HEAD_RESIDENT] >= 2 * m.provider.head_scales.nbytes  # scales and mins
        np.testing.assert_array_equal(m.logits(PROMPT), ref_logits)
        assert m.generate("w3 w4 w5", max_tokens=24) == ref_text
        rows = [r for r, _ in m.provider.head_rows]
        assert rows == sorted(rows) and rows[0] == 0


def test_a_head_that_does_not_fit_leaves_room_for_pinned_layers(tied_files):
    """The planner does not give up pinning because the head is too big: it pins the layers that fit."""
    path = tied_files["f32"]
    lo = _minimum(path)
    with edgellm.load(path, context=CTX) as m:
        costs, head = m.plan.costs, m.plan.n_layers
    budget = lo + costs[0].raw + 1  # room for one layer, far from the table's size
    assert budget < lo + costs[head].raw
    with edgellm.load(path, context=CTX, ram_budget=budget) as m:
        assert head in m.plan.streamed and len(m.plan.pinned) == 1 and m.plan.total <= budget
