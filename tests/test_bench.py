"""edgellm bench / demo / recode and the device-aware codec choice."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import synthetic_ellm

import edgellm
from edgellm.bench.bench import budget_bytes, format_table, parse_sweep, run_bench
from edgellm.cli.main import main
from edgellm.errors import EdgeLLMError
from edgellm.format import EllmFile, codecs
from edgellm.format.recode import recode

RUN_KEYS = {
    "config",
    "budget_bytes",
    "plan_bytes",
    "streamed_units",
    "pinned_units",
    "streamed_bytes_per_token",
    "load_s",
    "ttft_s",
    "prefill_tps",
    "decode_tps",
    "decode_bytes_per_token",
    "read_s",
    "decompress_s",
    "compute_s",
    "wait_s",
    "overlap",
    "peak_rss_bytes",
    "rss_over_baseline_bytes",
    "baseline_rss_bytes",
    "predicted_tps",
    "flash_bound_tps",
    "measured_vs_predicted",
    "ratio_vs_first",
    "per_layer",
    "trace",
    "token_times",
}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A 6-layer model large enough that budgets below its size stream layers."""
    return synthetic_ellm(
        tmp_path_factory.mktemp("bench"),
        quant="q4",
        codec="zstd",
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=256,
    )


def test_parse_sweep_and_budgets():
    assert parse_sweep(["budget=25%,50%", "codec=raw,zstd"]) == {"budget": ["25%", "50%"], "codec": ["raw", "zstd"]}
    for bad in (["budget"], ["speed=1,2"], ["codec=brotli"], ["budget="]):
        with pytest.raises(EdgeLLMError):
            parse_sweep(bad)
    assert budget_bytes("50%", 1000) == 500
    assert budget_bytes("2MB", 1000) == 2_000_000
    assert budget_bytes(None, 1000) is None
    with pytest.raises(EdgeLLMError):
        budget_bytes("x%", 1000)


def test_bench_budget_sweep_schema_and_ratios(small_model, tmp_path):
    r = run_bench(
        small_model,
        prompt_tokens=8,
        gen_tokens=5,
        repeat=2,
        device="rpi5-nvme",
        sweep=parse_sweep(["budget=1%,90%,300%"]),
        trace_tokens=2,
    )
    json.dumps(r)  # the --json output is plain JSON
    bad, low, high = r["runs"]
    assert "minimum workable budget" in bad["error"]  # too small: reported in the table, the rest still run
    for run in (low, high):
        assert RUN_KEYS <= set(run), RUN_KEYS - set(run)
        assert len(run["decode_tps"]["values"]) == 2 and run["decode_tps"]["mean"] > 0
        assert run["plan_bytes"] <= run["budget_bytes"]
        assert {"unit", "streamed", "read_s", "decompress_s", "compute_s", "wait_s"} <= set(run["per_layer"][0])
        assert {e[0] for e in run["trace"]} <= {"read", "decompress", "compute", "wait"}
    assert low["streamed_units"] > 0 and low["decode_bytes_per_token"] > 0
    assert {e[0] for e in low["trace"]} >= {"read", "decompress", "compute"}
    # nothing streamed: only embedding rows, fetched on demand, are read per token
    assert high["streamed_units"] == 0 and high["decode_bytes_per_token"] < low["decode_bytes_per_token"] / 10
    # ratio_vs_first: each row's decode tok/s over the first row that ran (the failed one has none)
    assert "ratio_vs_first" not in bad
    first_tps = low["decode_tps"]["mean"]
    assert first_tps > 0
    for run in (low, high):
        assert run["ratio_vs_first"] == pytest.approx(run["decode_tps"]["mean"] / first_tps)
    table = format_table(r)
    assert "budget=90%" in table and "error" in table
    row = next(line for line in table.splitlines() if line.startswith("budget=300%"))
    assert row.endswith(f" {high['ratio_vs_first']:>6.2f}")  # the table's last column


def test_bench_codec_sweep_recodes(small_model):
    r = run_bench(small_model, prompt_tokens=4, gen_tokens=3, ram_budget="90%", sweep=parse_sweep(["codec=raw,lz4"]))
    assert [x["config"]["codec"] for x in r["runs"]] == ["raw", "lz4"]
    assert all("error" not in x for x in r["runs"])
    assert not [p for p in os.listdir(small_model.parent) if p.startswith("edgellm-bench-")]  # temp copies gone


def test_recode_keeps_outputs_and_uses_the_codec(small_model, tmp_path):
    out = tmp_path / "raw.ellm"
    recode(small_model, out, "raw")
    with EllmFile(out) as f:
        assert {c.codec for e in f.entries for c in e.chunks} == {"raw"}
        assert f.header["codec"]["mode"] == "raw"
    ids = [1, 5, 9, 30]
    with edgellm.load(small_model) as a, edgellm.load(out) as b:
        np.testing.assert_array_equal(a.logits(ids), b.logits(ids))


def test_codec_choice_depends_on_the_device():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    # 4-bit symbols with a skewed distribution: compressible, but only by an entropy coder
    skew = rng.choice(16, size=1 << 17, p=np.r_[0.5, np.full(15, 0.5 / 15)]).astype(np.uint8)
    nibbles = (skew[0::2] | (skew[1::2] << 4)).tobytes()
    slow = codecs.CostModel(read_mb_s=40.0, cpu_scale=0.4)  # an SD card: every byte saved counts
    fast = codecs.CostModel(read_mb_s=20000.0, cpu_scale=0.4)  # faster flash than zstd decodes
    assert codecs.choose(noise, "auto", 3, slow)[0] == "raw"  # nothing to gain anywhere
    assert codecs.choose(nibbles, "auto", 3, slow)[0] == "zstd"
    assert codecs.choose(nibbles, "auto", 3, fast)[0] == "raw"
    codec, stored = codecs.choose(nibbles, "auto", 3, slow)
    assert slow.seconds(len(stored), len(nibbles), codec) < slow.seconds(len(nibbles), len(nibbles), "raw")


def test_bench_cli_json_and_plot(small_model, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert (
        main(
            [
                "bench",
                str(small_model),
                "--ram-budget",
                "90%",
                "--prompt-tokens",
                "4",
                "--gen-tokens",
                "3",
                "--json",
                str(js),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "per layer" in out and "decode tok/s" in out
    assert json.loads(js.read_text())["runs"][0]["decode_tps"]["mean"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.ellm")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]


def test_demo_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGELLM_CACHE", str(tmp_path))
    args = [
        "demo",
        "--preset",
        "tiny",
        "--budgets",
        "2MB,4MB",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "3",
        "--plot",
        str(tmp_path / "d.svg"),
    ]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "building the demo model" in first.err
    assert "weights are random" in first.out and "budget=2MB" in first.out
    assert (tmp_path / "d.svg").read_text().lstrip().startswith("<?xml")
    assert main(args) == 0  # the second run reuses the cached model
    assert "building" not in capsys.readouterr().err


def test_demo_real_model_answers_under_half_its_size(tmp_path, monkeypatch, capsys, shared_dir):
    """The real-model demo on ../shared's SmolLM2 GGUF (EDGELLM_DEMO_GGUF: the tests never download)."""
    gguf = shared_dir / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip("SmolLM2 GGUF is not present in ../shared")
    monkeypatch.setenv("EDGELLM_CACHE", str(tmp_path))
    monkeypatch.setenv("EDGELLM_DEMO_GGUF", str(gguf))
    args = ["demo", "--budgets", "60%", "--prompt-tokens", "4", "--gen-tokens", "3", "--plot", str(tmp_path / "d.svg")]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "converting" in out.err and "auto" in out.err  # the GGUF imported once
    assert "Paris" in out.out and "a real chat model" in out.out and "budget=60%" in out.out


def test_demo_falls_back_to_the_synthetic_model_when_the_real_one_cannot_be_had(tmp_path, monkeypatch, capsys):
    from edgellm.bench import demo

    monkeypatch.setenv("EDGELLM_CACHE", str(tmp_path))
    monkeypatch.setenv("EDGELLM_DEMO_GGUF", str(tmp_path / "absent.gguf"))
    asked = []
    build = demo.demo_model

    def tiny_instead(preset, rebuild=False, log=print):
        asked.append(preset)
        return build("tiny", rebuild, log)  # the demo shape takes minutes to build on 2 cores

    monkeypatch.setattr(demo, "demo_model", tiny_instead)
    assert main(["demo", "--budgets", "2MB", "--prompt-tokens", "4", "--gen-tokens", "3", "--plot", ""]) == 0
    out = capsys.readouterr()
    assert asked == ["demo"]
    assert "could not be fetched" in out.err and "weights are random" in out.out
