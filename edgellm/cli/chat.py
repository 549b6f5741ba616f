"""edgellm chat MODEL: an offline assistant in the terminal (or a line-per-turn filter when piped)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EdgeLLMError
from ..paths import cache_dir
from .options import text
from .run import add_model_arguments, add_sampling_arguments, format_stats, load_model, sampling_kwargs

CHAT_TEMP, CHAT_TOP_P = 0.7, 0.9      # chat defaults (mlx-lm and llama.cpp use similar ones)

HELP = """commands:
  /help          this text
  /reset         forget the conversation (keeps the system prompt)
  /stats         speed, time to first token, RAM vs budget and bytes read of the last reply
  /save FILE     write the conversation as JSON
  /load FILE     read a conversation written by /save
  /exit          leave (or Ctrl-D; Ctrl-C stops a reply, twice at the prompt leaves)"""


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--system", default=None, type=text("--system"), help="system prompt (default: none)")
    p.add_argument("--chat-template", default=None,
                   help="built-in template (chatml, llama2, llama3, mistral, plain) or a jinja file, instead of "
                        "the model's own (default: the model's, else plain)")
    add_sampling_arguments(p, temp=CHAT_TEMP, top_p=CHAT_TOP_P)
    p.description = f"{p.description or ''}. Sampling defaults for chat: temperature {CHAT_TEMP}, top-p {CHAT_TOP_P}."


class ChatLoop:
    def __init__(self, model, args, interactive: bool):
        self.model, self.args, self.interactive = model, args, interactive
        self.system = args.system
        self.messages = self._fresh()
        self.last_stats = None
        self.sampling = sampling_kwargs(args)
        model.chat_template(args.chat_template, self.notice)     # resolve now: errors and notices up front

    def _fresh(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def notice(self, text: str) -> None:
        print(f"[{text}]", file=sys.stderr, flush=True)

    # -- one turn ---------------------------------------------------------------------------------------
    def reply(self, text: str) -> None:
        # the conversation changes only once the reply has run (or was stopped): an error or a Ctrl-C before
        # leaves it as it was. The oldest turns are dropped here rather than inside Model.chat, so later turns
        # keep reusing the cache.
        messages, dropped = self.model.fit_chat(self.messages + [{"role": "user", "content": text}],
                                                max_tokens=self.sampling["max_tokens"],
                                                chat_template=self.args.chat_template)
        if dropped:
            self.notice(f"the conversation outgrew the context of {self.model.state.context} tokens: "
                        f"dropped its {dropped} oldest message(s)")
        parts, interrupted = [], False
        chunks = self.model.chat(messages, stream=True, chat_template=self.args.chat_template,
                                 on_notice=self.notice, **self.sampling)
        try:
            for c in chunks:
                parts.append(c.text)
                sys.stdout.write(c.text)
                sys.stdout.flush()
                if c.stats is not None:
                    self.last_stats = c.stats
        except KeyboardInterrupt:
            interrupted = True
        finally:
            chunks.close()
        self.messages = messages + [{"role": "assistant", "content": "".join(parts)}]
        sys.stdout.write("\n")
        if interrupted:
            self.notice("interrupted")
        if self.args.stats and self.last_stats is not None and not interrupted:
            print(format_stats(self.last_stats, self.model), file=sys.stderr)

    # -- commands ---------------------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a /command; False means exit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name == "/help":
            print(HELP)
        elif name == "/reset":
            self.messages = self._fresh()
            print("[conversation cleared]")
        elif name == "/stats":
            print(self.stats_text())
        elif name == "/save":
            self._save(arg)
        elif name == "/load":
            self._load(arg)
        else:
            print(f"unknown command {name}; /help lists them")
        return True

    def stats_text(self) -> str:
        if self.last_stats is None:
            return "no reply yet"
        return format_stats(self.last_stats, self.model)

    def _save(self, arg: str) -> None:
        if not arg:
            print("usage: /save FILE")
            return
        try:
            Path(arg).write_text(json.dumps({"messages": self.messages}, indent=1, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
            print(f"[saved {len(self.messages)} messages to {arg}]")
        except OSError as e:
            print(f"cannot save: {e.strerror or e}")

    def _load(self, arg: str) -> None:
        if not arg:
            print("usage: /load FILE")
            return
        try:
            data = json.loads(Path(arg).read_text(encoding="utf-8"))
            msgs = data["messages"] if isinstance(data, dict) else data
            if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in msgs):
                raise ValueError("messages need a role and a content string")
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"cannot load {arg}: {getattr(e, 'strerror', None) or e}")
            return
        self.messages = list(msgs)
        print(f"[loaded {len(msgs)} messages]")

    # -- loops --------------------------------------------------------------------------------------------
    def run_interactive(self) -> None:
        _readline()
        name = Path(self.args.model).name
        print(f"edgellm chat with {name} - /help for commands, Ctrl-D to leave", file=sys.stderr)
        armed = False          # a Ctrl-C at the prompt was just pressed
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
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            try:
                self.reply(line)
            except KeyboardInterrupt:      # Ctrl-C just before or after the reply streamed: a stop all the same
                self.notice("interrupted")
            except EdgeLLMError as e:      # e.g. a message too long for the context: say so and go on
                print(f"error: {e}", file=sys.stderr)

    def run_piped(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if line:
                self.reply(line)


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
    sampling_kwargs(args)                 # a bad flag fails before the model loads
    with load_model(args) as model:
        loop = ChatLoop(model, args, interactive=sys.stdin.isatty())
        if loop.interactive:
            loop.run_interactive()
        else:
            loop.run_piped()
    return 0
