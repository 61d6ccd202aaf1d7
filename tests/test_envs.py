"""The environment loop: reset/step contract, tools against per-episode state, independence, limits."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateset_agents.core.completion import ParsedCompletion, ToolCall
from stateset_agents.core.trajectory import Trajectory, TurnSample
from stateset_agents.envs import RuleBasedUser, StepResult, UserReply
from stateset_agents.rewards.multimodal import first_image, shows_damage
from stateset_agents.tasks import get_task


def cs_scenario(family: str = "damaged_refund") -> dict:
    return next(s for s in get_task("customer_service").train_scenarios() if s["family"] == family)


def tool_turn(name: str, args: dict | None, index: int = 0) -> ParsedCompletion:
    return ParsedCompletion(reasoning="r", content="", tool_calls=[ToolCall(f"functions.{name}:{index}", name, args)])


def say(text: str) -> ParsedCompletion:
    return ParsedCompletion(reasoning="r", content=text)


def test_reset_gives_system_then_user_opening_and_is_single_use():
    task = get_task("customer_service")
    scenario = cs_scenario()
    env = task.make_env(scenario)
    messages = env.reset()
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == task.system_prompt
    assert messages[1]["content"] == scenario["opening"]
    assert env.tool_schemas() == task.tools.schemas()
    with pytest.raises(RuntimeError, match="single-use"):
        env.reset()
    with pytest.raises(RuntimeError, match="reset"):
        task.make_env(scenario).step(say("hi"))


def test_tool_turn_returns_tool_messages_and_no_user_reply():
    scenario = cs_scenario()
    order_id = scenario["facts"]["order_id"]
    env = get_task("customer_service").make_env(scenario)
    env.reset()
    result = env.step(tool_turn("lookup_order", {"order_id": order_id}))
    assert isinstance(result, StepResult) and not result.done and result.reason == ""
    (message,) = result.messages
    assert message == {"role": "tool", "tool_call_id": "functions.lookup_order:0", "name": "lookup_order",
                       "content": message["content"]}
    assert message["content"].startswith(f"order {order_id}:")
    assert result.state["actions"][0]["tool"] == "lookup_order" and result.state["actions"][0]["ok"]
    json.dumps(result.state)  # JSON-serialisable


def test_text_turn_gets_a_user_reply_that_reveals_the_asked_fact():
    scenario = cs_scenario()
    env = get_task("customer_service").make_env(scenario)
    env.reset()
    result = env.step(say("I'm sorry. Could you please share your order number?"))
    (reply,) = result.messages
    assert reply["role"] == "user" and scenario["facts"]["order_id"] in reply["content"]
    assert result.state["revealed_facts"] == {"order_id": scenario["facts"]["order_id"]}


def test_bad_tool_calls_become_error_results_not_exceptions():
    env = get_task("customer_service").make_env(cs_scenario())
    env.reset()
    turn = ParsedCompletion(content="", tool_calls=[
        ToolCall("functions.nope:0", "nope", {}),
        ToolCall("functions.lookup_order:1", "lookup_order", None, raw_arguments="{bad", error="invalid JSON"),
        ToolCall("functions.issue_refund:2", "issue_refund", {"order_id": "A1"}),
        ToolCall("functions.lookup_order:3", "lookup_order", {"order_id": "Z9999"})])
    result = env.step(turn)
    contents = [m["content"] for m in result.messages]
    assert contents[0].startswith("error: unknown tool 'nope'; available: lookup_order, issue_refund")
    assert all(text.startswith("error: ") for text in contents)
    assert [a["ok"] for a in result.state["actions"]] == [False] * 4


def test_max_turns_ends_the_episode_even_on_a_tool_turn():
    scenario = cs_scenario()
    env = get_task("customer_service").make_env(scenario, max_turns=2)
    env.reset()
    assert not env.step(say("Hello.")).done
    last = env.step(tool_turn("lookup_order", {"order_id": scenario["facts"]["order_id"]}))
    assert last.done and last.reason == "max_turns" and last.state["end_reason"] == "max_turns"
    with pytest.raises(RuntimeError, match="over"):
        env.step(say("more"))


def test_success_needs_goal_in_state_and_agent_saying_so():
    scenario = cs_scenario("late_delivery")
    order_id, eta = scenario["facts"]["order_id"], scenario["world"]["orders"][scenario["facts"]["order_id"]]["eta"]
    env = get_task("customer_service").make_env(scenario)
    env.reset()
    assert env.step(say(f"Your order arrives {eta}.")).messages[0]["role"] == "user"  # claim without tool: no success
    env.step(tool_turn("track_delivery", {"order_id": order_id}))
    result = env.step(say(f"Your order {order_id} is on its way and arrives {eta}."))
    assert result.done and result.reason == "success"
    assert result.state["goal_met"] and result.state["user_confirmed"]


def test_envs_do_not_share_state():
    task = get_task("customer_service")
    scenario = cs_scenario()
    order_id, total = scenario["facts"]["order_id"], scenario["world"]["orders"][scenario["facts"]["order_id"]]["total"]
    first, second = task.make_env(scenario), task.make_env(scenario)
    first.reset(), second.reset()
    first.step(tool_turn("issue_refund", {"order_id": order_id, "amount": total}))
    first.scenario["world"]["orders"][order_id]["total"] = 0.0
    assert first.state["refunds"] and second.state["refunds"] == []
    assert second.step(tool_turn("issue_refund", {"order_id": order_id, "amount": total})).messages[0]["content"].startswith("refunded")
    assert scenario["world"]["orders"][order_id]["total"] == total  # caller's scenario untouched
    snapshot = first.step(say("done?")).state
    snapshot["refunds"].clear()
    assert first.state["refunds"]  # step results are snapshots


def test_photo_scenarios_attach_a_small_image_matching_ground_truth():
    task = get_task("customer_service")
    for family, damaged in (("photo_refund", True), ("photo_deny", False)):
        scenario = cs_scenario(family)
        opening = task.make_env(scenario).reset()[1]
        text_part, image_part = opening["content"]
        assert text_part == {"type": "text", "text": scenario["opening"]}
        assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png;base64,")
        image = first_image([opening])
        assert image.size == (56, 56)
        assert shows_damage(image) is damaged
        order = scenario["world"]["orders"][scenario["facts"]["order_id"]]
        assert order["condition"] == scenario["image"]["kind"] == ("damaged" if damaged else "intact")


def test_policy_limits_are_enforced_and_recorded():
    cs = get_task("customer_service")
    over_cap = cs_scenario("over_cap")
    env = cs.make_env(over_cap)
    env.reset()
    order_id = over_cap["facts"]["order_id"]
    total = over_cap["world"]["orders"][order_id]["total"]
    result = env.step(tool_turn("issue_refund", {"order_id": order_id, "amount": total}))
    assert "need a supervisor" in result.messages[0]["content"] and len(result.state["policy_violations"]) == 1
    deny = cs_scenario("photo_deny")
    env = cs.make_env(deny)
    env.reset()
    order_id = deny["facts"]["order_id"]
    result = env.step(tool_turn("issue_refund", {"order_id": order_id, "amount": 1.0}))
    assert result.messages[0]["content"].startswith("refunded")  # goes through, but is a violation
    assert result.state["policy_violations"] and result.state["goal_failed"]

    sales = get_task("sales")
    scenario = sales.train_scenarios()[0]
    sku = scenario["goal"]["require"][-1]["args"]["sku"]
    env = sales.make_env(scenario)
    env.reset()
    result = env.step(tool_turn("apply_discount", {"sku": sku, "percent": 30}))
    assert result.messages[0]["content"] == "error: the maximum discount is 10%" and result.state["policy_violations"]

    support = get_task("technical_support")
    locked = next(s for s in support.train_scenarios() if s["family"] == "locked_account")
    env = support.make_env(locked)
    env.reset()
    account = locked["facts"]["account_id"]
    assert env.step(tool_turn("reset_password", {"account_id": account})).state["policy_violations"]
    env2 = support.make_env(locked)
    env2.reset()
    env2.step(say("Could you please share your account id?"))
    assert env2.step(tool_turn("reset_password", {"account_id": account})).state["policy_violations"] == []


class EchoUser:
    """A custom simulator: always gives up at once."""

    def reply(self, ctx):
        return UserReply("bye", done=True, outcome="gave_up")

    async def areply(self, ctx):
        return self.reply(ctx)


def test_custom_user_instance_factory_and_astep():
    task = get_task("sales")
    scenario = task.train_scenarios()[0]
    env = task.make_env(scenario, user=EchoUser())
    env.reset()
    result = asyncio.run(env.astep(say("hello")))
    assert result.done and result.reason == "user_gave_up"
    env = task.make_env(scenario, user=lambda s: RuleBasedUser(s, patience=1))
    env.reset()
    assert env.step(say("Nice weather.")).reason == "user_gave_up"


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 2000), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2))
_calls = st.builds(lambda name, args, i: ToolCall(f"functions.{name}:{i}", name, args),
                   st.sampled_from(["lookup_order", "issue_refund", "create_return", "track_delivery", "escalate",
                                    "search_catalog", "apply_discount", "reset_password", "open_ticket", "x"]),
                   st.one_of(st.none(), st.dictionaries(st.sampled_from(
                       ["order_id", "amount", "reason", "sku", "percent", "price", "category", "summary", "account_id",
                        "device_id", "region", "max_price", "zz"]), _values, max_size=3)),
                   st.integers(0, 9))
_turns = st.builds(lambda content, calls: ParsedCompletion(reasoning="r", content=content, tool_calls=calls),
                   st.sampled_from(["", "Could you please share your order number?", "I have refunded it.",
                                    "Whatever.", "What is your budget and use?", "There is an outage."]),
                   st.lists(_calls, max_size=2))


@settings(max_examples=60, deadline=None)
@given(task_name=st.sampled_from(["customer_service", "technical_support", "sales"]),
       index=st.integers(0, 59), turns=st.lists(_turns, min_size=1, max_size=7))
def test_arbitrary_turns_never_crash_and_rewards_stay_in_bounds(task_name, index, turns):
    task = get_task(task_name)
    scenario = task.train_scenarios()[index]
    env = task.make_env(scenario)
    messages = env.reset()
    parsed_turns = []
    for turn in turns:
        parsed_turns.append(turn)
        messages.append(turn.to_message())
        result = env.step(turn)
        messages.extend(result.messages)
        json.dumps(result.state)
        if result.done:
            break
    trajectory = Trajectory(messages, [TurnSample([], [], [], t) for t in parsed_turns], result.state, scenario)
    scored = task.default_reward().score(trajectory)
    assert 0.0 <= scored.total <= 1.0 and all(0.0 <= v <= 1.0 for v in scored.components.values())
