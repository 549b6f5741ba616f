"""Flags several commands share, each defined once: its help (with its default), and where it is checked.

Flag syntax (an int that is not an int) is argparse's business; ranges are checked by edgellm.generate.params,
the same code the Python API runs, so the CLI and load()/stream() agree on what is allowed.
"""

from __future__ import annotations

import argparse

from ..generate.params import SamplingParams, clean_text
from ..runtime.budget import BUDGET_HELP
from ..source import DEFAULT_QUANT, GGUF_QUANT

MODEL_HELP = (
    ".ellm file, or a Hugging Face model directory or .gguf file (converted once into the cache directory, then reused)"
)


def _quant_choices() -> tuple[str, ...]:
    from ..quant import QUANT_CHOICES

    return QUANT_CHOICES


def device_names() -> str:
    """The built-in device profiles, for help texts (the .toml files ship inside the package)."""
    from ..runtime.device import list_devices

    return ", ".join(list_devices())


def text(flag: str):
    """An argparse type for free text: undecodable argv bytes (lone surrogates) become U+FFFD, with a note."""
    return lambda value: clean_text(value, flag)


def add_model_argument(p, model_help: str = MODEL_HELP) -> None:
    p.add_argument("model", help=model_help)
    p.add_argument(
        "--quant",
        default=None,
        choices=_quant_choices(),
        help=f"storage type when MODEL is a Hugging Face directory or a GGUF file converted on first use "
        f"(default: {DEFAULT_QUANT} for a directory, {GGUF_QUANT} for GGUF: its own types where ours hold them "
        "exactly)",
    )


def add_budget_argument(p) -> None:
    p.add_argument(
        "--ram-budget",
        default=None,
        help=f"RAM budget: {BUDGET_HELP} (default: half the available memory)".replace("%", "%%"),
    )


def add_device_argument(
    p,
    what: str = "device profile to emulate (throttles reads to its flash)",
    default: str | None = None,
    none_means: str = "none: this machine's own disk",
) -> None:
    p.add_argument(
        "--device",
        default=default,
        help=f"{what}: {device_names()}, or the path of a .toml profile"
        + ("" if default else f" (default: {none_means})"),
    )


def add_threads_argument(p) -> None:
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: the physical cores)")


def add_context_argument(p, none_means: str = "min(the model's, 2048), halved down to 256 to fit the budget"):
    p.add_argument("--context", type=int, default=None, help=f"context length in tokens (default: {none_means})")


def add_slots_argument(p) -> None:
    p.add_argument(
        "--slots",
        type=int,
        default=2,
        help="stream slots: buffers that layers which do not fit the budget stream through",
    )


def add_cluster_arguments(p) -> None:
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the layers on several nodes over Ray (pip install 'edgellm[cluster]'): auto (the Ray cluster "
        "this machine is in), a Ray address, or local:N (N stage processes here); default: this process",
    )
    p.add_argument(
        "--node-budget",
        default=None,
        metavar="SIZE[,SIZE...]",
        help="RAM budget of each node with --cluster: one for all or one per node (bytes, 300MB, 50%% of the "
        "file); default: half of each node's available memory",
    )


def add_runtime_arguments(p) -> None:
    """Everything edgellm.load() takes besides the model."""
    add_budget_argument(p)
    add_cluster_arguments(p)
    add_device_argument(p)
    add_threads_argument(p)
    add_context_argument(p)
    add_slots_argument(p)
    flag = p.add_argument("--direct-io", action=argparse.BooleanOptionalAction, default=True)
    # set after: BooleanOptionalAction would append "(default: True)" to a help given to it
    flag.help = "read streamed layers with O_DIRECT (the default), or buffered reads + fadvise(DONTNEED)"


def add_sampling_arguments(p, temp: float = 0.0, top_p: float = 1.0) -> None:
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate")
    p.add_argument("--temp", type=float, default=temp, help="sampling temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=top_p, help="nucleus sampling mass, in (0, 1] (1: off)")
    p.add_argument(
        "--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability, in [0, 1] (0: off)"
    )
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty, > 0 (1.0: off)")
    p.add_argument(
        "--seed", type=int, default=None, help="random seed for reproducible sampling (default: a fresh one each run)"
    )
    p.add_argument(
        "--stop",
        action="append",
        default=None,
        type=text("--stop"),
        help="stop string, repeatable (default: none; the model's end-of-text token always stops)",
    )
    p.add_argument("--stats", action="store_true", help="print speed, memory and I/O statistics to stderr")
    add_speculative_arguments(p)


def add_speculative_arguments(p) -> None:
    p.add_argument(
        "--speculative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draft tokens by prompt lookup and verify several per pass over the weights: the output is the same, "
        "greedy token for token (default: on wherever that holds, i.e. every matrix quantized)",
    )
    p.add_argument(
        "--draft",
        default=None,
        metavar="PATH",
        help="a small model with the same vocabulary (.ellm, or what MODEL takes) that drafts instead of prompt "
        "lookup; pinned whole inside the RAM budget (default: none)",
    )


def sampling_params(args) -> SamplingParams:
    """The sampling flags, checked now (before the model loads) by the same code Model.stream runs."""
    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repeat_penalty,
        seed=args.seed,
        stop=tuple(args.stop or ()),
        speculative=args.speculative,
    )
