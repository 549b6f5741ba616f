"""The --quant recipes (edgellm/converter/recipe.py): which type and group each tensor gets, what the file
records, and that the mixed q4 recipe lowers the error on a real model it was not measured on."""

from __future__ import annotations

import numpy as np

import edgellm
from edgellm.cli.perplexity import score
from edgellm.converter.recipe import storage
from edgellm.format import EllmFile
from edgellm.models.base import TensorSpec

V = TensorSpec("model.layers.0.self_attn.v_proj.weight", (192, 576), "layer", 0, sensitive=True)
Q = TensorSpec("model.layers.0.self_attn.q_proj.weight", (576, 576), "layer", 0)
EMBED = TensorSpec("model.embed_tokens.weight", (49152, 576), "embed", -1)
HEAD = TensorSpec("lm_head.weight", (32000, 2048), "head", 22)
NORM = TensorSpec("model.norm.weight", (576,), "norm", 30)


def test_q4_widens_the_head_and_the_sensitive_matrices():
    assert storage(Q, "q4", 32, tied=True) == ("q4", 32)
    assert storage(V, "q4", 32, tied=True) == ("q8", 64)  # 576 columns: 64 is the widest group without padding
    assert storage(EMBED, "q4", 32, tied=True) == ("q8", 64)  # tied: the embedding table is the head
    assert storage(EMBED, "q4", 32, tied=False) == ("q4", 32)  # untied: only looked up, a row per token
    assert storage(HEAD, "q4", 32, tied=False) == ("q8", 128)
    assert storage(NORM, "q4", 32, tied=True) == ("f32", 32)


def test_pure_and_other_types_store_every_matrix_alike():
    for p in (Q, V, EMBED, HEAD):
        assert storage(p, "q4", 64, tied=True, pure=True) == ("q4", 64)
        assert storage(p, "q8", 32, tied=True) == ("q8", 32)
        assert storage(p, "f16", 32, tied=True) == ("f16", 32)
    assert storage(Q, "auto", 32, tied=True, source_dtype="Q4_0") == ("q4", 32)
    assert storage(Q, "auto", 32, tied=True, source_dtype="Q6_K") == ("q8", 32)


def _types(path) -> dict:
    with EllmFile(path) as f:
        return {n: (e.layout.stype, e.layout.group) for n, e in f.tensors.items()}, f.header["quant"]


def test_stories_q4_file_records_the_mix(stories_ellm, stories_dir, tmp_path):
    types, quant = _types(stories_ellm["q4"])
    assert quant == {"type": "q4", "group_size": 32, "pure": False}
    assert types["model.embed_tokens.weight"] == ("q8", 64)  # tied, 64 columns
    for name, t in types.items():
        if name.endswith("v_proj.weight"):
            assert t == ("q8", 64), name
        elif name.endswith("proj.weight"):
            assert t == ("q4", 32), name
        else:
            assert t[0] in ("f32", "q8"), name
    pure = edgellm.convert(stories_dir, tmp_path / "pure.ellm", quant="q4", pure=True, progress=False).path
    types, quant = _types(pure)
    assert quant["pure"] is True
    assert {t for n, t in types.items() if n.endswith(".weight") and "norm" not in n} == {("q4", 32)}


def test_mixed_q4_beats_pure_q4_on_stories(stories_ellm, stories_dir, tmp_path):
    """The recipe was chosen on SmolLM2; stories260K (another trained model, other shapes) must gain too."""
    pure = edgellm.convert(stories_dir, tmp_path / "pure.ellm", quant="q4", pure=True, progress=False).path
    text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. " * 6
    with edgellm.load(stories_ellm["f32"]) as ref:
        ids = ref.tokenizer.encode(text)
        kl = {}
        for label, path in (("mixed", stories_ellm["q4"]), ("pure", pure)):
            with edgellm.load(path) as m:
                kl[label] = score(m, ref, ids, 256)["kl_mean"]
    assert np.isfinite(kl["mixed"]) and kl["mixed"] < 0.8 * kl["pure"], kl


def test_cli_pure_flag(stories_dir, tmp_path):
    from edgellm.cli.main import main

    out = tmp_path / "p.ellm"
    assert main(["convert", str(stories_dir), "-o", str(out), "--pure"]) == 0
    assert _types(out)[1]["pure"] is True
