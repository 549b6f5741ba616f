"""`edgellm` command: one subcommand per module, each with `add_arguments(parser)` and `run(args)`."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import EdgeLLMError

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("demo", "no-download demo: build a synthetic model, stream it under RAM budgets on an emulated device"),
    "convert": ("convert", "convert a Hugging Face model directory into an .ellm file"),
    "inspect": ("inspect", "show an .ellm file's config, tensors, bytes per layer and compression"),
    "verify": ("verify", "check every checksum of an .ellm file"),
    "run": ("run", "generate text from a prompt"),
    "chat": ("chat", "chat with a model in the terminal (offline; line-per-turn when piped)"),
    "perplexity": ("perplexity", "perplexity of a text, and KL divergence / top-1 agreement vs a reference"),
    "bench": ("bench", "I/O-latency benchmark: load, TTFT, prefill/decode tok/s, bytes and time per layer; sweeps"),
    "plan": ("plan", "show what a RAM budget pins and streams, and the predicted speed on a device"),
    "analyze": ("analyze", "entropy and codec study of quantized weights: what compression saves, at what decode "
                           "cost, on which device"),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog="edgellm", description="Run LLMs on memory-starved devices.")
    parser.add_argument("--version", action="version", version=f"edgellm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(f".{module}", __package__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"edgellm: note: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _note          # library notices (e.g. a reduced context) as one line each
    try:
        return args._run(args) or 0
    except EdgeLLMError as e:
        print(f"edgellm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgellm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
