#!/usr/bin/env python3
"""Makes the chat-template cases of spark-tp's tests (run with Debian's python3-jinja2):

    /usr/bin/python3 tools/make_chat_template_cases.py [spark-tp/src/test/resources/chat/cases.json]

The templates below are written for these tests (no published template is copied); they use the constructs
published chat templates use: namespace(), messages[::-1], messages[1:], `is string`, `is mapping`,
`is defined`, .startswith(), .endswith(), .strip(), .lstrip(chars), .rstrip(chars), .split(), .upper(),
loop.first / loop.last / loop.index0, break / continue, dict .items(), |tojson (with indent), |trim, |length,
bos_token / eos_token, add_generation_prompt, caller variables (enable_thinking), strftime_now and
raise_exception. Each case is rendered with real jinja2 configured as transformers' apply_chat_template
configures it (chat_template_utils._compile_jinja_template: ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, the loopcontrols extension, its tojson, raise_exception and strftime_now), so the expected
strings come from jinja2, not from the Java code under test. strftime_now reads a fixed time,
2026-03-05 14:07:09 (the Java test sets the same clock).
"""
import datetime
import json
import os
import sys

import jinja2
from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = datetime.datetime(2026, 3, 5, 14, 7, 9)


class Raised(Exception):
    pass


def raise_exception(message):
    raise Raised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return NOW.strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# A ChatML-style template with a thinking switch: the last user turn found by walking messages[::-1] with a
# namespace, reasoning cut out of earlier assistant turns with .split(), roles checked with raise_exception.
THINKING = """{%- set ns = namespace(last_user=-1, system='') -%}
{%- for m in messages[::-1] -%}
  {%- if ns.last_user == -1 and m.role == 'user' -%}
    {%- set ns.last_user = messages|length - 1 - loop.index0 -%}
  {%- endif -%}
{%- endfor -%}
{%- if messages[0].role == 'system' and messages[0].content is string -%}
  {%- set ns.system = messages[0].content.strip() -%}
{%- endif -%}
{%- if ns.system %}<|im_start|>system
{{ ns.system }}<|im_end|>
{% endif %}
{%- for m in messages -%}
  {%- if m.role not in ['system', 'user', 'assistant'] -%}
    {{ raise_exception('Unknown role ' ~ m.role ~ ': roles are system, user and assistant') }}
  {%- endif -%}
  {%- if m.role == 'system' -%}
    {%- continue -%}
  {%- endif -%}
  {%- set content = m.content -%}
  {%- if m.role == 'assistant' and '</think>' in content -%}
    {%- if loop.index0 < ns.last_user -%}
      {%- set content = content.split('</think>')[-1].lstrip('\\n') -%}
    {%- endif -%}
  {%- endif -%}
<|im_start|>{{ m.role }}
{{ content }}<|im_end|>
{% if loop.last and m.role == 'assistant' and content.endswith('!') %}
<|done|>
{% endif %}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}
<think>

</think>

{% endif %}
{%- endif -%}"""

# A Llama-3-style template: BOS, a dated system header (strftime_now), the first message taken out as the
# system prompt (messages[1:]), tool definitions as indented JSON, content trimmed, a header per turn.
HEADERS = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system = messages[0]['content']|trim %}
    {%- set rest = messages[1:] %}
{%- else %}
    {%- set system = "" %}
    {%- set rest = messages %}
{%- endif %}
{{- "<|header|>system<|/header|>\\n\\n" }}
{{- "Today Date: " + strftime_now("%d %b %Y") + "\\n" }}
{{- "Time: " + strftime_now("%H:%M:%S %A %B %-d %j %y %p %I") + "\\n" }}
{%- if functions is defined and functions %}
    {{- "Functions:\\n" }}
    {%- for f in functions %}
        {{- f | tojson(indent=4) }}
        {{- "\\n" }}
    {%- endfor %}
{%- endif %}
{{- system }}{{ eos_token }}
{%- for message in rest %}
    {%- if loop.first and message.role != 'user' %}
        {{- raise_exception("The first message after the system prompt must come from the user") }}
    {%- endif %}
    {{- '<|header|>' + message['role'] + '<|/header|>\\n\\n' + message['content'] | trim + eos_token }}
    {%- if message.content.startswith('STOP') %}
        {%- break %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|header|>assistant<|/header|>\\n\\n' }}
{%- endif %}
"""

# Mappings and JSON: dict .items(), `is mapping`, |tojson without indent (Python's separators, non-ASCII
# kept, quotes and newlines escaped), .rstrip(chars), .upper(), .split() on whitespace, loop.index.
MAPPINGS = """{% for m in messages %}
[{{ loop.index }}] {{ m.role.upper() }}: {{ m.content.rstrip('.!? ') }}
{% for w in m.content.split() %}{{ w|length }}{% if not loop.last %},{% endif %}{% endfor %}

{% endfor %}
{% if meta is mapping %}
{% for k, v in meta.items() %}
{{ k }} = {{ v|tojson }}
{% endfor %}
{{ meta|tojson }}
{% endif %}
{{ messages|tojson }}
"""

# The caller's extra variables (apply_chat_template's **kwargs, spark-tp's chatTemplateKwargs JSON): a thinking
# switch tested as `is defined and not`, a list, a mapping read by attribute, numbers.
KWARGS = """{% for m in messages %}
<{{ m.role }}>{{ m.content }}
{% endfor %}
{% if tags is defined %}
tags:{% for t in tags %} {{ t }}{{ ',' if not loop.last else '' }}{% endfor %} ({{ tags|length }})
{% endif %}
{% if limits is mapping %}
max: {{ limits.max }}, ratio: {{ limits.ratio }}, name: {{ limits.name }}
{% endif %}
{% if add_generation_prompt %}
<assistant>
{% if enable_thinking is defined and not enable_thinking %}
<think></think>
{% endif %}
{% endif %}"""

CONVERSATION = [
    {"role": "system", "content": "  You are terse.\n"},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 4."},
    {"role": "user", "content": "And \"3 + 3\" in Ünïcödé?"},
]

CASES = [
    ("thinking: generation prompt", THINKING, CONVERSATION, True, {}),
    ("thinking: thinking off", THINKING, CONVERSATION, True, {"enable_thinking": False}),
    ("thinking: no system, no prompt, ends with an assistant turn", THINKING,
     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>x</think>Hello!"}], False, {}),
    ("thinking: unknown role raises", THINKING, [{"role": "robot", "content": "beep"}], True, {}),
    ("headers: system prompt, functions, generation prompt", HEADERS, CONVERSATION, True,
     {"functions": [{"name": "add", "parameters": {"a": "int", "b": "int"}, "doc": "Adds \"a\" and b.\n"}]}),
    ("headers: no system, break at STOP", HEADERS,
     [{"role": "user", "content": " one "}, {"role": "assistant", "content": "STOP here"},
      {"role": "user", "content": "never shown"}], False, {}),
    ("headers: assistant first raises", HEADERS,
     [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], True, {}),
    ("kwargs: thinking off, a list and a mapping", KWARGS, [{"role": "user", "content": "Hi"}], True,
     {"enable_thinking": False, "tags": ["math", 3, 2.5], "limits": {"max": 64, "ratio": 0.5, "name": "short"}}),
    ("kwargs: thinking on", KWARGS, [{"role": "user", "content": "Hi"}], True, {"enable_thinking": True}),
    ("kwargs: none", KWARGS, [{"role": "user", "content": "Hi"}], True, {}),
    ("mappings: items and tojson", MAPPINGS, CONVERSATION, False,
     {"meta": {"temperature": 0.5, "top_k": 40, "stop": ["\n\n", "</s>"], "note": "naïve \"quote\"",
               "flag": True, "none": None, "small": 1e-05}}),
]


def main(out):
    env = environment()
    cases = []
    for name, template, messages, gen, extra in CASES:
        tokens = {"bos_token": "<s>", "eos_token": "</s>"}
        case = {"name": name, "template": template, "special_tokens": tokens, "messages": messages,
                "add_generation_prompt": gen, "extra": extra}
        try:
            case["expected"] = env.from_string(template).render(
                messages=messages, tools=None, documents=None, add_generation_prompt=gen, **tokens, **extra)
        except Raised as e:
            case["error"] = str(e)
        except TemplateError as e:
            raise SystemExit(f"case {name!r}: {e}")
        cases.append(case)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"jinja2": jinja2.__version__, "now": NOW.isoformat(), "cases": cases}, indent=1,
                           ensure_ascii=False) + "\n")
    print(out, len(cases), "cases")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "spark-tp", "src", "test", "resources", "chat",
        "cases.json"))
