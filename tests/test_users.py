"""Simulated users: rule-based reactions to what the agent did, and the LLM-backed simulator."""

from __future__ import annotations

import asyncio

from stateset_agents.core.completion import ParsedCompletion
from stateset_agents.envs import LLMUserSimulator, RuleBasedUser, UserContext
from stateset_agents.tasks import get_task

SCENARIO = {
    "id": "u-1", "persona": "polite", "opening": "My mug arrived broken.",
    "facts": {"order_id": "A1234"},
    "goal": {"description": "You want a refund for order A1234.", "require": [], "say": [["refund"]]},
}


def ctx(text: str, goal_met: bool = False, progress: int = 0, goal_failed: bool = False) -> UserContext:
    return UserContext(agent_text=text, messages=[], state={"goal_met": goal_met, "goal_failed": goal_failed},
                       progress=progress)


def test_reveals_a_fact_only_when_asked():
    user = RuleBasedUser(SCENARIO, seed=0)
    vague = user.reply(ctx("How can I help?"))
    assert "A1234" not in vague.content and vague.revealed == {} and vague.unhelpful
    asked = user.reply(ctx("Could you please share your order number?"))
    assert "A1234" in asked.content and asked.revealed == {"order_id": "A1234"} and not asked.unhelpful
    again = user.reply(ctx("What is the order id again?"))
    assert "A1234" in again.content and again.unhelpful  # a redundant question is no progress


def test_accepts_only_when_goal_met_and_agent_says_so():
    user = RuleBasedUser(SCENARIO, seed=0)
    claim = user.reply(ctx("I have issued your refund."))
    assert not claim.done and claim.unhelpful  # claim without the state backing it: push back
    unsaid = user.reply(ctx("Anything else?", goal_met=True, progress=1))
    assert not unsaid.done and not unsaid.unhelpful
    accepted = user.reply(ctx("I have refunded $10.00.", goal_met=True))
    assert accepted.done and accepted.outcome == "success"


def test_pushes_back_when_a_forbidden_action_happened():
    reply = RuleBasedUser(SCENARIO, seed=0).reply(ctx("Here you go.", goal_failed=True, progress=1))
    assert not reply.done and reply.unhelpful


def test_gives_up_after_patience_unhelpful_turns():
    for patience in (1, 2, 4):
        user = RuleBasedUser(SCENARIO, patience=patience, seed=3)
        replies = [user.reply(ctx("Please check our help center.")) for _ in range(patience)]
        assert [r.done for r in replies] == [False] * (patience - 1) + [True]
        assert replies[-1].outcome == "gave_up"


def test_rudeness_is_a_strike_even_with_progress():
    reply = RuleBasedUser(SCENARIO, seed=0).reply(ctx("Whatever. Give me your order number.", progress=0))
    assert reply.unhelpful and "A1234" in reply.content
    assert reply.content.startswith(("There is no need to be rude.", "Please be polite."))


def test_deterministic_given_a_seed():
    texts = ["Hi?", "Could you please share your order number?", "ok", "hmm"]

    def run(seed):
        user = RuleBasedUser(SCENARIO, patience=9, seed=seed)
        return [user.reply(ctx(t)).content for t in texts]

    assert run(5) == run(5)
    assert any(run(5) != run(s) for s in range(6, 12))


def test_llm_user_brief_role_swap_and_markers():
    seen = []

    def chat_fn(messages):
        seen.append(messages)
        return "It is A1234." if len(seen) == 1 else "Great, thanks! [DONE]"

    user = LLMUserSimulator(chat_fn, SCENARIO)
    conversation = [{"role": "system", "content": "agent prompt"}, {"role": "user", "content": SCENARIO["opening"]},
                    {"role": "assistant", "content": "What is your order number?"}]
    first = user.reply(UserContext("What is your order number?", conversation, {}))
    assert not first.done and first.revealed == {"order_id": "A1234"}
    brief = seen[0][0]
    assert brief["role"] == "system" and "A1234" in brief["content"] and "[DONE]" in brief["content"]
    assert "[GIVE_UP]" in brief["content"] and "only when the agent asks" in brief["content"]
    assert [m["role"] for m in seen[0][1:]] == ["assistant", "user"]  # the customer's own words are 'assistant'
    second = user.reply(UserContext("Refunded.", conversation, {}))
    assert second.done and second.outcome == "success" and second.content == "Great, thanks!"


def test_llm_user_async_chat_fn_in_env_loop():
    async def chat_fn(messages):
        return "This is useless. [GIVE_UP]"

    task = get_task("customer_service")
    scenario = task.train_scenarios()[0]
    env = task.make_env(scenario, user=lambda s: LLMUserSimulator(chat_fn, s))
    env.reset()
    result = asyncio.run(env.astep(ParsedCompletion(content="Hello")))
    assert result.done and result.reason == "user_gave_up" and result.messages[0]["content"] == "This is useless."
    env = task.make_env(scenario, user=lambda s: LLMUserSimulator(chat_fn, s))
    env.reset()
    assert env.step(ParsedCompletion(content="Hello")).reason == "user_gave_up"  # sync step, async chat_fn


def test_llm_user_done_without_goal_is_not_success():
    task = get_task("customer_service")
    env = task.make_env(task.train_scenarios()[0], user=lambda s: LLMUserSimulator(lambda m: "ok [DONE]", s))
    env.reset()
    result = env.step(ParsedCompletion(content="All fixed!"))
    assert result.done and result.reason == "user_done" and not result.state["user_confirmed"]
