"""edgellm perplexity MODEL --text FILE [--reference REF.ellm]"""

from __future__ import annotations

import numpy as np

from ..generate.params import check_int
from .run import add_model_arguments, load_model


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--text", required=True, help="UTF-8 text file to score (invalid bytes become U+FFFD, with a note)")
    p.add_argument(
        "--reference",
        default=None,
        help="a reference model (e.g. the f32 conversion; a Hugging Face directory is converted to f32): "
        "also report mean KL divergence and top-1 agreement per token (default: none)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="tokens per window, at least 2 and at most the context (default: the context length)",
    )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def windows(ids: list[int], size: int, bos: int | None) -> list[list[int]]:
    """Non-overlapping windows, each starting with BOS so every one is scored from a fresh context."""
    step = size - (bos is not None)
    body = ids[1:] if bos is not None and ids and ids[0] == bos else ids
    return [
        ([bos] if bos is not None else []) + body[i : i + step]
        for i in range(0, len(body), step)
        if len(body[i : i + step]) > 1 or bos is not None
    ]


def score(model, ref, ids: list[int], size: int) -> dict:
    nll, kl, agree, n = 0.0, 0.0, 0, 0
    for w in windows(ids, size, model.tokenizer.bos_id):
        lp = _log_softmax(model.logits(w))[:-1]
        target = np.asarray(w[1:])
        nll -= lp[np.arange(len(target)), target].sum()
        if ref is not None:
            rp = _log_softmax(ref.logits(w))[:-1]
            kl += (np.exp(rp) * (rp - lp)).sum()
            agree += int((rp.argmax(-1) == lp.argmax(-1)).sum())
        n += len(target)
    out = {"tokens": n, "perplexity": float(np.exp(nll / max(n, 1)))}
    if ref is not None:
        out.update(kl_mean=float(kl / max(n, 1)), top1_agreement=agree / max(n, 1))
    return out


def read_text(path: str) -> str:
    """A text file as str: read as bytes, decoded as UTF-8 with invalid bytes replaced (and a note)."""
    from ..errors import EdgeLLMError
    from ..generate.params import decode_utf8

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise EdgeLLMError(f"{path}: cannot read: {e.strerror}") from None
    return decode_utf8(data, path)


def run(args) -> int:
    from .. import load
    from ..errors import EdgeLLMError

    if args.window is not None:
        check_int("--window", args.window, 2)
    text = read_text(args.text)
    with load_model(args) as model:
        ids = model.tokenizer.encode(text)
        size = args.window or model.state.context
        check_int("--window", size, 2, model.state.context)
        ref = load(args.reference, context=size, quant="f32") if args.reference else None
        try:
            r = score(model, ref, ids, size)
        finally:
            if ref is not None:
                ref.close()
    if r["tokens"] == 0:
        raise EdgeLLMError(f"{args.text}: nothing to score: the text has no tokens to predict")
    line = f"{args.model}: perplexity {r['perplexity']:.4f} over {r['tokens']} tokens"
    if ref is not None:
        line += (
            f"; vs {args.reference}: mean KL {r['kl_mean']:.5f} nats/token, top-1 agreement "
            f"{100 * r['top1_agreement']:.2f}%"
        )
    print(line)
    return 0
