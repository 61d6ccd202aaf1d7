"""Tasks: registry, shipped scenario data (sizes, disjoint splits, reproducible), loading, photos."""

from __future__ import annotations

import json

import pytest

from stateset_agents.envs.tools import ToolSet
from stateset_agents.rewards import MultiObjectiveReward
from stateset_agents.tasks import ScenarioError, get_task, list_tasks, load_scenarios
from stateset_agents.tasks.generate_data import fresh_scenarios, generate_all
from stateset_agents.tasks.images import render_photo, scenario_image_url

TASKS = ["customer_service", "customer_service_claims", "customer_service_partner", "sales", "technical_support"]


def test_registry_lists_and_rejects_unknown_names():
    assert list_tasks() == TASKS
    with pytest.raises(ValueError, match="unknown task 'cooking'; valid tasks: " + ", ".join(TASKS)):
        get_task("cooking")


@pytest.mark.parametrize("name", TASKS)
def test_task_interface(name):
    task = get_task(name)
    assert task.name == name and task.system_prompt
    assert isinstance(task.tools, ToolSet) and len(task.tools) >= 4
    assert isinstance(task.default_reward(), MultiObjectiveReward)
    names = [schema["function"]["name"] for schema in task.tools.schemas()]
    assert all(name.islower() and " " not in name for name in names)


@pytest.mark.parametrize("name", TASKS)
def test_splits_are_big_enough_disjoint_and_cover_every_family(name):
    task = get_task(name)
    train, held_out = task.train_scenarios(), task.eval_scenarios()
    assert len(train) >= 40 and len(held_out) >= 20
    assert not {s["id"] for s in train} & {s["id"] for s in held_out}
    ids = lambda split: {v for s in split for k, v in s["facts"].items() if k.endswith("_id") or k == "sku"}  # noqa: E731
    assert not ids(train) & ids(held_out)  # no shared order, device, account or item ids
    signature = lambda s: json.dumps([s["opening"], s["facts"], s["world"]], sort_keys=True)  # noqa: E731
    assert not {signature(s) for s in train} & {signature(s) for s in held_out}
    for split in (train, held_out):
        assert {s["family"] for s in split} == set(task.families)


@pytest.mark.parametrize("name", TASKS)
def test_fresh_warm_up_scenarios_are_valid_reproducible_and_share_no_id_with_the_shipped_splits(name):
    task = get_task(name)
    fresh = fresh_scenarios(task, 60, seed=3)
    assert fresh == fresh_scenarios(task, 60, seed=3)
    assert fresh != fresh_scenarios(task, 60, seed=4)
    for scenario in fresh:
        task.validate_scenario(scenario)
    ids = lambda split: {v for s in split for k, v in s["facts"].items() if k.endswith("_id") or k == "sku"}  # noqa: E731
    assert ids(fresh) and not ids(fresh) & (ids(task.train_scenarios()) | ids(task.eval_scenarios()))
    assert {s["family"] for s in fresh} == set(task.families)


def test_scenario_lists_are_fresh_copies():
    task = get_task("sales")
    first = task.train_scenarios()
    first[0]["facts"].clear()
    assert task.train_scenarios()[0]["facts"]


def test_generator_reproduces_shipped_files_byte_for_byte(tmp_path):
    written = generate_all(tmp_path)
    assert len(written) == 2 * len(TASKS)
    for path in written:
        shipped = get_task(path.name.rsplit("_", 1)[0]).data_path(path.stem.rsplit("_", 1)[1])
        assert path.read_bytes() == shipped.read_bytes(), path.name


def _write(tmp_path, records: list) -> str:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return str(path)


def test_load_own_jsonl_and_clear_errors(tmp_path):
    good = get_task("customer_service").train_scenarios()[:2]
    assert load_scenarios(_write(tmp_path, good), "customer_service") == good
    missing_goal = {k: v for k, v in good[1].items() if k != "goal"}
    with pytest.raises(ScenarioError, match=r"mine.jsonl, line 2 \(id 'cs-train-001'\): goal: Field required"):
        load_scenarios(_write(tmp_path, [good[0], missing_goal]), "customer_service")
    with pytest.raises(ScenarioError, match="line 2: invalid JSON"):
        load_scenarios(_write(tmp_path, [good[0], "{nope"]), "customer_service")
    bad_tool = json.loads(json.dumps(good[0]))
    bad_tool["goal"]["require"][0]["tool"] = "teleport"
    with pytest.raises(ScenarioError, match="line 1.*unknown tool.*teleport"):
        load_scenarios(_write(tmp_path, [bad_tool]), "customer_service")
    with pytest.raises(ScenarioError, match="line 2.*duplicate id"):
        load_scenarios(_write(tmp_path, [good[0], good[0]]), "customer_service")
    with pytest.raises(ScenarioError, match="task is 'customer_service', expected 'sales'"):
        load_scenarios(_write(tmp_path, good), "sales")
    bad_world = json.loads(json.dumps(good[0]))
    bad_world["facts"]["order_id"] = "A0000"
    with pytest.raises(ScenarioError, match="not in world.orders"):
        load_scenarios(_write(tmp_path, [bad_world]), get_task("customer_service"))
    with pytest.raises(ScenarioError, match=r"row 0 \(id 'cs-train-000'\): facts: value of 'order_id' must be a string or a number"):
        load_scenarios([dict(good[0], facts={"order_id": ["A1"]})], "customer_service")


def test_load_from_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    scenarios = get_task("customer_service").train_scenarios()[:6]
    rows = [dict(s, image=s.get("image")) for s in scenarios]  # every row needs every column
    assert load_scenarios(datasets.Dataset.from_list(rows), "customer_service") == scenarios
    broken = datasets.Dataset.from_list([dict(rows[0], opening="")])
    with pytest.raises(ScenarioError, match="row 0 .*opening: String should have at least 1 character"):
        load_scenarios(broken, "customer_service")


def test_photos_are_deterministic_small_and_differ_by_kind():
    intact, damaged = render_photo("intact", 7), render_photo("damaged", 7)
    assert intact.size == damaged.size == (56, 56)
    assert intact.tobytes() == render_photo("intact", 7).tobytes()
    assert intact.tobytes() != damaged.tobytes() and intact.tobytes() != render_photo("intact", 8).tobytes()
    with pytest.raises(ValueError):
        render_photo("melted", 1)
    photo = next(s for s in get_task("customer_service").train_scenarios() if s.get("image"))
    assert scenario_image_url(photo) == scenario_image_url(dict(photo)) and len(scenario_image_url(photo)) < 4000


# NaN / Infinity in tool arguments: Python's json reads them, and NaN fails every `amount > cap` check
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


def non_finite_call(name: str, scenario: dict, number: str) -> tuple[str, str]:
    world = scenario["world"]
    if name.startswith("customer_service"):
        return "issue_refund", f'{{"order_id": "{scenario["facts"]["order_id"]}", "amount": {number}}}'
    if name == "sales":
        return "create_quote", f'{{"sku": "{next(iter(world["catalog"]))}", "price": {number}}}'
    return "restart_device", f'{{"device_id": "{next(iter(world["devices"]))}", "delay": {number}}}'


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize("name", TASKS)
def test_non_finite_tool_arguments_are_a_tool_error(name, number):
    from stateset_agents.core.formats import KimiChatFormat

    task = get_task(name)
    scenario = task.train_scenarios()[0]
    env = task.make_env(scenario)
    env.reset()
    tool, arguments = non_finite_call(name, scenario, number)
    sampled = (f"r</think><|tool_calls_section_begin|><|tool_call_begin|>functions.{tool}:0"
               f"<|tool_call_argument_begin|>{arguments}<|tool_call_end|><|tool_calls_section_end|><|im_end|>")
    result = env.step(KimiChatFormat().parse(sampled))
    reply = result.messages[0]["content"]
    assert reply.startswith("error:") and "finite" in reply, reply
    assert [action["ok"] for action in env.state["actions"]] == [False]
    assert not any(env.state[ledger] for ledger in task.ledgers)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("tool,arguments", [
    ("issue_refund", {"amount": None}), ("apply_discount", {"percent": None}), ("create_quote", {"price": None}),
])
def test_numeric_policy_checks_count_non_finite_values_as_violations(tool, arguments, value):
    """The tools themselves refuse NaN/inf (e.g. when called from Python, not from parsed JSON)."""
    from stateset_agents.envs.tools import ToolError

    task = get_task("customer_service" if tool == "issue_refund" else "sales")
    scenario = task.train_scenarios()[0]
    state = task.initial_state(scenario)
    key = scenario["facts"].get("order_id") or next(iter(scenario["world"]["catalog"]))
    target = {"order_id": key} if tool == "issue_refund" else {"sku": key}
    with pytest.raises(ToolError, match="finite"):
        task.tools[tool].function(state, **target, **{name: value for name in arguments})
    assert len(state["policy_violations"]) == 1
    assert not any(state[ledger] for ledger in task.ledgers)
