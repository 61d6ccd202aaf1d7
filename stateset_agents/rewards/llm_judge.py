"""An LLM judge as a reward component: a rubric scored by a chat model (OpenAI-compatible or local).

`LLMJudge(chat, rubric, mode)` is a component of `MultiObjectiveReward` like the rule-based ones
(name ``llm_judge``, a score in [0, 1]), next to them or alone. The rubric is a list of criteria
(name, description, weight); the judge gives each criterion 0-10; the score is their weighted mean
/ 10.

Two modes:

- ``pointwise``: one judge call per episode, which sees that conversation only.
- ``group``: one judge call per group (the episodes of one scenario that GRPO/GSPO compares), which
  sees them side by side and scores each, after the idea of ART's RULER (Relative Universal
  LLM-Elicited Rewards): comparing is easier for a judge than scoring in isolation, and group
  advantages only use the differences within a group anyway. Identical conversations are sent once
  and share their score; the opening the episodes share is written once.

What the judge sees: the agent's instructions (its system prompt), the customer's goal from the
scenario (hidden from the agent; it tells the judge what "solved" means), and the conversation as a
transcript of visible text, tool calls and tool results (never the agent's private reasoning).

Determinism: the judge samples at `temperature` (0 by default) with a fixed `seed`, and its answers
are cached (rollout/chat_cache.py) by the exact prompt, so the same conversation gets the same score.

Answers must be one JSON object (a ```json fence around it is accepted): pointwise
``{"scores": {"<criterion>": 0-10, ...}}``, group ``{"episodes": [{"id": 1, "scores": {...}}, ...]}``.
When the judge cannot be asked (the endpoint failed after its retries) or its answer cannot be read
(not JSON, a criterion missing, a score outside 0-10, an id missing), the component is skipped for
those episodes: it returns None, `MultiObjectiveReward` leaves it out of their weighted mean (the
other components' weights are renormalised), the reason is logged and ``skipped`` counts them
(logged as ``judge/skipped``). In group mode a failure skips the whole group, so a group never mixes
episodes scored with and without the judge.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stateset_agents.core.messages import message_text
from stateset_agents.core.trajectory import Trajectory

__all__ = ["Criterion", "DEFAULT_RUBRIC", "JUDGE_MODES", "JudgeAnswerError", "RubricError", "LLMJudge", "load_rubric",
           "pointwise_messages", "group_messages", "parse_pointwise", "parse_group", "render_transcript",
           "with_judge", "SCALE"]

SCALE = 10
JUDGE_MODES = ("pointwise", "group")
TOOL_RESULT_CHARS = 400  # long tool results (catalogs, logs) are cut: the judge needs the gist
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class RubricError(ValueError):
    """A judge rubric (config `judge_rubric` or a YAML file) is malformed; says which entry and why."""


class JudgeAnswerError(ValueError):
    """The judge's answer cannot be read as the scores asked for; says what is wrong."""


@dataclass(frozen=True)
class Criterion:
    """One line of the rubric: a snake_case `name`, what it rewards, and its `weight` in the mean."""

    name: str
    description: str
    weight: float = 1.0


DEFAULT_RUBRIC: tuple[Criterion, ...] = (
    Criterion("resolution", "The customer's problem was actually solved: the right actions were taken (tool "
              "calls that succeeded) and the customer was told the outcome.", 2.0),
    Criterion("policy", "The agent followed its instructions and policies, asked for what it needed, and "
              "never claimed an action it had not taken.", 1.0),
    Criterion("communication", "The agent's replies were clear, polite, concise and answered what the "
              "customer asked.", 1.0),
)


# -- rubric --------------------------------------------------------------------------------------

def load_rubric(spec: str | Path | Sequence[Any] | None) -> tuple[Criterion, ...]:
    """Criteria from `spec`: None (the default rubric), a YAML file path (a list, or a mapping with
    ``criteria:``), or a list of ``"name: description"`` strings / ``{name, description, weight}`` mappings.
    Raises `RubricError` saying which entry is wrong."""
    if spec is None:
        return DEFAULT_RUBRIC
    where = "judge_rubric"
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise RubricError(f"judge_rubric {str(spec)!r} is not a file: give a YAML file of criteria or a list of "
                             f"'name: description' strings")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise RubricError(f"judge_rubric {path}: not valid YAML ({str(error).splitlines()[0]})") from None
        spec = loaded.get("criteria") if isinstance(loaded, Mapping) else loaded
        where = str(path)
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or not spec:
        raise RubricError(f"{where}: expected a non-empty list of criteria, got {type(spec).__name__}")
    criteria = tuple(_criterion(entry, where, index) for index, entry in enumerate(spec))
    names = [c.name for c in criteria]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RubricError(f"{where}: criterion names must be unique; repeated: {', '.join(duplicates)}")
    return criteria


def _criterion(entry: Any, where: str, index: int) -> Criterion:
    if isinstance(entry, Criterion):
        entry = {"name": entry.name, "description": entry.description, "weight": entry.weight}
    if isinstance(entry, str):
        name, sep, description = entry.partition(":")
        if not sep:
            raise RubricError(f"{where}[{index}]: {entry!r} should read 'name: description'")
        entry = {"name": name.strip(), "description": description.strip()}
    if not isinstance(entry, Mapping):
        raise RubricError(f"{where}[{index}]: a criterion is a 'name: description' string or a mapping, "
                         f"got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"name", "description", "weight"})
    if unknown:
        raise RubricError(f"{where}[{index}]: unknown keys {unknown} (a criterion has name, description, weight)")
    name, description = str(entry.get("name", "")), str(entry.get("description", "")).strip()
    if not _NAME.match(name):
        raise RubricError(f"{where}[{index}]: criterion name {name!r} must be snake_case (e.g. 'resolution')")
    if not description:
        raise RubricError(f"{where}[{index}]: criterion {name!r} needs a description (what the judge rewards)")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise RubricError(f"{where}[{index}]: criterion {name!r} weight must be a number > 0, got {weight!r}")
    return Criterion(name, description, float(weight))


# -- prompts -------------------------------------------------------------------------------------

def render_transcript(trajectory: Trajectory) -> list[str]:
    """The conversation as the judge reads it, one entry per message (system messages left out)."""
    lines: list[str] = []
    for message in trajectory.messages:
        role, text = message.get("role"), message_text(message).strip()
        if role == "user":
            lines.append(f"Customer: {text}")
        elif role == "assistant":
            if text:
                lines.append(f"Agent: {text}")
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                lines.append(f"Agent calls {function.get('name', '?')}({function.get('arguments', '')})")
        elif role == "tool":
            cut = text if len(text) <= TOOL_RESULT_CHARS else text[:TOOL_RESULT_CHARS] + " [...]"
            lines.append(f"Tool {message.get('name', '')} returned: {cut}")
    return lines


def _context(trajectory: Trajectory) -> str:
    instructions = next((message_text(m) for m in trajectory.messages if m.get("role") == "system"), "")
    goal = (trajectory.scenario.get("goal") or {}).get("description", "")
    parts = [f"<agent_instructions>\n{instructions.strip() or '(none)'}\n</agent_instructions>"]
    if goal:
        parts.append(f"<customer_goal>\n{goal}\n</customer_goal>")
    return "\n\n".join(parts)


def _criteria_lines(rubric: Sequence[Criterion]) -> str:
    return "\n".join(f"- {c.name}: {c.description}" for c in rubric)


def _scores_example(rubric: Sequence[Criterion]) -> str:
    return "{" + ", ".join(f'"{c.name}": <0-{SCALE}>' for c in rubric) + "}"


def pointwise_messages(trajectory: Trajectory, rubric: Sequence[Criterion]) -> list[dict[str, str]]:
    """The judge's prompt for one conversation."""
    system = (
        "You are an impartial judge of customer-support conversations. Score the support agent's conduct in the "
        f"conversation below on each criterion, as an integer from 0 (worst) to {SCALE} (best).\n\n"
        f"Criteria:\n{_criteria_lines(rubric)}\n\n"
        f'Answer with one JSON object and nothing else: {{"scores": {_scores_example(rubric)}}}')
    transcript = "\n".join(render_transcript(trajectory))
    user = f"{_context(trajectory)}\n\n<conversation>\n{transcript}\n</conversation>"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def group_messages(trajectories: Sequence[Trajectory], rubric: Sequence[Criterion]) -> list[dict[str, str]]:
    """The judge's prompt for a group: the shared context and opening once, then each conversation by id
    (1, 2, ... in the order given; pass each distinct conversation once)."""
    transcripts = [render_transcript(t) for t in trajectories]
    shared = _common_prefix(transcripts) if len(transcripts) > 1 else 0
    system = (
        "You are an impartial judge of customer-support conversations. Several support agents each handled the "
        "same customer, separately. Compare their conversations and score each one on each criterion, as an integer "
        f"from 0 (worst) to {SCALE} (best). A conversation that is clearly better on a criterion gets a clearly "
        "higher score there; conversations of nearly equal quality get nearly equal scores.\n\n"
        f"Criteria:\n{_criteria_lines(rubric)}\n\n"
        'Answer with one JSON object and nothing else, one entry per conversation id: '
        f'{{"episodes": [{{"id": 1, "scores": {_scores_example(rubric)}}}, ...]}}')
    parts = [_context(trajectories[0])]
    if shared:
        parts.append("<shared_start>\n" + "\n".join(transcripts[0][:shared]) + "\n</shared_start>")
    for number, lines in enumerate(transcripts, start=1):
        rest = "\n".join(lines[shared:]) or "(nothing after the shared start)"
        parts.append(f'<conversation id="{number}">\n{rest}\n</conversation>')
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def _common_prefix(transcripts: list[list[str]]) -> int:
    length = 0
    for entries in zip(*transcripts):
        if any(entry != entries[0] for entry in entries):
            break
        length += 1
    return length


# -- parsing -------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)


def _json_object(text: str) -> dict[str, Any]:
    """The one JSON object in `text`: inside a ``` fence when there is one, else from the first { to the last }."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise JudgeAnswerError(f"no JSON object in the answer: {text[:120]!r}")
    try:
        value = json.loads(body[start:end + 1])
    except ValueError as error:
        raise JudgeAnswerError(f"the answer's JSON does not parse ({error}): {body[start:end + 1][:120]!r}") from None
    if not isinstance(value, dict):
        raise JudgeAnswerError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _criterion_scores(scores: Any, rubric: Sequence[Criterion], where: str) -> dict[str, float]:
    if not isinstance(scores, Mapping):
        raise JudgeAnswerError(f"{where}: 'scores' must be an object of criterion -> 0-{SCALE}, got {scores!r:.80}")
    missing = [c.name for c in rubric if c.name not in scores]
    if missing:
        raise JudgeAnswerError(f"{where}: no score for {', '.join(missing)}")
    result = {}
    for criterion in rubric:
        value = scores[criterion.name]
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= SCALE:
            raise JudgeAnswerError(f"{where}: {criterion.name} = {value!r} is not a number from 0 to {SCALE}")
        result[criterion.name] = float(value) / SCALE
    return result


def parse_pointwise(text: str, rubric: Sequence[Criterion]) -> dict[str, float]:
    """Criterion -> score in [0, 1] from a pointwise answer; raises `JudgeAnswerError`."""
    answer = _json_object(text)
    return _criterion_scores(answer.get("scores", answer), rubric, "answer")


def parse_group(text: str, rubric: Sequence[Criterion], count: int) -> list[dict[str, float]]:
    """Each conversation's criterion -> score in [0, 1] (ids 1..count, in order); raises `JudgeAnswerError`."""
    episodes = _json_object(text).get("episodes")
    if not isinstance(episodes, list):
        raise JudgeAnswerError("the answer has no 'episodes' list")
    found: dict[int, dict[str, float]] = {}
    for entry in episodes:
        if not isinstance(entry, Mapping):
            raise JudgeAnswerError(f"an 'episodes' entry is not an object: {entry!r:.80}")
        try:
            number = int(entry.get("id"))
        except (TypeError, ValueError):
            raise JudgeAnswerError(f"an 'episodes' entry has no integer id: {entry!r:.80}") from None
        if not 1 <= number <= count or number in found:
            raise JudgeAnswerError(f"id {number} is {'repeated' if number in found else 'not one of 1..' + str(count)}")
        found[number] = _criterion_scores(entry.get("scores"), rubric, f"id {number}")
    missing = [n for n in range(1, count + 1) if n not in found]
    if missing:
        raise JudgeAnswerError(f"no scores for conversation id(s) {missing}")
    return [found[n] for n in range(1, count + 1)]


def weighted_score(scores: Mapping[str, float], rubric: Sequence[Criterion]) -> float:
    """The rubric's weighted mean of criterion scores (each in [0, 1])."""
    return sum(c.weight * scores[c.name] for c in rubric) / sum(c.weight for c in rubric)


# -- the component -------------------------------------------------------------------------------

class LLMJudge:
    """A rubric judge over `chat` (a `rollout.chat_cache.CachedChat`); see the module docstring.

    Use it as a component of `MultiObjectiveReward`: ``MultiObjectiveReward([GoalReached(), judge],
    weights=[0.7, 0.3])``, or add it to an existing reward with `with_judge`.
    """

    name = "llm_judge"

    def __init__(self, chat, rubric: Sequence[Criterion] | str | Path | None = None, mode: str = "pointwise", *,
                 seed: int = 0, log: Callable[[str], None] = print) -> None:
        if mode not in JUDGE_MODES:
            raise ValueError(f"judge mode must be one of {', '.join(JUDGE_MODES)}, got {mode!r}")
        self.chat = chat
        self.rubric = load_rubric(rubric)
        self.mode = mode
        self.seed = seed
        self.log = log
        self.skipped = 0
        self._prepared: dict[int, tuple[Trajectory, float | None]] = {}

    # sync use (MultiObjectiveReward.score): one episode at a time
    def __call__(self, trajectory: Trajectory) -> float | None:
        from stateset_agents.rollout.vllm_client import run_sync

        return run_sync(self.ascore(trajectory))

    async def ascore(self, trajectory: Trajectory) -> float | None:
        """The episode's score in [0, 1], or None (skipped, logged and counted)."""
        prepared = self._prepared.pop(id(trajectory), None)
        if prepared is not None and prepared[0] is trajectory:
            return prepared[1]
        if self.mode == "group":
            return (await self._judge_group([trajectory]))[0]
        return await self._judge_one(trajectory)

    async def prepare_batch(self, trajectories: Sequence[Trajectory]) -> None:
        """Group mode: judge each group of the batch in one call (concurrently); `ascore` then reads the result."""
        self._prepared.clear()
        if self.mode != "group":
            return
        groups: dict[tuple, list[Trajectory]] = {}
        for trajectory in trajectories:
            key = (trajectory.task, trajectory.group_id, str(trajectory.scenario.get("id", "")))
            groups.setdefault(key, []).append(trajectory)
        results = await asyncio.gather(*(self._judge_group(members) for members in groups.values()))
        for members, scores in zip(groups.values(), results):
            for trajectory, score in zip(members, scores):
                self._prepared[id(trajectory)] = (trajectory, score)

    async def _judge_one(self, trajectory: Trajectory) -> float | None:
        try:
            answer = await self.chat.ask(pointwise_messages(trajectory, self.rubric), seed=self.seed)
            return weighted_score(parse_pointwise(answer, self.rubric), self.rubric)
        except Exception as error:  # noqa: BLE001 - any failure skips the judge for this episode
            return self._skip([trajectory], error)

    async def _judge_group(self, members: list[Trajectory]) -> list[float | None]:
        transcripts = [tuple(render_transcript(t)) for t in members]
        distinct = list(dict.fromkeys(transcripts))  # identical conversations are judged once
        representatives = [members[transcripts.index(t)] for t in distinct]
        try:
            answer = await self.chat.ask(group_messages(representatives, self.rubric), seed=self.seed)
            scores = [weighted_score(s, self.rubric) for s in parse_group(answer, self.rubric, len(distinct))]
        except Exception as error:  # noqa: BLE001 - any failure skips the judge for the whole group
            return [self._skip(members, error)] * len(members)
        return [scores[distinct.index(t)] for t in transcripts]

    def _skip(self, trajectories: Sequence[Trajectory], error: Exception) -> None:
        self.skipped += len(trajectories)
        scenario = trajectories[0].scenario.get("id", "?")
        what = "answer unreadable" if isinstance(error, JudgeAnswerError) else f"{type(error).__name__}"
        self.log(f"judge: skipped for {len(trajectories)} episode(s) of scenario {scenario!r} ({what}: {error})")
        return None


def with_judge(reward, judge: LLMJudge, weight: float):
    """A copy of `reward` (a `MultiObjectiveReward`) with `judge` added as a component that makes up
    `weight` of the total (the other weights are scaled to share the rest, keeping their ratios)."""
    from stateset_agents.rewards.multi_objective_reward import MultiObjectiveReward

    if not isinstance(reward, MultiObjectiveReward):
        raise TypeError(f"judge_weight adds the judge as a component of a MultiObjectiveReward; reward "
                        f"{type(reward).__name__} is not one: add LLMJudge to its components yourself, or unset "
                        f"judge_weight")
    if not 0 < weight < 1:
        raise ValueError(f"judge weight must be in (0, 1) (the judge's share of the reward), got {weight}")
    if any(component.name == judge.name for component in reward.components):
        raise ValueError(f"reward {reward.name!r} already has a component named {judge.name!r}")
    combined = copy.copy(reward)
    scale = (1 - weight) / sum(reward.weights.values())
    combined.components = [*reward.components, judge]
    combined.weights = {**{name: w * scale for name, w in reward.weights.items()}, judge.name: weight}
    return combined
