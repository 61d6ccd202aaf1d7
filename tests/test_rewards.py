"""Rewards: the guide's subclass snippet, weighted components, batch scoring and its error policies."""

from __future__ import annotations

import asyncio
import copy

import pytest

from stateset_agents.core.completion import ParsedCompletion
from stateset_agents.core.trajectory import Trajectory, TurnSample
from stateset_agents.rewards import (
    Format,
    Helpfulness,
    ImageConsistency,
    MultiObjectiveReward,
    PolicyCompliance,
    RewardError,
    RewardResult,
    score_trajectories,
    score_trajectories_sync,
)
from stateset_agents.rewards.components import trajectory_actions, unbacked_claims
from stateset_agents.tasks import get_task, list_tasks
from stateset_agents.tasks.episodes import run_scripted_episode
from stateset_agents.tasks.scripted_agents import make_agent

reward = 0.7  # the value the guide's snippet returns


def episodes(agent: str, task: str = "customer_service", n: int = 6, family: str | None = None) -> list[Trajectory]:
    scenarios = [s for s in get_task(task).train_scenarios() if family in (None, s["family"])][:n]
    return [run_scripted_episode(task, s, make_agent(agent), seed=i) for i, s in enumerate(scenarios)]


def test_guide_snippet_works_unchanged():
    from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward

    class KimiReward(MultiObjectiveReward):
        async def compute_reward(self, trajectory):
            # Custom reward logic
            return reward

    trajectories = episodes("oracle", n=3)
    results = score_trajectories_sync(KimiReward(), trajectories)
    assert [r.total for r in results] == [0.7] * 3 and [t.reward for t in trajectories] == [0.7] * 3
    assert KimiReward().name == "KimiReward"


def test_default_reward_is_a_weighted_mean_of_bounded_components():
    trajectory = episodes("mediocre", n=1)[0]
    multi = MultiObjectiveReward()
    result = asyncio.run(multi.compute_reward(trajectory))
    assert isinstance(result, RewardResult)
    assert set(result.components) == {"goal_reached", "tool_use", "policy_compliance", "helpfulness", "concision",
                                      "format"}
    assert all(0.0 <= v <= 1.0 for v in result.components.values())
    expected = sum(multi.weights[k] * v for k, v in result.components.items()) / sum(multi.weights.values())
    assert result.total == pytest.approx(expected)


def test_weights_and_components_are_validated():
    with pytest.raises(ValueError, match="missing.*format"):
        MultiObjectiveReward(weights={"goal_reached": 1.0})
    with pytest.raises(ValueError, match="unknown reward component 'nope'"):
        MultiObjectiveReward(components=["nope"])
    with pytest.raises(ValueError, match="2 weights for 1 components"):
        MultiObjectiveReward(components=["format"], weights=[1, 2])
    custom = MultiObjectiveReward(components=["goal_reached", Helpfulness()], weights=[3, 1], name="mine")
    assert custom.weights == {"goal_reached": 3.0, "helpfulness": 1.0} and custom.name == "mine"
    assert MultiObjectiveReward(components=["format", "concision"]).weights == {"format": 1.0, "concision": 1.0}


class Failing(MultiObjectiveReward):
    async def compute_reward(self, trajectory):
        if trajectory.scenario["id"].endswith("001"):
            raise ValueError("judge unavailable")
        return {"total": 0.5, "components": {"x": 0.5}}


def test_error_policy_fail_names_reward_and_scenario():
    trajectories = episodes("oracle", n=3)
    with pytest.raises(RewardError, match=r"reward 'Failing' failed on scenario 'cs-train-001': ValueError: judge") as info:
        score_trajectories_sync(Failing(), trajectories, error_policy="fail")
    assert info.value.reward == "Failing" and info.value.scenario_id == "cs-train-001"


def test_error_policy_skip_marks_and_counts():
    trajectories = episodes("oracle", n=3)
    results = score_trajectories_sync(Failing(), trajectories, error_policy="skip")
    assert results[1] is None and results.num_skipped == 1 and len(results.errors) == 1
    assert results[0].total == 0.5 and results[0].components == {"x": 0.5} and trajectories[2].reward == 0.5
    with pytest.raises(ValueError, match="error_policy"):
        score_trajectories_sync(Failing(), trajectories, error_policy="ignore")


def test_any_return_form_and_plain_callables():
    trajectories = episodes("oracle", n=2)
    assert [r.total for r in score_trajectories_sync(lambda t: 0.25, trajectories)] == [0.25, 0.25]
    from_dict = score_trajectories_sync(lambda t: {"a": 1.0, "b": 0.0}, trajectories)[0]
    assert from_dict.total == 0.5 and from_dict.components == {"a": 1.0, "b": 0.0}
    with pytest.raises(RewardError, match="must be a number"):
        score_trajectories_sync(lambda t: "high", trajectories)
    with pytest.raises(RewardError, match="finite"):
        score_trajectories_sync(lambda t: float("nan"), trajectories)


def test_rewards_run_concurrently_and_sync_wrapper_refuses_inside_a_loop():
    trajectories = episodes("oracle", n=4)
    started = []

    class Barrier(MultiObjectiveReward):
        async def compute_reward(self, trajectory):
            started.append(trajectory.scenario["id"])
            while len(started) < len(trajectories):  # only finishes if all run at once
                await asyncio.sleep(0.001)
            return 1.0

    async def main():
        results = await asyncio.wait_for(score_trajectories(Barrier(), trajectories), timeout=5)
        with pytest.raises(RuntimeError, match="await score_trajectories"):
            score_trajectories_sync(Barrier(), trajectories)
        return results

    assert [r.total for r in asyncio.run(main())] == [1.0] * 4


@pytest.mark.parametrize("task", list_tasks())
def test_rude_and_policy_breaking_are_penalised_by_their_component(task):
    reward = get_task(task).default_reward()
    scores = {agent: [reward.score(t) for t in episodes(agent, task)] for agent in ("oracle", "rude", "policy_breaking")}

    def mean(agent, component):
        return sum(r.components[component] for r in scores[agent]) / len(scores[agent])

    assert mean("rude", "helpfulness") <= mean("oracle", "helpfulness") - 0.5
    assert mean("policy_breaking", "policy_compliance") <= mean("oracle", "policy_compliance") - 0.5
    assert mean("oracle", "policy_compliance") == 1.0


@pytest.mark.parametrize("task", ["customer_service", "customer_service_claims", "technical_support"])
def test_a_hand_off_said_without_a_hand_off_tool_is_an_unbacked_claim(task):
    """The habit the warm start teaches ("I have passed your case to our support team") claims an escalation
    that never happened; the claims desk's oracle says it after `escalate` succeeded, so it is backed there."""
    for trajectory in episodes("deflecting", task=task, n=3):
        assert any(claim.startswith("escalate|open_ticket: ") for claim in unbacked_claims(trajectory.messages))
        assert PolicyCompliance()(trajectory) <= 0.5
    assert not any(unbacked_claims(t.messages) for t in episodes("oracle", task=task))
    said_first = [{"role": "assistant", "content": "I have forwarded it to a colleague."}]
    tool = [{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": "open_ticket"}}]},
            {"role": "tool", "tool_call_id": "c1", "name": "open_ticket", "content": "ticket T1 opened"}]
    assert unbacked_claims(said_first + tool) and not unbacked_claims(tool + said_first)


def test_unbacked_claims_and_ledger_fallback():
    trajectory = episodes("policy_breaking", n=1)[0]
    assert unbacked_claims(trajectory.messages)  # "refunded" without a successful refund
    assert not unbacked_claims(episodes("oracle", n=1)[0].messages)
    assert PolicyCompliance()(trajectory) == 0.0
    oracle = episodes("oracle", n=1)[0]
    stripped = copy.deepcopy(oracle)
    stripped.state = {}
    rebuilt = trajectory_actions(stripped)
    assert [(a["tool"], a["args"], a["ok"]) for a in rebuilt] == [(a["tool"], a["args"], a["ok"])
                                                                  for a in oracle.state["actions"]]


def test_format_component_reads_parsed_turns():
    good = ParsedCompletion(reasoning="r", content="ok")
    truncated = ParsedCompletion(reasoning="r", content="", thinking_closed=False, terminated=False, errors=["x"])
    make = lambda *parsed: Trajectory([], [TurnSample([], [], [], p) for p in parsed], {}, {})  # noqa: E731
    assert Format()(make(good, good)) == 1.0
    assert Format()(make(truncated)) == 0.0
    assert Format()(make(good, truncated)) == 0.5


def test_image_consistency_sees_the_photo_through_messages():
    check = ImageConsistency()
    for family in ("photo_refund", "photo_deny"):
        assert all(check(t) == 1.0 for t in episodes("oracle", family=family, n=3))
    assert all(check(t) == 0.0 for t in episodes("policy_breaking", family="photo_deny", n=3))
    assert check(episodes("oracle", family="late_delivery", n=1)[0]) == 1.0  # no photo: nothing to check


@pytest.mark.parametrize("task", list_tasks())
def test_rewards_are_deterministic_for_a_fixed_seed(task):
    reward = get_task(task).default_reward()
    first = [reward.score(t) for t in episodes("mediocre", task, n=8)]
    second = [reward.score(t) for t in episodes("mediocre", task, n=8)]
    assert first == second
