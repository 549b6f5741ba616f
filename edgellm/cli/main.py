"""`edgellm` command: one subcommand per module, each with `add_arguments(parser)` and `run(args)`.

Every user error ends as one line `edgellm: error: ...` on stderr and a non-zero exit: EdgeLLMError from the
library, and argparse's own complaints (after the subcommand's usage). Anything else is a bug and keeps its
traceback. Input text is UTF-8; invalid bytes become U+FFFD with one `edgellm: note:` line.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import os
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
    "serve": ("serve", 'OpenAI-compatible HTTP server for a model (needs the extra: pip install "edgellm[server]")'),
    "perplexity": ("perplexity", "perplexity of a text, and KL divergence / top-1 agreement vs a reference"),
    "bench": ("bench", "I/O-latency benchmark: load, TTFT, prefill/decode tok/s, bytes and time per layer; sweeps"),
    "plan": ("plan", "show what a RAM budget pins and streams, and the predicted speed on a device"),
    "analyze": (
        "analyze",
        "entropy and codec study of quantized weights: what compression saves, at what decode cost, on which device",
    ),
}
STDIN_ERRORS = "edgellm.replace"  # codec error handler for stdin: U+FFFD plus one note


class Parser(argparse.ArgumentParser):
    """argparse with edgellm's error line: the (sub)command's usage, then `edgellm: error: ...`."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"edgellm: error: {message}\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the text already speaks of its default; an option
    whose default is None or False has its text say what that means instead of printing "None"."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
        ):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="edgellm", description="Run LLMs on memory-starved devices.", formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgellm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        mod = importlib.import_module(f".{module}", __package__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"edgellm: note: {message}", file=sys.stderr)


_stdin_noted = False  # _replace_noted has printed its note


def _replace_noted(exc: UnicodeError) -> tuple[str, int]:
    """Decode error handler for stdin: U+FFFD for each bad sequence; the note once per process."""
    global _stdin_noted
    if not isinstance(exc, (UnicodeDecodeError, UnicodeEncodeError, UnicodeTranslateError)):
        raise exc
    if not _stdin_noted:
        _stdin_noted = True
        print("edgellm: note: standard input: invalid UTF-8 replaced with U+FFFD", file=sys.stderr, flush=True)
    return "\ufffd", exc.end


def _utf8_stdin() -> None:
    """Read stdin as UTF-8 whatever the locale, invalid bytes repaired (README: the CLI's input rule)."""
    codecs.register_error(STDIN_ERRORS, _replace_noted)
    try:
        sys.stdin.reconfigure(encoding="utf-8", errors=STDIN_ERRORS)  # type: ignore[union-attr]
    except (AttributeError, ValueError):  # not a text file (None, or a test's StringIO), or already read
        pass


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the edgellm process itself: Ctrl-C handled from this line on
        from ..interrupts import run_program

        return run_program(main, sys.argv[1:])
    warnings.showwarning = _note  # library notices (a reduced context, repaired text) as one line each
    _utf8_stdin()
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # reported by the subcommand, so its usage is the one shown
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if sys.stderr.isatty():  # someone is watching: a first run's compile must not look like a hang
        from ..kernels.compiling import NOTICE, on_first_compile

        on_first_compile(lambda: print(f"edgellm: note: {NOTICE}", file=sys.stderr, flush=True))
    try:
        return args._run(args) or 0
    except EdgeLLMError as e:
        print(f"edgellm: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgellm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgellm ... | head`: stop quietly, and let exit's flush not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def one_line(e: Exception) -> str:
    """An error's message on one line (a tokenizer's or a parser's message may span several)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return "; ".join(lines) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
