"""edgellm chat MODEL: an offline assistant in the terminal (or a line-per-turn filter when piped)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgeLLMError
from ..paths import cache_dir
from .options import text
from .run import add_model_arguments, add_sampling_arguments, format_stats, load_model, sampling_kwargs

CHAT_TEMP, CHAT_TOP_P = 0.7, 0.9  # chat defaults (mlx-lm and llama.cpp use similar ones)

HELP = """commands:
  /help          this text
  /reset         forget the conversation (keeps the system prompt)
  /stats         speed, time to first token, RAM vs budget and bytes read of the last reply
  /save FILE     write the conversation as JSON
  /load FILE     read a conversation written by /save
  /exit          leave (or Ctrl-D; Ctrl-C stops a reply, twice at the prompt leaves)
  //TEXT         send /TEXT (a line starting with one / is a command)"""

RS = "\x1e"  # ASCII record separator: the line that ends each reply in piped mode (replies never hold one)

PIPED_HELP = (
    "Piped (stdin not a terminal): each non-blank line is one user turn, and stdout carries only the replies, "
    "each as its text, a newline, then a line holding only the ASCII record separator RS (0x1E; an RS the model "
    "writes becomes U+FFFD), so a reply with blank lines in it still splits unambiguously; one cut short by "
    "Ctrl-C (exit 130) has no RS line. Commands (/help /reset /stats /save /load /exit) work there too and "
    "write to stderr; an unknown one is refused with one line on stderr and never reaches the model. "
    '--jsonl, for programs: each non-blank input line (plain text, a /command, or {"content": "..."}) '
    'gets exactly one JSON line back: {"role": "assistant", "content": ..., "finish_reason": ...} '
    '(with "stats" under --stats), {"command": ..., "ok": ..., "text": ...}, or {"error": ...} '
    "(the session goes on)."
)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--system", default=None, type=text("--system"), help="system prompt (default: none)")
    p.add_argument(
        "--chat-template",
        default=None,
        help="built-in template (chatml, llama2, llama3, mistral, plain) or a jinja file, instead of "
        "the model's own (default: the model's, else plain)",
    )
    add_sampling_arguments(p, temp=CHAT_TEMP, top_p=CHAT_TOP_P)
    p.add_argument("--jsonl", action="store_true", help="JSON lines in and out, for programs (see below)")
    p.epilog = PIPED_HELP
    p.description = f"{p.description or ''}. Sampling defaults for chat: temperature {CHAT_TEMP}, top-p {CHAT_TOP_P}."


class ChatLoop:
    def __init__(self, model, args, interactive: bool):
        self.model, self.args, self.interactive = model, args, interactive
        self.system = args.system
        self.messages = self._fresh()
        self.last_stats = None
        self.sampling = sampling_kwargs(args)
        model.chat_template(args.chat_template, self.notice)  # resolve now: errors and notices up front

    def _fresh(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def notice(self, text: str) -> None:
        print(f"[{text}]", file=sys.stderr, flush=True)

    # -- one turn ---------------------------------------------------------------------------------------
    def generate(self, text: str, write) -> tuple[str, str | None, bool]:
        """One user turn, its reply streamed to `write`; returns (reply, finish reason, stopped by Ctrl-C).
        In a terminal a Ctrl-C stops the reply; piped, it ends the program (one line, exit 130)."""
        # the conversation changes only once the reply has run (or was stopped): an error or a Ctrl-C before
        # leaves it as it was. The oldest turns are dropped here rather than inside Model.chat, so later turns
        # keep reusing the cache.
        messages, dropped = self.model.fit_chat(
            self.messages + [{"role": "user", "content": text}],
            max_tokens=self.sampling["max_tokens"],
            chat_template=self.args.chat_template,
        )
        if dropped:
            self.notice(
                f"the conversation outgrew the context of {self.model.state.context} tokens: "
                f"dropped its {dropped} oldest message(s)"
            )
        parts, finish, interrupted = [], None, False
        chunks = self.model.chat(
            messages, stream=True, chat_template=self.args.chat_template, on_notice=self.notice, **self.sampling
        )
        try:
            for c in chunks:
                parts.append(c.text)
                write(c.text)
                if c.stats is not None:
                    self.last_stats, finish = c.stats, c.finish_reason
        except KeyboardInterrupt:
            if not self.interactive:
                raise
            interrupted = True
        finally:
            chunks.close()
        reply = "".join(parts)
        self.messages = messages + [{"role": "assistant", "content": reply}]
        return reply, finish, interrupted

    def reply(self, text: str) -> None:
        """A turn in the terminal, or piped: the reply streams to stdout (piped: then the RS line)."""
        piped = not self.interactive
        _, _, interrupted = self.generate(text, _stdout_writer(RS if piped else None))
        sys.stdout.write(f"\n{RS}\n" if piped else "\n")
        sys.stdout.flush()
        if interrupted:
            self.notice("interrupted")
        if self.args.stats and self.last_stats is not None and not interrupted:
            print(format_stats(self.last_stats, self.model), file=sys.stderr)

    def reply_json(self, text: str) -> dict:
        """A --jsonl turn: the reply as one JSON object."""
        reply, finish, _ = self.generate(text, lambda piece: None)
        out = {"role": "assistant", "content": reply, "finish_reason": finish}
        if self.args.stats and self.last_stats is not None:
            out["stats"] = self.last_stats.as_dict()
        return out

    # -- commands ---------------------------------------------------------------------------------------
    def command(self, line: str) -> Said:
        """Run a /command: what it says (printed by the loop), whether it worked, whether to leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit", "/bye"):
            return Said(name, "", leave=True)
        if name == "/help":
            return Said(name, HELP)
        if name == "/reset":
            self.messages = self._fresh()
            return Said(name, "[conversation cleared]")
        if name == "/stats":
            stats = self.last_stats.as_dict() if self.last_stats is not None else None
            return Said(name, self.stats_text(), data={"stats": stats})
        if name == "/save":
            return self._save(arg)
        if name == "/load":
            return self._load(arg)
        return Said(name, f"unknown command {name}; /help lists them", ok=False)

    def stats_text(self) -> str:
        if self.last_stats is None:
            return "no reply yet"
        return format_stats(self.last_stats, self.model)

    def _save(self, arg: str) -> Said:
        if not arg:
            return Said("/save", "usage: /save FILE", ok=False)
        try:
            Path(arg).write_text(
                json.dumps({"messages": self.messages}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        except OSError as e:
            return Said("/save", f"cannot save: {e.strerror or e}", ok=False)
        return Said("/save", f"[saved {len(self.messages)} messages to {arg}]")

    def _load(self, arg: str) -> Said:
        if not arg:
            return Said("/load", "usage: /load FILE", ok=False)
        try:
            data = json.loads(Path(arg).read_text(encoding="utf-8"))
            msgs = data["messages"] if isinstance(data, dict) else data
            if not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs
            ):
                raise ValueError("messages need a role and a content string")
        except (OSError, ValueError, KeyError, TypeError) as e:
            return Said("/load", f"cannot load {arg}: {getattr(e, 'strerror', None) or e}", ok=False)
        self.messages = list(msgs)
        return Said("/load", f"[loaded {len(msgs)} messages]")

    # -- loops --------------------------------------------------------------------------------------------
    def run_interactive(self) -> None:
        _readline()
        name = Path(self.args.model).name
        print(f"edgellm chat with {name} - /help for commands, Ctrl-D to leave", file=sys.stderr)
        armed = False  # a Ctrl-C at the prompt was just pressed
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                if armed:
                    print()
                    return
                print("\n[Ctrl-C again or Ctrl-D to leave]", file=sys.stderr)
                armed = True
                continue
            armed = False
            line = line.strip()
            if not line:
                continue
            if is_command(line):
                said = self.command(line)
                if said.text:
                    print(said.text)
                if said.leave:
                    return
                continue
            try:
                self.reply(unescape(line))
            except KeyboardInterrupt:  # Ctrl-C just before or after the reply streamed: a stop all the same
                self.notice("interrupted")
            except EdgeLLMError as e:  # e.g. a message too long for the context: say so and go on
                print(f"error: {e}", file=sys.stderr)

    def run_piped(self) -> None:
        """stdin not a terminal: a turn per line, replies on stdout (PIPED_HELP); a Ctrl-C or an error ends it."""
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            if is_command(line):
                said = self.command(line)
                if said.text:
                    print(said.text, file=sys.stderr, flush=True)
                if said.leave:
                    return
                continue
            self.reply(unescape(line))

    def run_jsonl(self) -> None:
        """--jsonl: one JSON line out per non-blank line in (PIPED_HELP); an error answers its line only."""
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            if is_command(line):
                said = self.command(line)
                _emit({"command": said.name, "ok": said.ok, "text": said.text, **said.data})
                if said.leave:
                    return
                continue
            try:
                _emit(self.reply_json(json_turn(line)))
            except EdgeLLMError as e:
                _emit({"error": str(e)})


@dataclass
class Said:
    """What a /command answered: `text` for the person (stdout in a terminal, stderr when piped), `ok` False
    when it was refused or failed, `leave` for /exit, `data` extra fields of its --jsonl line."""

    name: str
    text: str
    ok: bool = True
    leave: bool = False
    data: dict = field(default_factory=dict)


def is_command(line: str) -> bool:
    return line.startswith("/") and not line.startswith("//")


def unescape(line: str) -> str:
    """`//text` sends `/text`."""
    return line[1:] if line.startswith("//") else line


def json_turn(line: str) -> str:
    """A --jsonl input line's user text: a JSON object {"content": "..."} (role, if given, "user"), or plain."""
    if not line.startswith("{"):
        return unescape(line)
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise EdgeLLMError(f"cannot read the JSON line: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("content"), str):
        raise EdgeLLMError('a JSON line must be an object with a "content" string')
    if obj.get("role", "user") != "user":
        raise EdgeLLMError(f"a JSON line is a user turn; got role {obj['role']!r}")
    return obj["content"]


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _stdout_writer(forbidden: str | None):
    """Write streamed text to stdout at once; `forbidden` (the RS) becomes U+FFFD."""

    def write(piece: str) -> None:
        sys.stdout.write(piece.replace(forbidden, "\ufffd") if forbidden else piece)
        sys.stdout.flush()

    return write


def _readline() -> None:
    """Line editing and a persistent history, where the platform has readline."""
    try:
        import atexit
        import readline
    except ImportError:
        return
    hist = cache_dir() / "chat_history"
    try:
        hist.parent.mkdir(parents=True, exist_ok=True)
        if hist.is_file():
            readline.read_history_file(hist)
        readline.set_history_length(1000)
        atexit.register(_save_history, readline, hist)
    except OSError:
        pass


def _save_history(readline, hist) -> None:
    try:
        readline.write_history_file(hist)
    except OSError:
        pass


def run(args) -> int:
    sampling_kwargs(args)  # a bad flag fails before the model loads
    with load_model(args, draft=args.draft) as model:
        loop = ChatLoop(model, args, interactive=sys.stdin.isatty() and not args.jsonl)
        if args.jsonl:
            loop.run_jsonl()
        elif loop.interactive:
            loop.run_interactive()
        else:
            loop.run_piped()
    return 0
