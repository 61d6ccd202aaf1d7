"""Golden prompts for Kimi-K2.5: the exact text the checkpoint's tokenizer renders, written out by
hand from the published rules (see `core.formats.kimi` and `core.formats.kimi_tools`), checked
against both our renderers: `KimiChatFormat` (Python) and `KIMI_CHAT_TEMPLATE` (jinja, as
transformers renders it). Generated tool schemas hold the two TypeScript encoders to each other."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from stateset_agents.core.formats import (  # noqa: E402
    KIMI_CHAT_TEMPLATE,
    GenericChatFormat,
    KimiChatFormat,
    deep_sort,
    encode_tools_typescript,
)

KIMI = KimiChatFormat()
SYSTEM = "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
IMAGE = "<|media_begin|>image<|media_content|><|media_pad|><|media_end|>\n"
THINK, NO_THINK = "<|im_assistant|>assistant<|im_middle|><think>", "<|im_assistant|>assistant<|im_middle|><think></think>"


@pytest.fixture(scope="module")
def kimi_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=KIMI_CHAT_TEMPLATE, unk_token="[UNK]",
        additional_special_tokens=KIMI.special_tokens,
    )


def jinja(tokenizer, messages, tools=None, add_generation_prompt=True, **options) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt, **options
    )


def both(tokenizer, messages, tools=None, add_generation_prompt=True, **options) -> str:
    """The Python rendering, after checking that the jinja template renders the same text."""
    python = KIMI.render(messages, tools=tools, add_generation_prompt=add_generation_prompt, **options)
    assert jinja(tokenizer, messages, tools, add_generation_prompt, **options) == python
    return python


# ------------------------------------------------------------------------------------- tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            },
            "required": ["location"],
        },
    },
}
WEATHER_TS = (
    "# Tools\n\n## functions\nnamespace functions {\n"
    "// Get the current weather for a location\n"
    "type get_weather = (_: {\n"
    "  // The city and state, e.g. San Francisco, CA\n"
    "  location: string,\n"
    "  // Temperature unit\n"
    '  unit?: "celsius" | "fahrenheit"\n'
    "}) => any;\n"
    "}\n"
)
# every rule at once: required before optional, each sorted (case-sensitive: "Zone" < "amount"),
# integer -> number, constraints and defaults as comments, nested objects indented, arrays,
# unions, multi-line descriptions, a tool without parameters, and $defs/$ref
REFUND = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "description": "Refund an order.\n\nOnly after checking the policy.",
        "parameters": {
            "type": "object",
            "required": ["order_id", "amount", "Zone"],
            "properties": {
                "order_id": {"type": "string", "pattern": "^[A-Z][0-9]+$", "description": "The order"},
                "amount": {"type": "number", "minimum": 0, "maximum": 500},
                "Zone": {"type": ["string", "null"]},
                "items": {
                    "type": "array",
                    "maxItems": 3,
                    "items": {"type": "integer", "description": "An item number", "minimum": 1},
                },
                "tags": {"type": "array", "items": {"type": "string"}},
                "notify": {"type": "boolean", "default": True},
                "retries": {"type": "integer", "default": 2},
                "reason": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/Reason"}], "default": "other"},
                "options": {
                    "type": "object",
                    "description": "Extra options",
                    "properties": {"rush": {"type": "boolean"}, "channel": {"enum": ["email", "sms", None]}},
                    "required": ["rush"],
                    "additionalProperties": False,
                    "default": {"rush": False, "channel": "email"},
                },
            },
            "$defs": {"Reason": {"type": "string", "enum": ["damaged", "late"], "description": "Why"}},
        },
    },
}
REFUND_TS = (
    "// Why\n"
    'interface Reason "damaged" | "late"\n'
    "// Refund an order.\n"
    "\n"
    "// Only after checking the policy.\n"
    "type issue_refund = (_: {\n"
    "  Zone: string | null,\n"
    "  // maximum: 500, minimum: 0\n"
    "  amount: number,\n"
    "  // The order\n"
    "  // pattern: ^[A-Z][0-9]+$\n"
    "  order_id: string,\n"
    "  // maxItems: 3\n"
    "  items?: Array<\n"
    "    // An item number\n"
    "    // minimum: 1\n"
    "    number\n"
    "  >,\n"
    "  // Default: True\n"
    "  notify?: boolean,\n"
    "  // Extra options\n"
    '  // Default: {"channel": "email", "rush": false}\n'
    "  options?: {\n"
    "    rush: boolean,\n"
    '    channel?: "email" | "sms" | None,\n'
    "    [k: string]: never\n"
    "  },\n"
    '  // Default: "other"\n'
    "  reason?: string | Reason,\n"
    "  // Default: 2\n"
    "  retries?: number,\n"
    "  tags?: Array<string>\n"
    "}) => any;"
)
PING = {"type": "function", "function": {"name": "ping"}}
TREE = {  # "#" refers to the parameters themselves: they become an interface
    "type": "function",
    "function": {
        "name": "walk",
        "parameters": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["name"],
        },
    },
}
TREE_TS = "interface parameters {\n  children?: Array<parameters>,\n  name: string\n}\ntype walk = (_: parameters) => any;"


def declared(*functions: str) -> str:
    body = "## functions\nnamespace functions {\n" + "\n".join(functions) + "\n}\n" if functions else ""
    return "<|im_system|>tool_declare<|im_middle|># Tools\n\n" + body + "<|im_end|>"


def test_tools_are_a_typescript_declaration_before_the_system_prompt(kimi_tokenizer):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    assert both(kimi_tokenizer, messages, [WEATHER]) == (
        "<|im_system|>tool_declare<|im_middle|>" + WEATHER_TS + "<|im_end|>"
        + SYSTEM + "<|im_user|>user<|im_middle|>Weather in Paris?<|im_end|>" + THINK
    )
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    assert both(kimi_tokenizer, with_system, [WEATHER], thinking=False) == (
        "<|im_system|>tool_declare<|im_middle|>" + WEATHER_TS + "<|im_end|>"
        "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
        "<|im_user|>user<|im_middle|>Weather in Paris?<|im_end|>" + NO_THINK
    )


def test_every_typescript_rule(kimi_tokenizer):
    assert encode_tools_typescript(deep_sort([REFUND])) == declared(REFUND_TS)[len("<|im_system|>tool_declare<|im_middle|>"):-len("<|im_end|>")]
    messages = [{"role": "user", "content": "hi"}]
    tools = [WEATHER, REFUND, PING, TREE]
    expected = declared(WEATHER_TS.split("{\n", 1)[1].rsplit("\n}\n", 1)[0], REFUND_TS, "type ping = (_: {}) => any;", TREE_TS)
    assert both(kimi_tokenizer, messages, tools).startswith(expected + SYSTEM)


def test_schemas_are_deep_sorted_before_encoding(kimi_tokenizer):
    """The checkpoint sorts dict keys at every depth first: definitions and dict defaults come out
    sorted, whatever order the caller wrote them in."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object",
        "properties": {"b": {"$ref": "#/$defs/B"}, "a": {"$ref": "#/$defs/A"}, "c": {"type": "object", "default": {"z": 1, "y": [{"q": 1, "p": 2}]}}},
        "$defs": {"B": {"type": "string"}, "A": {"type": "number"}},
    }}}
    text = both(kimi_tokenizer, [{"role": "user", "content": "hi"}], [tool])
    assert declared(
        "interface A number\ninterface B string\ntype f = (_: {\n  a?: A,\n  b?: B,\n"
        '  // Default: {"y": [{"p": 2, "q": 1}], "z": 1}\n  c?: {}\n}) => any;'
    ) in text


def test_schemas_the_encoder_rejects_are_declared_as_sorted_json(kimi_tokenizer, caplog):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"q": {"description": "no type"}}}}}
    with caplog.at_level(logging.WARNING):
        text = both(kimi_tokenizer, [{"role": "user", "content": "hi"}], [tool])
    assert text.startswith(
        '<|im_system|>tool_declare<|im_middle|>[{"function":{"name":"f","parameters":{"properties":'
        '{"q":{"description":"no type"}},"type":"object"}},"type":"function"}]<|im_end|>'
    )
    assert "declaring them as JSON" in caplog.text


def test_a_given_tools_ts_str_is_used_as_the_declaration(kimi_tokenizer):
    """As in the checkpoint's template: a caller (vLLM, SGLang) that computes ``tools_ts_str``
    gets it written verbatim."""
    text = jinja(kimi_tokenizer, [{"role": "user", "content": "hi"}], [WEATHER], tools_ts_str="# Tools\n\nCUSTOM")
    assert text.startswith("<|im_system|>tool_declare<|im_middle|># Tools\n\nCUSTOM<|im_end|>" + SYSTEM)


# ------------------------------------------------------------------------- turns and history

CALL = {"id": "functions.get_weather:0", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}
CALLING = {"role": "assistant", "content": "", "reasoning_content": "I need the weather.", "tool_calls": [CALL]}
RESULT = {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather", "content": '{"temp": 21}'}
ANSWER = {"role": "assistant", "content": "It is 21°C.", "reasoning_content": "Report it."}
USER = {"role": "user", "content": "Weather in Paris?"}
USER_TEXT = "<|im_user|>user<|im_middle|>Weather in Paris?<|im_end|>"
CALL_SECTION = (
    "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
    '{"location": "Paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
)
RESULT_TEXT = '<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n{"temp": 21}<|im_end|>'


def test_tool_loop_in_progress_keeps_its_reasoning(kimi_tokenizer):
    """After a tool result the model continues the same turn: the reasoning that led to the call
    stays (no assistant message without tool calls yet)."""
    assert both(kimi_tokenizer, [USER, CALLING, RESULT]) == (
        SYSTEM + USER_TEXT + THINK + "I need the weather.</think>" + CALL_SECTION + RESULT_TEXT + THINK
    )
    assert both(kimi_tokenizer, [USER, CALLING, RESULT], thinking=False) == (
        SYSTEM + USER_TEXT + NO_THINK + CALL_SECTION + RESULT_TEXT + NO_THINK
    )


def test_history_up_to_the_last_answer_loses_its_reasoning(kimi_tokenizer):
    follow_up = {"role": "user", "content": "And tomorrow?"}
    history = [USER, CALLING, RESULT, ANSWER, follow_up]
    emptied = (
        SYSTEM + USER_TEXT + NO_THINK + CALL_SECTION + RESULT_TEXT + NO_THINK + "It is 21°C.<|im_end|>"
        "<|im_user|>user<|im_middle|>And tomorrow?<|im_end|>" + THINK
    )
    assert both(kimi_tokenizer, history) == emptied
    # the last answer is history too, also without a generation prompt (the checkpoint does this)
    assert both(kimi_tokenizer, [USER, ANSWER], add_generation_prompt=False) == (
        SYSTEM + USER_TEXT + NO_THINK + "It is 21°C.<|im_end|>"
    )
    # a user message does not end a turn that has no answer yet
    interrupted = [USER, CALLING, RESULT, follow_up]
    assert "<think>I need the weather.</think>" in both(kimi_tokenizer, interrupted)


def test_preserve_thinking_keeps_all_reasoning(kimi_tokenizer):
    history = [USER, CALLING, RESULT, ANSWER, {"role": "user", "content": "And tomorrow?"}]
    kept = (
        SYSTEM + USER_TEXT + THINK + "I need the weather.</think>" + CALL_SECTION + RESULT_TEXT
        + THINK + "Report it.</think>It is 21°C.<|im_end|><|im_user|>user<|im_middle|>And tomorrow?<|im_end|>"
    )
    assert both(kimi_tokenizer, history, preserve_thinking=True) == kept + THINK
    assert both(kimi_tokenizer, history, preserve_thinking=True, thinking=False) == kept + NO_THINK
    # the format-level default, and an explicit False overriding it
    assert KimiChatFormat(preserve_thinking=True).render(history) == kept + THINK
    assert KimiChatFormat(preserve_thinking=True).render(history, preserve_thinking=False) == KIMI.render(history)
    # with preserve_thinking a longer conversation extends the shorter one's prompt text
    shorter = KIMI.render(history[:3], preserve_thinking=True)
    longer = KIMI.render(history, preserve_thinking=True, add_generation_prompt=False)
    assert longer.startswith(shorter)


def test_generic_format_passes_preserve_thinking_to_the_tokenizer(kimi_tokenizer):
    history = [USER, ANSWER, {"role": "user", "content": "More?"}]
    generic = GenericChatFormat(kimi_tokenizer)
    assert generic.render(history, preserve_thinking=True) == KIMI.render(history, preserve_thinking=True)
    assert generic.render(history) == KIMI.render(history)
    assert "Report it." not in generic.render(history)


def test_images_end_with_a_newline(kimi_tokenizer):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "with"},
        {"type": "image", "image": "/tmp/b.png"},
    ]}]
    assert both(kimi_tokenizer, messages) == (
        SYSTEM + f"<|im_user|>user<|im_middle|>Compare{IMAGE}with{IMAGE}<|im_end|>" + THINK
    )


def test_parallel_calls_and_results(kimi_tokenizer):
    """tinker-cookbook's multi-call case: calls without ids get ``functions.NAME:IDX``; each result
    is its own system turn named after the tool (``tool`` without a name)."""
    calls = [{"type": "function", "function": {"name": "get_weather", "arguments": {"location": "NYC"}}},
             {"type": "function", "function": {"name": "get_weather", "arguments": '{"location": "LA"}'}}]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "NYC and LA?"},
        {"role": "assistant", "content": "", "reasoning_content": "Both cities.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather", "content": "72"},
        {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": "85"},
    ]
    assert both(kimi_tokenizer, messages) == (
        "<|im_system|>system<|im_middle|>You are a helpful assistant.<|im_end|>"
        "<|im_user|>user<|im_middle|>NYC and LA?<|im_end|>" + THINK + "Both cities.</think>"
        "<|tool_calls_section_begin|>"
        '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"location": "NYC"}<|tool_call_end|>'
        '<|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>{"location": "LA"}<|tool_call_end|>'
        "<|tool_calls_section_end|><|im_end|>"
        "<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n72<|im_end|>"
        "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:1\n85<|im_end|>" + THINK
    )


def test_tiny_tokenizer_agrees_token_for_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    history = [USER, CALLING, RESULT, ANSWER, {"role": "user", "content": "And tomorrow?"}]
    for options in ({}, {"thinking": False}, {"preserve_thinking": True}):
        for tools in (None, [WEATHER, REFUND, TREE]):
            ids = tokenizer.apply_chat_template(history, tools=tools, tokenize=True, add_generation_prompt=True,
                                                return_dict=False, **options)
            expected = tokenizer(KIMI.render(history, tools=tools, **options), add_special_tokens=False)["input_ids"]
            assert list(ids) == expected


# --------------------------------------------------------------------- generated tool schemas

names = st.sampled_from(["a", "b", "Zone", "order_id", "x1", "_y"])
texts = st.sampled_from(["", "An id.", "Two\nlines", "Blank\n\nline", 'Say "hi" — now', "\n"])
defaults = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.5, 1e20, -2.0]), st.sampled_from(["x", "é"]),
    st.dictionaries(names, st.integers(0, 3), max_size=3), st.lists(st.integers(0, 3), max_size=2),
)


def with_doc(draw, schema: dict) -> dict:
    if draw(st.booleans()):
        schema["description"] = draw(texts)
    default = draw(defaults)
    if default is not None:
        schema["default"] = default
    return schema


@st.composite
def scalars(draw) -> dict | bool:
    kind = draw(st.sampled_from(["string", "number", "integer", "boolean", "null", "enum", "union", "empty", "bool", "ref"]))
    if kind == "bool":
        return draw(st.booleans())
    if kind == "empty":
        return {}
    if kind == "ref":
        return {"$ref": draw(st.sampled_from(["#", "#/$defs/Item", "#/$defs/Missing", "#/definitions/Item"]))}
    if kind == "enum":
        schema = {"enum": draw(st.lists(st.one_of(st.sampled_from(["a", "b c"]), st.integers(0, 2), st.none(), st.booleans()), min_size=1, max_size=3))}
        if draw(st.booleans()):
            schema["type"] = draw(st.sampled_from(["string", "integer", "number", "boolean", ["string", "null"], ["string"]]))
        return with_doc(draw, schema)
    if kind == "union":
        return with_doc(draw, {"type": draw(st.lists(st.sampled_from(["string", "integer", "null", "object", "array"]), min_size=1, max_size=3))})
    schema = {"type": kind}
    for key in {"string": ["maxLength", "minLength"], "number": ["maximum", "minimum"], "integer": ["minimum"]}.get(kind, []):
        if draw(st.booleans()):
            schema[key] = draw(st.integers(0, 9))
    if kind == "string" and draw(st.booleans()):
        schema["pattern"] = "^[a-z]+$"
    return with_doc(draw, schema)


def extend(children):
    @st.composite
    def composite(draw) -> dict:
        kind = draw(st.sampled_from(["object", "array", "anyOf"]))
        if kind == "array":
            schema = {"type": "array"}
            if draw(st.booleans()):
                schema["items"] = draw(children)
            if draw(st.booleans()):
                schema["maxItems"] = 4
            return with_doc(draw, schema)
        if kind == "anyOf":
            return with_doc(draw, {"anyOf": draw(st.lists(children, min_size=1, max_size=3))})
        return with_doc(draw, objects(draw, children))
    return composite()


def objects(draw, children) -> dict:
    schema: dict = {"type": "object"}
    if draw(st.booleans()):
        schema["properties"] = draw(st.dictionaries(names, children, max_size=4))
        schema["required"] = draw(st.lists(names, max_size=3, unique=True))
    if draw(st.booleans()):
        schema["additionalProperties"] = draw(st.one_of(st.booleans(), children))
    return schema


schemas = st.recursive(scalars(), extend, max_leaves=6)


@st.composite
def tool_lists(draw) -> list[dict]:
    tools = []
    for name in draw(st.lists(st.sampled_from(["f", "get_order", "g2"]), min_size=1, max_size=2)):
        function: dict = {"name": name}
        if draw(st.booleans()):
            function["description"] = draw(texts)
        if draw(st.booleans()):
            parameters = objects(draw, schemas)
            if draw(st.booleans()):
                parameters["$defs"] = {"Item": draw(st.one_of(st.just({"type": "object", "properties": {"v": {"type": "integer"}}}), st.just({"enum": ["x"]}), st.just({"type": "string", "description": "An item"})))}
            function["parameters"] = parameters
        tools.append({"type": draw(st.sampled_from(["function", "function", "retrieval"])), "function": function})
    return tools


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tool_lists())
def test_python_and_jinja_declare_generated_tools_identically(kimi_tokenizer, tools):
    messages = [{"role": "user", "content": "hi"}]
    python = KIMI.render(messages, tools=tools)
    assert jinja(kimi_tokenizer, messages, tools) == python
    # shuffling dict keys changes nothing: both sort first
    shuffled = json.loads(json.dumps(tools), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert KIMI.render(messages, tools=shuffled) == python


# ------------------------------------------------------------- parsing, as vLLM's kimi_k2 parsers


def vllm_kimi_k2(text: str) -> tuple[str | None, str, list[tuple[str, str, str]]]:
    """What ``--reasoning-parser kimi_k2 --tool-call-parser kimi_k2`` extract with thinking on
    (re-stated from vLLM: DeepSeek-R1 reasoning split at ``</think>``; calls by the tool parser's
    regex, name = id before ``:``, after the last ``.``; content = text before the section)."""
    import re

    body = text.split("<|im_end|>")[0]
    reasoning, closed, rest = body.partition("</think>")
    if not closed:
        return reasoning, "", []
    pattern = (r"<\|tool_call_begin\|>\s*(?P<id>[^<]+:\d+)\s*<\|tool_call_argument_begin\|>\s*"
               r"(?P<args>(?:(?!<\|tool_call_begin\|>).)*?)\s*<\|tool_call_end\|>")
    calls = [(m["id"], m["id"].split(":")[0].split(".")[-1], m["args"]) for m in re.finditer(pattern, rest, re.DOTALL)]
    return reasoning, rest.split("<|tool_calls_section_begin|>")[0], calls


# Model text between the markers: no special token's text ("<|...|>", and "[BOS]" / "[EOS]" / "[PAD]", which a
# detokenizer that skips special tokens, as vLLM's does, never emits and our parser strips).
PLAIN_TEXT = st.text(st.characters(blacklist_characters="<>|"), max_size=12).filter(
    lambda text: not any(token in text for token in KimiChatFormat.special_tokens))


@settings(max_examples=200, deadline=None)
@given(
    PLAIN_TEXT,
    PLAIN_TEXT,
    st.lists(st.tuples(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), st.dictionaries(st.sampled_from("xyz"), st.integers(), max_size=2)), max_size=3),
    st.sampled_from(["", " ", "\n"]),
)
def test_parser_reads_completions_as_vllm_kimi_k2_does(reasoning, content, calls, space):
    section = "".join(
        f"<|tool_call_begin|>{space}functions.{name}:{i}{space}<|tool_call_argument_begin|>{space}{json.dumps(args)}{space}<|tool_call_end|>"
        for i, (name, args) in enumerate(calls)
    )
    text = reasoning + "</think>" + content + (f"<|tool_calls_section_begin|>{section}<|tool_calls_section_end|>" if calls else "") + "<|im_end|>"
    parsed = KIMI.parse(text)
    vllm_reasoning, vllm_content, vllm_calls = vllm_kimi_k2(text)
    assert (parsed.reasoning, parsed.content) == (vllm_reasoning, vllm_content)
    assert [(c.id, c.name, c.arguments) for c in parsed.tool_calls] == [(i, n, json.loads(a)) for i, n, a in vllm_calls]
    assert parsed.errors == []
    truncated = KIMI.parse(reasoning)  # no </think>: all of it is reasoning, for vLLM too
    assert (truncated.reasoning, truncated.content, truncated.tool_calls) == (vllm_kimi_k2(reasoning)[0], "", [])
