"""Chat templates rendered the way Hugging Face transformers renders them, plus built-in fallbacks.

A model's tokenizer_config.json usually embeds a jinja chat template. We compile it with the same
sandboxed environment and helpers as transformers so a prompt is byte-identical to what the model
saw in training; tests/data/chat_templates.json holds transformers' own output to check that.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox

from edgellm.errors import EdgeLLMError

# Sources follow the official tokenizer_config.json templates of each family, whitespace included.
BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # Llama 2 chat ignores add_generation_prompt: a prompt ending in "[/INST]" already asks for an answer.
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
        "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
        "{% endif %}"
        "{% endfor %}"
    ),
    # bos_token is "<|begin_of_text|>" in Llama 3 tokenizers; the template takes it from the tokenizer.
    "llama3": (
        "{% set loop_messages = messages %}"
        "{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    # Mistral Instruct has no system role: the system prompt is prepended to the first user turn.
    "mistral": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set loop_messages = messages %}{% endif %}"
        "{{ bos_token }}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('After the optional system message, conversation roles must alternate"
        " user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{% if loop.first and system_message is defined %}"
        "{{ '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported, with the exception"
        " of an initial optional system message!') }}"
        "{% endif %}"
        "{% endfor %}"
    ),
    # For base models: no special tokens, and no space after "Assistant:" so the model's first token
    # can carry its own leading space as it would in running text.
    "plain": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n' }}"
        "{% else %}{{ message['role'] | capitalize + ': ' + message['content'] + '\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
}

NO_TEMPLATE_NOTICE = (
    "this model has no chat template; using a plain User:/Assistant: format (choose one with --chat-template)"
)


class ChatTemplateError(EdgeLLMError):
    """A chat template is unknown, malformed, fails while rendering, or was given bad messages."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja's own tojson HTML-escapes, which would corrupt prompts
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template; `render` turns messages into prompt text."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = "") -> None:
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._label = f"chat template {name!r}" if name else "chat template"

        def raise_exception(message: object) -> None:
            raise ChatTemplateError(f"{self._label}: {_one_line(message)}")

        # Templates come from downloaded models, so they run sandboxed, as in transformers.
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(
                f"{self._label} has a syntax error on line {e.lineno}: {_one_line(e.message)}"
            ) from None

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        _check_messages(messages)
        # transformers always passes tools/documents, and templates test `tools is not none`
        context = {"tools": None, "documents": None, "bos_token": self.bos_token, "eos_token": self.eos_token, **extra}
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **context)
        except ChatTemplateError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, ArithmeticError) as e:
            raise ChatTemplateError(f"{self._label} failed to render: {type(e).__name__}: {_one_line(e)}") from None


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list):
        raise ChatTemplateError(f"messages must be a list of dicts, not {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatTemplateError(f"messages[{i}] must be a dict, not {type(m).__name__}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise ChatTemplateError(f"messages[{i}] needs a string {key!r}")


def resolve(
    spec: str | None, embedded: str | list[dict] | dict[str, str] | None, *, bos_token: str = "", eos_token: str = ""
) -> tuple[ChatTemplate, str | None]:
    """Pick a chat template: `spec` (a built-in name, a file, or a name in the model's list of
    templates) or else the model's own (`embedded`, as tokenizer_config.json's chat_template).

    Returns the template and a notice for the user when falling back to the plain format.
    """
    named = _named_templates(embedded)
    tokens = {"bos_token": bos_token, "eos_token": eos_token}
    if spec is None:
        if named:
            if "default" not in named:
                raise ChatTemplateError(
                    f"this model has several chat templates and none is named 'default'; "
                    f"choose one with --chat-template: {', '.join(sorted(named))}"
                )
            return ChatTemplate(named["default"], name="embedded", **tokens), None
        if isinstance(embedded, str) and embedded:
            return ChatTemplate(embedded, name="embedded", **tokens), None
        return ChatTemplate(BUILTIN_TEMPLATES["plain"], name="plain", **tokens), NO_TEMPLATE_NOTICE
    if spec in named:
        return ChatTemplate(named[spec], name=spec, **tokens), None
    if spec in BUILTIN_TEMPLATES:
        return ChatTemplate(BUILTIN_TEMPLATES[spec], name=spec, **tokens), None
    path = Path(spec)
    if path.is_file():
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ChatTemplateError(f"cannot read chat template {spec}: {_one_line(e)}") from None
        return ChatTemplate(source, name=spec, **tokens), None
    choices = ", ".join([*BUILTIN_TEMPLATES, *named])
    raise ChatTemplateError(f"unknown chat template {spec!r}: not a file, nor one of {choices}")


def _named_templates(embedded: object) -> dict[str, str]:
    # tokenizer_config.json may hold a list of {"name", "template"} instead of one template string;
    # transformers keeps that in memory as a {name: template} dict
    if isinstance(embedded, dict):
        embedded = [{"name": k, "template": v} for k, v in embedded.items()]
    if not isinstance(embedded, list):
        return {}
    named = {}
    for item in embedded:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("template"), str)):
            raise ChatTemplateError('the model\'s chat_template list must hold {"name", "template"} strings')
        named[item["name"]] = item["template"]
    return named
