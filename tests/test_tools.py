"""Tools: schemas derived from signatures and docstrings; `ToolSet.call` never raises; generic parsing."""

from __future__ import annotations

import json
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from stateset_agents.core.completion import ToolCall
from stateset_agents.envs.tools import ToolError, ToolSet, parse_generic_tool_calls


def issue_refund(state: dict, order_id: str, amount: float, note: str = "") -> str:
    """Refund money for an order.

    Args:
        order_id: The order number,
            e.g. A1234.
        amount (float): Amount in dollars.
        note: Optional note.

    Returns:
        A confirmation.
    """
    if amount > 100:
        raise ToolError("refunds over $100 need a supervisor")
    state.setdefault("refunds", []).append((order_id, amount))
    return f"refunded {amount:.2f} for {order_id}"


def tag(labels: list[str], level: Literal["low", "high"], urgent: bool = False, count: int = 1) -> str:
    """Tag something (no state parameter)."""
    return f"{labels} {level} {urgent} {count}"


def broken(state: dict) -> str:
    """Always fails."""
    raise KeyError("boom")


TOOLS = ToolSet([issue_refund, tag, broken])


def call(name: str, arguments: dict | None, error: str | None = None) -> ToolCall:
    return ToolCall(id=f"functions.{name}:0", name=name, arguments=arguments, error=error)


def test_schema_from_signature_and_docstring():
    schema = TOOLS.schemas()[0]
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "issue_refund"
    assert function["description"] == "Refund money for an order."
    params = function["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["order_id", "amount"]
    assert params["properties"]["order_id"] == {"type": "string", "description": "The order number, e.g. A1234."}
    assert params["properties"]["amount"] == {"type": "number", "description": "Amount in dollars."}
    assert "state" not in params["properties"]
    json.dumps(TOOLS.schemas())  # serialisable for the chat template


def test_schema_types_enum_array_bool_int():
    props = TOOLS["tag"].parameters["properties"]
    assert props["labels"] == {"type": "array", "items": {"type": "string"}}
    assert props["level"] == {"type": "string", "enum": ["low", "high"]}
    assert props["urgent"] == {"type": "boolean"}
    assert props["count"] == {"type": "integer"}
    assert TOOLS["tag"].parameters["required"] == ["labels", "level"]


def test_successful_call_mutates_state():
    state: dict = {}
    assert TOOLS.call(call("issue_refund", {"order_id": "A1", "amount": 5}), state) == "refunded 5.00 for A1"
    assert state["refunds"] == [("A1", 5.0)]
    assert TOOLS.call(call("tag", {"labels": ["a"], "level": "HIGH", "count": 2.0}), state) == "['a'] high False 2"


def test_unknown_tool_error_lists_available():
    assert TOOLS.call(call("x", {}), {}) == "error: unknown tool 'x'; available: issue_refund, tag, broken"


def test_bad_calls_become_error_strings():
    cases = {
        "unparsed": call("issue_refund", None, error="invalid JSON"),
        "missing": call("issue_refund", {"order_id": "A1"}),
        "extra": call("issue_refund", {"order_id": "A1", "amount": 1, "bogus": 2}),
        "wrong type": call("issue_refund", {"order_id": "A1", "amount": "ten"}),
        "bool for number": call("issue_refund", {"order_id": "A1", "amount": True}),
        "enum": call("tag", {"labels": [], "level": "medium"}),
        "array items": call("tag", {"labels": [1], "level": "low"}),
        "tool error": call("issue_refund", {"order_id": "A1", "amount": 500}),
        "exception": call("broken", {}),
    }
    outputs = {name: TOOLS.call(tool_call, {}) for name, tool_call in cases.items()}
    assert all(text.startswith("error: ") for text in outputs.values()), outputs
    assert "invalid JSON" in outputs["unparsed"]
    assert "missing argument 'amount'" in outputs["missing"]
    assert "unexpected argument 'bogus'" in outputs["extra"] and "expected: order_id, amount, note" in outputs["extra"]
    assert "'amount' of issue_refund must be a number, got string" in outputs["wrong type"]
    assert "must be one of low, high" in outputs["enum"]
    assert outputs["tool error"] == "error: refunds over $100 need a supervisor"
    assert "KeyError" in outputs["exception"]
    outcome = TOOLS.run(cases["missing"], {})
    assert outcome.ok is False and outcome.name == "issue_refund"


def test_generic_parsing_tagged_and_bare():
    text = ('Sure. <tool_call>{"name": "lookup_order", "arguments": {"order_id": "A1"}}</tool_call>'
            '<tool_call>{"name": "track_delivery", "arguments": "{\\"order_id\\": \\"A2\\"}"}</tool_call>')
    calls = parse_generic_tool_calls(text)
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_0", "lookup_order", {"order_id": "A1"}), ("call_1", "track_delivery", {"order_id": "A2"})]
    bare = parse_generic_tool_calls('I will check. {"name": "get_price", "arguments": {"sku": "L1"}} ok {"a": 1}')
    assert [(c.name, c.arguments) for c in bare] == [("get_price", {"sku": "L1"})]
    listed = parse_generic_tool_calls('[{"function": {"name": "a", "arguments": {}}}, {"name": "b", "parameters": {"x": 1}}]')
    assert [(c.name, c.arguments) for c in listed] == [("a", {}), ("b", {"x": 1})]
    assert parse_generic_tool_calls("no calls here {not json}") == []


def test_generic_parsing_broken_json_becomes_error_call():
    (broken_call,) = parse_generic_tool_calls('<tool_call>{"name": "issue_refund", "arguments": {"amount": }</tool_call>')
    assert broken_call.name == "issue_refund" and broken_call.arguments is None and broken_call.error
    assert TOOLS.call(broken_call, {}).startswith("error: could not parse the arguments of issue_refund")
    (bad_args,) = parse_generic_tool_calls('<tool_call>{"name": "tag", "arguments": [1, 2]}</tool_call>')
    assert bad_args.arguments is None and "not a JSON object" in bad_args.error


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[]":,<>/ tool_call name arguments 0123 abc\\')), max_size=120))
def test_generic_parsing_never_raises(text):
    for parsed in parse_generic_tool_calls(text):
        assert isinstance(parsed, ToolCall)
        assert TOOLS.call(parsed, {}).startswith(("error: ", "refunded", "["))


def test_non_finite_numbers_are_refused_at_parsing_and_validation():
    tools = ToolSet([issue_refund])
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        [tagged] = parse_generic_tool_calls(
            f'<tool_call>{{"name": "issue_refund", "arguments": {{"order_id": "A1", "amount": {number}}}}}</tool_call>')
        [as_string] = parse_generic_tool_calls(
            json.dumps({"name": "issue_refund", "arguments": f'{{"order_id": "A1", "amount": {number}}}'}))
        for call in (tagged, as_string):
            assert call.arguments is None and "finite" in call.error
            assert tools.call(call, {}).startswith("error:")
        # a bare object carrying NaN is not read as a call at all
        assert parse_generic_tool_calls(f'{{"name": "issue_refund", "arguments": {{"amount": {number}}}}}') == []
    # arguments built in Python (not parsed from text) are checked by the schema validation
    for value in (float("nan"), float("inf"), 10**400):
        state: dict = {}
        reply = tools.call(ToolCall("c0", "issue_refund", {"order_id": "A1", "amount": value}), state)
        assert reply.startswith("error:") and "finite number" in reply and not state
