"""Chat templates: edgellm renders what transformers renders, and fails with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgellm.chat.templates import (
    BUILTIN_TEMPLATES,
    NO_TEMPLATE_NOTICE,
    ChatTemplate,
    ChatTemplateError,
    resolve,
)
from edgellm.errors import EdgeLLMError

REFERENCE = json.loads((Path(__file__).parent / "data" / "chat_templates.json").read_text(encoding="utf-8"))
CASES = [(name, i) for name, t in REFERENCE["templates"].items() for i in range(len(t["cases"]))]
HI = [{"role": "user", "content": "Hi"}]


def test_reference_covers_every_builtin():
    for name, source in BUILTIN_TEMPLATES.items():
        assert REFERENCE["templates"][name]["source"] == source, f"{name} changed: rerun tools/make_chat_reference.py"


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_matches_transformers(name, i):
    t = REFERENCE["templates"][name]
    case = t["cases"][i]
    tmpl = ChatTemplate(t["source"], bos_token=case["bos"], eos_token=case["eos"], name=name)
    got = tmpl.render(case["conversation"], add_generation_prompt=case["add_generation_prompt"], **case["extra"])
    assert got == case["expected"]


def test_raise_exception_becomes_chat_template_error():
    tmpl = ChatTemplate(BUILTIN_TEMPLATES["llama2"], name="llama2")
    with pytest.raises(ChatTemplateError, match="^chat template 'llama2': Conversation roles must alternate"):
        tmpl.render([{"role": "assistant", "content": "Hi"}])
    assert issubclass(ChatTemplateError, EdgeLLMError)


def test_raise_exception_message_is_one_line():
    with pytest.raises(ChatTemplateError) as e:
        ChatTemplate("{{ raise_exception('no\nway') }}").render(HI)
    assert str(e.value) == "chat template: no way"


@pytest.mark.parametrize(
    "messages,match",
    [
        ("Hi", "messages must be a list"),
        ([("user", "Hi")], r"messages\[0\] must be a dict"),
        ([{"role": "user", "content": "a"}, {"content": "b"}], r"messages\[1\] needs a string 'role'"),
        ([{"role": "user", "content": None}], r"messages\[0\] needs a string 'content'"),
        ([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "needs a string 'content'"),
    ],
)
def test_bad_messages_rejected(messages, match):
    with pytest.raises(ChatTemplateError, match=match):
        ChatTemplate(BUILTIN_TEMPLATES["chatml"]).render(messages)


def test_syntax_error_names_template():
    with pytest.raises(ChatTemplateError, match=r"^chat template 'mine' has a syntax error on line 2: ") as e:
        ChatTemplate("ok\n{% for m in messages %}", name="mine")
    assert "\n" not in str(e.value)


def test_render_error_is_chat_template_error():
    with pytest.raises(ChatTemplateError, match="^chat template 'x' failed to render: "):
        ChatTemplate("{{ messages[5]['content'] + 1 }}", name="x").render(HI)


def test_sandboxed():
    with pytest.raises(ChatTemplateError, match="failed to render"):
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}").render(HI)


def test_helpers_and_extra_kwargs():
    src = "{{ bos_token }}{{ greeting }}|{{ strftime_now('%Y') | length }}|{{ tools is none }}|{{ 'é' | tojson }}"
    assert ChatTemplate(src, bos_token="<s>").render(HI, greeting="hey") == '<s>hey|4|True|"é"'
    assert ChatTemplate("{{ bos_token }}", bos_token="<s>").render(HI, bos_token="B") == "B"


def test_resolve_none_uses_embedded():
    tmpl, notice = resolve(None, "{{ bos_token }}{{ messages[0]['content'] }}", bos_token="<s>")
    assert notice is None and tmpl.name == "embedded"
    assert tmpl.render(HI) == "<s>Hi"


def test_resolve_none_without_embedded_falls_back_to_plain():
    for embedded in (None, ""):
        tmpl, notice = resolve(None, embedded)
        assert notice == NO_TEMPLATE_NOTICE and "--chat-template" in notice
        assert tmpl.name == "plain"
        assert tmpl.render([{"role": "system", "content": "Be kind."}, *HI]) == "Be kind.\nUser: Hi\nAssistant:"


def test_resolve_builtin_overrides_embedded():
    tmpl, notice = resolve("llama3", "{{ 'embedded' }}", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    assert notice is None and tmpl.name == "llama3" and tmpl.source == BUILTIN_TEMPLATES["llama3"]
    assert (
        tmpl.render(HI, add_generation_prompt=False)
        == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    )


def test_resolve_file(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}", encoding="utf-8")
    tmpl, notice = resolve(str(path), None)
    assert notice is None and tmpl.name == str(path)
    assert tmpl.render(HI) == "[user] Hi"


def test_resolve_unknown_lists_builtins():
    with pytest.raises(ChatTemplateError) as e:
        resolve("no-such-template", None)
    msg = str(e.value)
    assert "'no-such-template'" in msg and "\n" not in msg
    assert all(name in msg for name in BUILTIN_TEMPLATES)


NAMED = [{"name": "tool_use", "template": "{{ 'tools' }}"}, {"name": "default", "template": "{{ 'chat' }}"}]


def test_list_form_picks_default():
    tmpl, notice = resolve(None, NAMED)
    assert notice is None and tmpl.render(HI) == "chat"
    assert resolve("tool_use", NAMED)[0].render(HI) == "tools"
    assert resolve(None, {t["name"]: t["template"] for t in NAMED})[0].render(HI) == "chat"
    assert resolve("chatml", NAMED)[0].name == "chatml"


def test_list_form_without_default():
    with pytest.raises(ChatTemplateError, match="none is named 'default'.*tool_use"):
        resolve(None, NAMED[:1])
    with pytest.raises(ChatTemplateError, match="chat_template list"):
        resolve(None, [{"name": "default"}])
