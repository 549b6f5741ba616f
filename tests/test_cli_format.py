"""The real `edgellm` command for convert / inspect / verify / run / plan, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgellm.format import EllmFile


def cli(*args, check=False):
    r = subprocess.run([sys.executable, "-m", "edgellm.cli.main", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def assert_one_line_error(r, match: str):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgellm: error:") and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def converted(stories_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "s.ellm"
    r = cli("convert", stories_dir, "-o", out, "--quant", "q4", check=True)
    assert "wrote" in r.stdout and "MB/s" in r.stdout
    return out


def test_inspect_and_json(converted):
    r = cli("inspect", converted, check=True)
    assert "bits/weight" in r.stdout and "layer 0" in r.stdout
    s = json.loads(cli("inspect", "--json", converted, check=True).stdout)
    for key in (
        "params",
        "raw_bytes",
        "stored_bytes",
        "compression_ratio",
        "bits_per_weight",
        "codecs",
        "layers",
        "tensors",
    ):
        assert key in s
    assert s["params"] == sum(t["shape"][0] * (t["shape"][1] if len(t["shape"]) == 2 else 1) for t in s["tensors"])
    by_type: dict[str, int] = {}
    for t in s["tensors"]:
        if len(t["shape"]) == 2:
            by_type[t["stype"]] = by_type.get(t["stype"], 0) + t["raw_bytes"]
    assert s["weight_types"] == by_type and "types     " in r.stdout


def test_verify_good_and_damaged(converted, tmp_path):
    assert "OK" in cli("verify", converted, check=True).stdout
    bad = tmp_path / "bad.ellm"
    bad.write_bytes(converted.read_bytes())
    with EllmFile(bad) as f:
        c = f.tensors["model.layers.2.mlp.up_proj.weight"].chunks[0]
    with open(bad, "r+b") as fh:
        fh.seek(c.offset + 3)
        b = fh.read(1)
        fh.seek(c.offset + 3)
        fh.write(bytes([b[0] ^ 1]))
    assert_one_line_error(cli("verify", bad), "model.layers.2.mlp.up_proj.weight")


def test_run_and_plan(converted):
    r = cli("run", converted, "-p", "Once upon a time", "--max-tokens", "20", "--stats", check=True)
    assert "Lily" in r.stdout and "decode:" in r.stderr and "tok/s" in r.stderr
    p = json.loads(cli("plan", converted, "--ram-budget", "3MB", "--context", "64", "--json", check=True).stdout)
    assert p["total"] <= p["budget"] and set(p["pinned"]) | set(p["streamed"]) == set(range(6))


def test_user_errors_are_one_line(converted, stories_dir, tmp_path):
    assert_one_line_error(cli("inspect", tmp_path / "nope.ellm"), "no such file")
    junk = tmp_path / "junk.ellm"
    junk.write_bytes(b"ELLM" + bytes(40))
    assert_one_line_error(cli("verify", junk), "junk.ellm")
    assert_one_line_error(cli("run", converted, "-p", "x", "--ram-budget", "10KB"), "minimum workable budget")
    assert_one_line_error(cli("run", converted, "-p", "x", "--device", "toaster"), "unknown device")
    out = tmp_path / "o.ellm"
    assert_one_line_error(cli("convert", tmp_path, "-o", out), "config.json")
    assert not out.exists()


def test_perplexity_with_reference(stories_ellm):
    from pathlib import Path

    text = Path(__file__).parent / "data" / "tinystory.txt"
    same = cli("perplexity", stories_ellm["f32"], "--text", text, "--reference", stories_ellm["f32"], check=True)
    assert "top-1 agreement 100.00%" in same.stdout and "mean KL 0.00000" in same.stdout
    q4 = cli(
        "perplexity",
        stories_ellm["q4"],
        "--text",
        text,
        "--reference",
        stories_ellm["f32"],
        "--window",
        "128",
        check=True,
    ).stdout
    ppl = float(q4.split("perplexity ")[1].split()[0])
    assert 1.0 < ppl < 20.0 and "top-1 agreement" in q4
