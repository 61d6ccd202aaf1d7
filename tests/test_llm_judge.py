"""The LLM judge: its prompts (golden), the parsing of its answers, its use inside MultiObjectiveReward
(pointwise and group), skips that are logged and counted, the cache, `judge_weight` and `reward: module:Class`.

No model on this machine can judge, so the end-to-end tests talk to a real HTTP server on loopback
(tests/chat_server.py) whose answers come from `scripted_judge`, a rule standing in for the judge
model (the one boundary we cannot reach). tests/test_llm_user_judge_vllm.py asks the tiny model
served by vLLM, whose answers are not the JSON asked for: the skip path with a real model.
"""

from __future__ import annotations

import json
import re

import pytest

from chat_server import ChatServer

from stateset_agents.core.trajectory import Trajectory
from stateset_agents.rewards.batch_rewards import score_trajectories_sync
from stateset_agents.rewards.components import GoalReached, PolicyCompliance
from stateset_agents.rewards.custom_reward import RewardLoadError, load_reward
from stateset_agents.rewards.llm_judge import (
    DEFAULT_RUBRIC, Criterion, JudgeAnswerError, LLMJudge, RubricError, group_messages, load_rubric,
    parse_group, parse_pointwise, pointwise_messages, with_judge,
)
from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward
from stateset_agents.rollout.chat_cache import CachedChat, ChatCache
from stateset_agents.rollout.chat_client import OpenAIChatClient

RUBRIC = (Criterion("resolution", "The refund was issued and the customer told.", 2.0),
          Criterion("tone", "Polite and clear."))


def episode(ending: list[dict], group: int = 0, scenario: str = "cs-1") -> Trajectory:
    messages = [
        {"role": "system", "content": "You are a support agent. Refunds need an order id."},
        {"role": "user", "content": "My mug arrived broken."},
        {"role": "assistant", "content": "Sorry! What is your order id?", "reasoning_content": "ask for the id"},
        {"role": "user", "content": "It is A1234."},
        *ending,
    ]
    return Trajectory(messages=messages, turns=[], state={}, task="customer_service", group_id=group,
                      scenario={"id": scenario, "goal": {"description": "Get a refund for order A1234."}})


REFUNDED = [{"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "issue_refund",
                                                              "arguments": '{"order_id": "A1234"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "name": "issue_refund", "content": "refunded $12.00"},
            {"role": "assistant", "content": "Done: refunded $12.00."}]
WAITING = [{"role": "assistant", "content": "Please wait."}]
RUDE = [{"role": "assistant", "content": "Figure it out yourself."}]

# -- golden prompts --------------------------------------------------------------------------------

POINTWISE_SYSTEM = """\
You are an impartial judge of customer-support conversations. Score the support agent's conduct in the \
conversation below on each criterion, as an integer from 0 (worst) to 10 (best).

Criteria:
- resolution: The refund was issued and the customer told.
- tone: Polite and clear.

Answer with one JSON object and nothing else: {"scores": {"resolution": <0-10>, "tone": <0-10>}}"""

CONTEXT = """\
<agent_instructions>
You are a support agent. Refunds need an order id.
</agent_instructions>

<customer_goal>
Get a refund for order A1234.
</customer_goal>"""

POINTWISE_USER = CONTEXT + """

<conversation>
Customer: My mug arrived broken.
Agent: Sorry! What is your order id?
Customer: It is A1234.
Agent calls issue_refund({"order_id": "A1234"})
Tool issue_refund returned: refunded $12.00
Agent: Done: refunded $12.00.
</conversation>"""

GROUP_SYSTEM = """\
You are an impartial judge of customer-support conversations. Several support agents each handled the same \
customer, separately. Compare their conversations and score each one on each criterion, as an integer from 0 \
(worst) to 10 (best). A conversation that is clearly better on a criterion gets a clearly higher score there; \
conversations of nearly equal quality get nearly equal scores.

Criteria:
- resolution: The refund was issued and the customer told.
- tone: Polite and clear.

Answer with one JSON object and nothing else, one entry per conversation id: \
{"episodes": [{"id": 1, "scores": {"resolution": <0-10>, "tone": <0-10>}}, ...]}"""

GROUP_USER = CONTEXT + """

<shared_start>
Customer: My mug arrived broken.
Agent: Sorry! What is your order id?
Customer: It is A1234.
</shared_start>

<conversation id="1">
Agent calls issue_refund({"order_id": "A1234"})
Tool issue_refund returned: refunded $12.00
Agent: Done: refunded $12.00.
</conversation>

<conversation id="2">
Agent: Please wait.
</conversation>"""


def test_pointwise_prompt_is_the_golden_text():
    assert pointwise_messages(episode(REFUNDED), RUBRIC) == [
        {"role": "system", "content": POINTWISE_SYSTEM}, {"role": "user", "content": POINTWISE_USER}]


def test_group_prompt_writes_the_shared_start_once_and_numbers_the_conversations():
    assert group_messages([episode(REFUNDED), episode(WAITING)], RUBRIC) == [
        {"role": "system", "content": GROUP_SYSTEM}, {"role": "user", "content": GROUP_USER}]


def test_the_agents_private_reasoning_never_reaches_the_judge():
    prompt = json.dumps(group_messages([episode(REFUNDED), episode(WAITING)], RUBRIC))
    assert "ask for the id" not in prompt and "ask for the id" in json.dumps(episode(REFUNDED).messages)


# -- parsing -----------------------------------------------------------------------------------------

def test_pointwise_answers_are_read_plain_fenced_or_with_text_around():
    expected = {"resolution": 0.8, "tone": 1.0}
    assert parse_pointwise('{"scores": {"resolution": 8, "tone": 10}}', RUBRIC) == expected
    assert parse_pointwise('```json\n{"scores": {"resolution": 8, "tone": 10}}\n```', RUBRIC) == expected
    assert parse_pointwise('Here you go:\n```\n{"resolution": "8", "tone": 10.0}\n```\nBye', RUBRIC) == expected
    assert parse_pointwise('Scores: {"scores": {"resolution": 8, "tone": 10, "extra": 3}} done.', RUBRIC) == expected


@pytest.mark.parametrize("answer, problem", [
    ("The agent did fine, 8/10.", "no JSON object"),
    ('{"scores": {"resolution": 8, "tone": }}', "does not parse"),
    ('{"scores": {"resolution": 8}}', "no score for tone"),
    ('{"scores": {"resolution": 11, "tone": 5}}', "resolution = 11 is not a number from 0 to 10"),
    ('{"scores": {"resolution": -1, "tone": 5}}', "resolution = -1"),
    ('{"scores": {"resolution": true, "tone": 5}}', "resolution = True"),
    ('{"scores": {"resolution": "high", "tone": 5}}', "resolution = 'high'"),
    ('{"scores": [8, 5]}', "'scores' must be an object"),
])
def test_malformed_pointwise_answers_say_what_is_wrong(answer, problem):
    with pytest.raises(JudgeAnswerError, match=re.escape(problem)):
        parse_pointwise(answer, RUBRIC)


def test_group_answers_map_ids_back_in_order():
    answer = ('```json\n{"episodes": [{"id": 2, "scores": {"resolution": 1, "tone": 5}}, '
              '{"id": "1", "scores": {"resolution": 9, "tone": 7}}]}\n```')
    assert parse_group(answer, RUBRIC, 2) == [{"resolution": 0.9, "tone": 0.7}, {"resolution": 0.1, "tone": 0.5}]


@pytest.mark.parametrize("answer, problem", [
    ('{"scores": {"resolution": 8, "tone": 5}}', "no 'episodes' list"),
    ('{"episodes": [{"id": 1, "scores": {"resolution": 8, "tone": 5}}]}', "no scores for conversation id(s) [2]"),
    ('{"episodes": [{"id": 1, "scores": {"resolution": 8, "tone": 5}}, {"id": 1, "scores": '
     '{"resolution": 8, "tone": 5}}]}', "id 1 is repeated"),
    ('{"episodes": [{"id": 3, "scores": {"resolution": 8, "tone": 5}}]}', "id 3 is not one of 1..2"),
    ('{"episodes": [{"scores": {"resolution": 8, "tone": 5}}]}', "no integer id"),
    ('{"episodes": [{"id": 1, "scores": {"tone": 5}}, {"id": 2, "scores": {"resolution": 8, "tone": 5}}]}',
     "id 1: no score for resolution"),
])
def test_malformed_group_answers_say_what_is_wrong(answer, problem):
    with pytest.raises(JudgeAnswerError, match=re.escape(problem)):
        parse_group(answer, RUBRIC, 2)


# -- rubric ------------------------------------------------------------------------------------------

def test_rubrics_from_strings_mappings_and_yaml(tmp_path):
    assert load_rubric(None) == DEFAULT_RUBRIC
    assert load_rubric(["resolution: The refund was issued and the customer told.",
                        {"name": "tone", "description": "Polite and clear."}]) == (
        Criterion("resolution", "The refund was issued and the customer told.", 1.0), RUBRIC[1])
    path = tmp_path / "rubric.yaml"
    path.write_text("criteria:\n  - name: resolution\n    description: The refund was issued and the customer told.\n"
                    "    weight: 2\n  - 'tone: Polite and clear.'\n")
    assert load_rubric(str(path)) == RUBRIC


@pytest.mark.parametrize("spec, problem", [
    (["resolution solved"], "should read 'name: description'"),
    (["Resolution: solved"], "must be snake_case"),
    (["tone: a", "tone: b"], "repeated: tone"),
    ([{"name": "tone", "description": "x", "weight": 0}], "weight must be a number > 0"),
    ([{"name": "tone", "description": ""}], "needs a description"),
    ([{"name": "tone", "description": "x", "points": 3}], "unknown keys ['points']"),
    ([], "non-empty list"),
    ("missing.yaml", "is not a file"),
])
def test_bad_rubrics_name_the_entry(spec, problem):
    with pytest.raises(RubricError, match=re.escape(problem)):
        load_rubric(spec)


# -- the judge end to end, over HTTP -------------------------------------------------------------------

def scripted_judge(body: dict) -> str:
    """A rule standing in for a judge model: resolution 9 where issue_refund was called, else 2; tone 2 where
    the agent was rude, else 8. Answers every conversation of the prompt, in a ```json fence."""
    prompt = body["messages"][-1]["content"]

    def scores(text: str) -> dict:
        return {"resolution": 9 if "issue_refund(" in text else 2, "tone": 2 if "yourself" in text else 8}

    blocks = re.findall(r'<conversation id="(\d+)">\n(.*?)</conversation>', prompt, re.S)
    if blocks:
        answer = {"episodes": [{"id": int(n), "scores": scores(text)} for n, text in blocks]}
    else:
        answer = {"scores": scores(prompt.split("<conversation>")[1])}
    return f"```json\n{json.dumps(answer)}\n```"


def make_judge(url: str, mode: str, cache_path=None, log=None, retries: int = 1) -> LLMJudge:
    client = OpenAIChatClient(url, "judge", max_retries=retries, retry_backoff=0.01)
    chat = CachedChat(client, ChatCache(cache_path), temperature=0.0, max_tokens=256, kind="judge")
    return LLMJudge(chat, RUBRIC, mode, seed=5, log=log if log is not None else (lambda _: None))


def expected_judge_score(resolution: int, tone: int) -> float:
    return (2 * resolution / 10 + tone / 10) / 3


def test_pointwise_judge_inside_multi_objective_reward_and_cached(tmp_path):
    batch = [episode(REFUNDED), episode(WAITING), episode(RUDE)]
    with ChatServer(scripted_judge, model="judge") as server:
        judge = make_judge(server.base_url, "pointwise", tmp_path / "judge.jsonl")
        reward = MultiObjectiveReward([PolicyCompliance(), judge], weights=[0.5, 0.5])
        results = score_trajectories_sync(reward, batch)
        assert len(server.requests) == 3  # one per episode
        assert all(body["temperature"] == 0.0 and body["seed"] == 5 for body in server.requests)
        again = score_trajectories_sync(reward, batch)
        assert len(server.requests) == 3 and judge.chat.cache_hits == 3  # answered from the cache
    judged = [r.components["llm_judge"] for r in results]
    assert judged == pytest.approx([expected_judge_score(9, 8), expected_judge_score(2, 8),
                                    expected_judge_score(2, 2)])
    policy = [r.components["policy_compliance"] for r in results]
    assert [r.total for r in results] == pytest.approx([0.5 * p + 0.5 * j for p, j in zip(policy, judged)])
    assert [r.total for r in again] == [r.total for r in results]


def test_group_judge_makes_one_call_per_group_and_sends_identical_episodes_once():
    batch = [episode(REFUNDED, group=0), episode(WAITING, group=0), episode(REFUNDED, group=0),
             episode(RUDE, group=1, scenario="cs-2"), episode(WAITING, group=1, scenario="cs-2")]
    with ChatServer(scripted_judge, model="judge") as server:
        judge = make_judge(server.base_url, "group")
        results = score_trajectories_sync(MultiObjectiveReward([judge]), batch)
    assert len(server.requests) == 2
    prompts = [body["messages"][-1]["content"] for body in server.requests]
    assert sorted(p.count("<conversation id=") for p in prompts) == [2, 2]  # group 0 has 2 distinct of 3
    assert [r.components["llm_judge"] for r in results] == pytest.approx([
        expected_judge_score(9, 8), expected_judge_score(2, 8), expected_judge_score(9, 8),
        expected_judge_score(2, 2), expected_judge_score(2, 8)])


def test_unreadable_answers_skip_the_judge_logged_and_counted_the_rest_still_scores():
    logged: list[str] = []
    with ChatServer(lambda body: "The first agent was better.", model="judge") as server:
        judge = make_judge(server.base_url, "pointwise", log=logged.append)
        reward = MultiObjectiveReward([GoalReached(), judge], weights=[0.7, 0.3])
        results = score_trajectories_sync(reward, [episode(REFUNDED), episode(WAITING)], error_policy="fail")
        group_judge = make_judge(server.base_url, "group", log=logged.append)
        grouped = score_trajectories_sync(MultiObjectiveReward([PolicyCompliance(), group_judge]),
                                          [episode(REFUNDED), episode(WAITING)])
    assert judge.skipped == 2 and group_judge.skipped == 2
    assert all("llm_judge" not in r.components for r in [*results, *grouped])
    # the judge's weight is left out: the total is the goal component alone, renormalised
    assert [r.total for r in results] == pytest.approx([r.components["goal_reached"] for r in results])
    assert len(logged) == 3 and all("answer unreadable" in line and "no JSON object" in line for line in logged)
    assert "2 episode(s) of scenario 'cs-1'" in logged[-1]  # the group is skipped as a whole


def test_a_failing_judge_endpoint_is_a_logged_skip_not_a_crash():
    logged: list[str] = []
    with ChatServer(scripted_judge, model="judge", fail_when=lambda body: True) as server:
        judge = make_judge(server.base_url, "pointwise", log=logged.append, retries=1)
        results = score_trajectories_sync(MultiObjectiveReward([PolicyCompliance(), judge]), [episode(WAITING)],
                                          error_policy="fail")
    assert len(server.requests) == 2 and judge.skipped == 1
    assert results[0].components == {"policy_compliance": 1.0}
    assert "ChatModelError" in logged[0] and "HTTP 500" in logged[0]


def test_with_judge_gives_the_judge_its_share_and_keeps_the_other_ratios():
    base = MultiObjectiveReward([GoalReached(), PolicyCompliance()], weights=[0.6, 0.2], name="base")
    judge = LLMJudge(None, RUBRIC)
    combined = with_judge(base, judge, 0.3)
    assert combined.weights == pytest.approx({"goal_reached": 0.525, "policy_compliance": 0.175, "llm_judge": 0.3})
    assert base.weights == {"goal_reached": 0.6, "policy_compliance": 0.2} and judge not in base.components
    with pytest.raises(TypeError, match="not one: add LLMJudge"):
        with_judge(lambda trajectory: 1.0, judge, 0.3)
    with pytest.raises(ValueError, match="already has a component named 'llm_judge'"):
        with_judge(combined, judge, 0.3)


# -- judge_weight and reward: module:Class from the config ------------------------------------------------

KIMI_REWARD = '''
from stateset_agents.rewards.base import RewardResult
from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward


class KimiReward(MultiObjectiveReward):
    """The guide's pattern: the components' weighted mean, minus 0.1 per assistant turn past the first."""

    async def compute_reward(self, trajectory):
        result = await super().compute_reward(trajectory)
        return RewardResult(result.total - 0.1 * max(0, len(trajectory.turns) - 1), result.components)


def answer_length(trajectory):
    return float(len(trajectory.messages))


class NeedsTask:
    def __init__(self, task):
        self.task = task

    def __call__(self, trajectory):
        return 1.0


class NeedsTwo:
    def __init__(self, a, b):
        pass


class Broken(MultiObjectiveReward):
    def __init__(self):
        raise RuntimeError("no weights file")
'''


@pytest.fixture()
def rewards_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(KIMI_REWARD)
    return path


def test_module_class_rewards_load_from_a_file_or_the_current_directory(rewards_file, monkeypatch):
    from stateset_agents.tasks.registry import get_task

    task = get_task("customer_service")
    reward = load_reward(f"{rewards_file}:KimiReward", task)
    assert type(reward).__name__ == "KimiReward" and isinstance(reward, MultiObjectiveReward)
    assert load_reward(f"{rewards_file}:answer_length", task)(episode(WAITING)) == 5.0
    assert load_reward(f"{rewards_file}:NeedsTask", task).task is task
    monkeypatch.chdir(rewards_file.parent)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    assert type(load_reward("my_rewards:KimiReward", task)).__name__ == "KimiReward"


@pytest.mark.parametrize("spec, problem", [
    ("no_such_module_xyz:KimiReward", "cannot import module 'no_such_module_xyz': ModuleNotFoundError"),
    ("{file}:Missing", "has no attribute 'Missing' (it has: Broken, KimiReward,"),
    ("{file}:NeedsTwo", "NeedsTwo(a, b) takes neither no arguments nor the task alone"),
    ("{file}:Broken", "Broken() raised RuntimeError: no weights file"),
    ("KimiReward", "must read 'module:Name'"),
])
def test_a_reward_that_cannot_load_names_the_module_and_the_class(spec, problem, rewards_file):
    with pytest.raises(RewardLoadError, match=re.escape(problem)):
        load_reward(spec.format(file=rewards_file), None)


def test_judge_weight_alone_adds_the_judge_to_the_tasks_reward(tmp_path):
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.llm_setup import LLMServices

    task = get_task("customer_service")
    with ChatServer(scripted_judge, model="judge") as server:
        config = TrainingConfig(output_dir=str(tmp_path / "run"), judge_weight=0.3, judge_model_url=server.base_url,
                                judge_rubric=["resolution: The refund was issued.", "tone: Polite."])
        reward = LLMServices(config, config.output_dir).reward_for(task)
    default = task.default_reward()
    assert [c.name for c in reward.components] == [*[c.name for c in default.components], "llm_judge"]
    assert reward.weights["llm_judge"] == pytest.approx(0.3)
    assert sum(reward.weights.values()) == pytest.approx(1.0)
    assert [c.name for c in reward.components[-1].rubric] == ["resolution", "tone"]


def test_judge_weight_with_a_reward_function_is_refused_naming_both(tmp_path, rewards_file):
    from stateset_agents.tasks.registry import get_task
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.llm_setup import LLMServices

    config = TrainingConfig(output_dir=str(tmp_path / "run"), judge_weight=0.3, judge_model="tiny-kimi-k2.5-base",
                            reward=f"{rewards_file}:answer_length")
    with pytest.raises(RewardLoadError, match=r"judge_weight=0.3 with reward '.*answer_length': .* is not one"):
        LLMServices(config, config.output_dir).reward_for(get_task("customer_service"))


def test_one_training_iteration_with_a_module_class_reward_and_the_judge(tmp_path, rewards_file):
    from test_trainer import tiny_config

    from stateset_agents.training.trainer import GSPOTrainer

    with ChatServer(scripted_judge, model="judge") as server:
        config = tiny_config(tmp_path, num_outer_iterations=1, save_every=0, reward=f"{rewards_file}:KimiReward",
                             judge_weight=0.3, judge_model_url=server.base_url, judge_mode="group",
                             judge_rubric=[f"{c.name}: {c.description}" for c in RUBRIC])
        trainer = GSPOTrainer(config, log=lambda _: None)
        metrics = trainer.train().history[0]
    reward = trainer.reward_for(trainer.tasks[0])
    assert type(reward).__name__ == "KimiReward" and reward.components[-1] is trainer.llm.judge
    assert metrics["judge/requests"] == len(server.requests) == config.scenarios_per_iteration  # one per group
    assert metrics["judge/skipped"] == 0 and metrics["judge/cache_hits"] == 0
    assert expected_judge_score(2, 2) <= metrics["reward/llm_judge"] <= expected_judge_score(9, 8)


def test_the_cli_reports_a_reward_that_cannot_load_as_one_error_line(tmp_path, capsys):
    from stateset_agents.cli import main

    code = main(["train", "--output-dir", str(tmp_path / "run"), "--reward", "no_such_module_xyz:KimiReward"])
    assert code == 2
    assert "error: reward 'no_such_module_xyz:KimiReward': cannot import module" in capsys.readouterr().err
