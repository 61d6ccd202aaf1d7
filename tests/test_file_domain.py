"""File domains (tasks/file_domain.py): loading, validation errors naming file/line/field, the scripted
oracle on the example domain and on customer_service converted to files (same episodes as the
built-in), `get_task(path)`, `task: path` in the config, the shipped transcripts, and a 1-iteration run."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from statistics import mean

import pytest
import yaml

from stateset_agents.cli import main
from stateset_agents.core.completion import ToolCall
from stateset_agents.tasks.domain_yaml import DomainError
from stateset_agents.tasks.episodes import run_scripted_episode
from stateset_agents.tasks.file_domain import FileDomainTask, domain_notes, load_domain, task_slug
from stateset_agents.tasks.registry import UnknownTaskError, get_task
from stateset_agents.tasks.scripted_agents import make_agent
from stateset_agents.training.config import TrainingConfig

REPO = Path(__file__).resolve().parent.parent
TELECOM = REPO / "examples" / "domains" / "telecom_billing"
CONVERTED_CS = REPO / "examples" / "domains" / "customer_service"
TINY = "tiny-kimi-k2.5-base"


@pytest.fixture(scope="module")
def telecom() -> FileDomainTask:
    return load_domain(TELECOM)


def copy_domain(tmp_path: Path, source: Path = TELECOM) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("transcripts.jsonl", "*.py", "__pycache__"))
    return target


def edit(path: Path, old: str, new: str) -> int:
    """Replace the first `old` in `path` with `new`; returns the (1-based) line where it starts."""
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return text[:text.index(old)].count("\n") + 1


def load_error(domain: Path) -> str:
    with pytest.raises(DomainError) as caught:
        load_domain(domain)
    return str(caught.value)


# -- loading -------------------------------------------------------------------------------------

def test_example_domain_loads_as_a_task(telecom):
    assert telecom.name == "telecom_billing"
    assert telecom.tools.names == ["lookup_account", "list_charges", "credit_charge", "change_plan", "escalate"]
    assert telecom.ledgers == ("credits", "plan_changes", "escalations")
    assert len(telecom.train_scenarios()) == 60 and len(telecom.eval_scenarios()) == 30
    assert set(telecom.families) == {"duplicate_charge", "late_fee", "roaming_over_cap", "plan_fee_dispute",
                                     "upgrade", "downgrade_in_contract"}
    assert telecom.fact_specs["account_number"].noun == "account number"
    schema = telecom.tools["change_plan"].schema()["function"]["parameters"]
    assert schema["required"] == ["account_number", "plan"]  # `required` defaults to every property
    assert schema["properties"]["plan"]["enum"] == ["basic", "plus", "unlimited"]
    train_ids = {s["facts"]["account_number"] for s in telecom.train_scenarios()}
    assert not train_ids & {s["facts"]["account_number"] for s in telecom.eval_scenarios()}
    assert re.fullmatch(r"[0-9a-f]{64}", telecom.digest) and load_domain(TELECOM).digest == telecom.digest


def test_declarative_tools_act_on_the_world_and_record_policy_violations(telecom):
    scenario = next(s for s in telecom.train_scenarios() if s["family"] == "roaming_over_cap")
    env = telecom.make_env(scenario)
    state, account = env.state, scenario["facts"]["account_number"]
    charge = scenario["disputed_charge"]
    amount = scenario["world"]["charges"][charge]["amount"]
    run = lambda name, **args: telecom.tools.run(ToolCall(id="c", name=name, arguments=args), state)  # noqa: E731

    listing = run("list_charges", account_number=account.lower())  # lookups ignore case
    assert listing.ok and f"{charge} roaming data" in listing.content
    ids = re.findall(r"CH\d+", listing.content)
    assert ids == sorted(ids) and all(scenario["world"]["charges"][i]["account"] == account for i in ids)
    over = run("credit_charge", account_number=account, charge_id=charge, amount=amount)
    assert not over.ok and "need a supervisor; use escalate" in over.content
    assert state["violated_policies"] == ["credit_cap"] and "above the $75.00 cap" in state["policy_violations"][0]
    assert state["credits"] == [] and state["world"]["charges"][charge]["status"] == "billed"

    before = state["world"]["accounts"][account]["balance"]
    ok = run("credit_charge", account_number=account, charge_id=charge, amount=20)
    assert ok.ok and state["world"]["charges"][charge]["status"] == "credited"
    assert state["world"]["accounts"][account]["balance"] == round(before - 20, 2)
    assert state["credits"] == [{"account": account, "charge_id": charge, "amount": 20.0}]
    assert "already credited" in run("credit_charge", account_number=account, charge_id=charge, amount=5).content
    plan_fee = next(i for i in ids if scenario["world"]["charges"][i]["kind"] == "plan_fee")
    assert "plan fees cannot be credited" in run("credit_charge", account_number=account, charge_id=plan_fee,
                                                 amount=1).content
    assert state["violated_policies"] == ["credit_cap", "no_plan_fee_credit"]
    assert run("escalate", account_number=account, reason="x").content.startswith("case B100 ")
    assert run("escalate", account_number=account, reason="y").content.startswith("case B101 ")
    assert "no account X1" in run("lookup_account", account_number="X1").content


def test_contract_blocks_a_downgrade_but_not_an_upgrade(telecom):
    scenario = next(s for s in telecom.train_scenarios() if s["family"] == "downgrade_in_contract")
    state = telecom.make_env(scenario).state
    account = scenario["facts"]["account_number"]
    down = telecom.tools.run(ToolCall(id="c", name="change_plan", arguments={"account_number": account, "plan": "basic"}),
                             state)
    assert not down.ok and "cannot move" in down.content and state["violated_policies"] == ["contract_downgrade"]
    up = telecom.tools.run(ToolCall(id="c", name="change_plan", arguments={"account_number": account,
                                                                            "plan": "unlimited"}), state)
    current = scenario["world"]["accounts"][account]["plan"]
    assert up.ok == (current != "unlimited")
    if up.ok:
        assert state["world"]["accounts"][account]["plan"] == "unlimited"
        assert state["plan_changes"] == [{"account": account, "old": current, "new": "unlimited"}]


def test_expressions_and_templates():
    from stateset_agents.tasks.domain_expressions import ExpressionError, parse_expression, parse_template

    scope = {"order": {"total": 25.0, "status": "delivered", "eta": None}, "amount": 30, "cap": 500,
             "refunds": [{"order_id": "A1"}, {"order_id": "A2"}, {"order_id": "A1"}], "key": "A1"}
    value = lambda text: parse_expression(text).evaluate(scope)  # noqa: E731
    assert value("0 < amount <= cap and order.status == 'delivered'") is True
    assert value("amount > order.total + 0.005") is True and value("not (amount > cap)") is True
    assert value("count(refunds, order_id=key)") == 2 and value("order.eta is None") is True
    assert value("order['total'] if true else 0") == 25.0 and value("[1, 2][1]") == 2
    assert value("false or 'x'") == "x" and value("0 and undefined_is_never_read") == 0  # short-circuits
    assert parse_expression("order.total + amount").fields == (("order", "total"),)
    assert parse_template("{amount}").render(scope) == 30  # one bare field keeps its type
    assert parse_template("{money(order.total)} vs {amount:.1f} {{literal}} {amount != cap}").render(scope) == \
        "$25.00 vs 30.0 {literal} True"
    with pytest.raises(ExpressionError, match="has no field 'totl'"):
        value("order.totl")
    for bad, why in [("(lambda: 1)()", "not available"), ("[x for x in refunds]", "ListComp is not supported"),
                     ("order.__class__", "starting with '_'"), ("refunds[0:1]", "slices"),
                     ("open('f')", "open() is not available")]:
        with pytest.raises(ExpressionError, match=re.escape(why)):
            parse_expression(bad)
    with pytest.raises(ExpressionError, match="single '}'"):
        parse_template("a } b")


# -- scripted agents ---------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "eval"])
def test_oracle_scores_one_on_the_example_domain(telecom, split):
    reward = telecom.default_reward()
    scores = {agent: [] for agent in ("oracle", "mediocre", "unhelpful", "policy_breaking")}
    for i, scenario in enumerate(telecom.scenarios(split)):
        for agent in scores:
            trajectory = run_scripted_episode(telecom, scenario, make_agent(agent), seed=i)
            scores[agent].append(reward.score(trajectory))
            if agent == "oracle":
                assert trajectory.end_reason == "success" and not trajectory.state["policy_violations"], scenario["id"]
            if agent == "policy_breaking":  # the declared violation plan really breaks a policy
                assert trajectory.state["violated_policies"], scenario["id"]
    assert min(result.total for result in scores["oracle"]) == pytest.approx(1.0)
    means = {agent: mean(result.total for result in results) for agent, results in scores.items()}
    assert means["unhelpful"] < means["mediocre"] < means["oracle"] and means["policy_breaking"] < 0.3
    kept = [result.components["policy.credit_cap"] for result in scores["policy_breaking"]]
    assert 0 < kept.count(0.0) < len(kept)  # only roaming_over_cap breaks the cap


def test_converted_customer_service_is_the_builtin_task():
    """The file version of customer_service: same tool schemas and scenarios, and for every scenario
    and scripted agent the same conversation, ledgers, violations and reward as the built-in."""
    converted, builtin = load_domain(CONVERTED_CS), get_task("customer_service")
    assert converted.tools.schemas() == builtin.tools.schemas()
    assert converted.system_prompt == builtin.system_prompt and converted.reward_weights == builtin.reward_weights
    mine, theirs = converted.default_reward(), builtin.default_reward()
    for split in ("train", "eval"):
        assert (CONVERTED_CS / f"{split}.jsonl").read_bytes() == builtin.data_path(split).read_bytes()
        oracle = []
        for i, scenario in enumerate(converted.scenarios(split)):
            for agent in ("oracle", "mediocre", "policy_breaking"):
                ours = run_scripted_episode(converted, scenario, make_agent(agent, seed=1), seed=i)
                ref = run_scripted_episode(builtin, scenario, make_agent(agent, seed=1), seed=i)
                where = f"{scenario['id']} {agent}"
                assert ours.messages == ref.messages and ours.end_reason == ref.end_reason, where
                for key in ("actions", "world", "refunds", "returns", "escalations", "policy_violations"):
                    assert ours.state[key] == ref.state[key], f"{where}: {key}"
                assert mine.score(ours) == theirs.score(ref), where
                if agent == "oracle":
                    oracle.append(mine.score(ours).total)
        assert mean(oracle) == pytest.approx(1.0) and min(oracle) >= 0.99


# -- validation errors name file, line and field ---------------------------------------------------------

YAML_ERRORS = [  # (old text, new text, field, message)
    ("  - name: lookup_account\n    description:", "  - name: lookup_account\n    desciption:",
     "tools[0].desciption", "unknown field 'desciption' (did you mean 'description'?)"),
    ("system_prompt: >-", "sytem_prompt: >-", "sytem_prompt", "did you mean 'system_prompt'"),
    ("      - lookup: charges\n", "      - lookup: charge\n", "tools[2].steps[1].lookup",
     "unknown collection 'charge' (collections: accounts, plans, charges)"),
    ("      - check: amount > 0", "      - check: amout > 0", "tools[2].steps[3].check", "unknown name 'amout'"),
    ("charge.amount + 0.005", "charge.amont + 0.005", "tools[2].steps[5].check",
     "charge is a record of charges, which has no field 'amont'"),
    ("        policy: credit_cap\n", "        policy: credit_limit\n", "tools[2].steps[6].policy",
     "unknown policy 'credit_limit'"),
    ("      - append: credits", "      - append: credit", "tools[2].steps[9].append", "unknown ledger 'credit'"),
    ("charge_id: {type: string", "charge_id: {type: str", "tools[2].parameters.properties.charge_id.type",
     "unknown type 'str'"),
    ('description: "The charge id from list_charges, e.g. CH1234."',
     "description: The charge id from list_charges, e.g. CH1234.", "tools[2].parameters.properties.charge_id",
     "quote text with commas"),
    ("      - check: amount > 0", "      - check: __import__('os')", "tools[2].steps[3].check",
     "__import__() is not available"),
    ("      - check: amount > 0", "      - check: charge.kind.upper() == 'X'", "tools[2].steps[3].check",
     "charge.kind.upper() is not available"),
    ("      - check: amount > 0\n        error: the amount must be positive\n", "      - check: amount > 0\n",
     "tools[2].steps[3]", "a check needs an error"),
    ("  policy.credit_cap: 0.02", "  policy.credit_cp: 0.02", "reward.policy.credit_cp",
     "unknown reward component 'policy.credit_cp'"),
    ("      tool: change_plan", "      tool: change_plans", "violation[1].call.tool", "unknown tool 'change_plans'"),
    ('        text: "account {account_key} ({account.holder})', '        text: "account {account_key ({account.holder})',
     "tools[0].result[0].text", "is never closed"),
    ("  - name: escalate\n    description:", "  - name: escalate\n    python: no_such_module:fn\n    description:",
     "tools[4].python", "either python: module:function or steps"),
]


@pytest.mark.parametrize(("old", "new", "field", "message"), YAML_ERRORS, ids=[e[2] for e in YAML_ERRORS])
def test_domain_file_errors_name_file_line_and_field(tmp_path, old, new, field, message):
    domain = copy_domain(tmp_path)
    line = edit(domain / "domain.yaml", old, new)
    error = load_error(domain)
    match = re.match(r"(.+) line (\d+): (\S+): (.*)", error)
    assert match, error
    assert match.group(1) == str(domain / "domain.yaml") and match.group(3) == field, error
    assert message in match.group(4), error
    assert int(match.group(2)) in (line, line + 1, line + 2), error  # the field's own line (inside the edit)


def test_yaml_syntax_and_duplicate_keys_are_located(tmp_path):
    domain = copy_domain(tmp_path)
    line = edit(domain / "domain.yaml", "  credit_cap: 75.0", "  credit_cap: [75.0")
    assert re.search(rf"domain.yaml line {line + 2}: invalid YAML: expected ',' or ']'", load_error(domain))
    domain = copy_domain(tmp_path / "b")
    line = edit(domain / "domain.yaml", "  concision: 0.05", "  concision: 0.05\n  concision: 0.1")
    assert f"domain.yaml line {line + 1}: reward.concision: duplicate key 'concision' (first at line {line})" in \
        load_error(domain)


SCENARIO_ERRORS = [  # (regex, replacement, message): applied once to line 7 of train.jsonl
    (r'"tool": "credit_charge"', '"tool": "refund_order"',
     "goal.require[1].tool: unknown tool 'refund_order' (tools: lookup_account, list_charges, credit_charge, "
     "change_plan, escalate)"),
    (r'"args": \{"account_number"', '"args": {"acount_number"',
     "goal.require[0].args.acount_number: list_charges has no parameter 'acount_number' (parameters: account_number)"),
    (r'"amount": ([\d.]+), "charge_id"', r'"amount": "\1", "charge_id"',
     "goal.require[1].args: argument 'amount' of credit_charge must be a number, got string"),
    (r'"contract_months": \d+', '"contract_months": "x"', 'contract_months: expected an integer, got "x"'),
    (r'"kind": "', '"kind": "gift_', "kind: 'gift_"),
    (r'"disputed_charge": "', '"disputed_chrge": "', "violation (in "),
    (r'"facts": \{"account_number": "', '"facts": {"account_number": "Z', "facts.account_number: 'Z"),
    (r'\}\}', "}", "invalid JSON"),
]


@pytest.mark.parametrize(("pattern", "replacement", "message"), SCENARIO_ERRORS,
                         ids=[e[2][:24] for e in SCENARIO_ERRORS])
def test_scenario_errors_name_file_line_and_field(tmp_path, pattern, replacement, message):
    domain = copy_domain(tmp_path)
    lines = (domain / "train.jsonl").read_text().splitlines(keepends=True)
    lines[6], replaced = re.subn(pattern, replacement, lines[6], count=1)
    assert replaced == 1
    (domain / "train.jsonl").write_text("".join(lines))
    error = load_error(domain)
    assert error.startswith(f"{domain / 'train.jsonl'}, line 7"), error
    assert message in error, error


def test_missing_and_optional_scenario_files(tmp_path):
    domain = copy_domain(tmp_path)
    (domain / "eval.jsonl").unlink()
    assert "domain.yaml line" in load_error(domain) and "scenarios.eval: scenario file" in load_error(domain)
    edit(domain / "domain.yaml", "  eval: eval.jsonl\n", "")
    task = load_domain(domain)  # the default eval.jsonl is optional
    with pytest.raises(DomainError, match="has no eval split: add scenarios.eval"):
        task.eval_scenarios()


def test_python_tools_from_a_file_next_to_the_domain_and_from_a_module(tmp_path):
    domain = copy_domain(tmp_path)
    (domain / "my_tools.py").write_text(
        "def waive_fee(state, account_number: str) -> str:\n"
        "    '''Waive the monthly fee once.\n\n    Args:\n        account_number: The account number.\n    '''\n"
        "    state['credits'].append({'account': account_number, 'waived': True})\n"
        "    return f\"fee waived for {account_number} ({len(state['world']['accounts'])} accounts)\"\n")
    edit(domain / "domain.yaml", "  - name: escalate\n", "  - name: waive_fee\n    python: my_tools.py:waive_fee\n"
         "  - name: lookup_order\n    python: stateset_agents.tasks.customer_service:lookup_order\n"
         "  - name: escalate\n")
    task = load_domain(domain)
    assert task.tools["waive_fee"].schema()["function"]["parameters"]["required"] == ["account_number"]
    assert task.tools["waive_fee"].description == "Waive the monthly fee once."
    state = task.make_env(task.train_scenarios()[0]).state
    result = task.tools.run(ToolCall(id="c", name="waive_fee", arguments={"account_number": "M1"}), state)
    assert result.ok and result.content == "fee waived for M1 (2 accounts)" and state["credits"][-1]["waived"]
    assert "lookup_order" in task.tools and task.tools["lookup_order"].parameters["required"] == ["order_id"]
    with (domain / "my_tools.py").open("a") as handle:
        handle.write("# changed\n")
    assert load_domain(domain).digest != task.digest  # the tool's file is part of the domain's digest
    edit(domain / "domain.yaml", "my_tools.py:waive_fee", "my_tools.py:nothing_here")
    assert "tools[4].python: my_tools.py has no function 'nothing_here'" in load_error(domain)


# -- get_task, config, CLI --------------------------------------------------------------------------------

def test_get_task_accepts_domain_paths(monkeypatch):
    monkeypatch.chdir(REPO)
    for spelling in ("examples/domains/telecom_billing", "./examples/domains/telecom_billing/",
                     "examples/domains/telecom_billing/domain.yaml", str(TELECOM)):
        task = get_task(spelling)
        assert isinstance(task, FileDomainTask) and task.name == "telecom_billing" and task.source == spelling
    assert type(get_task("customer_service")).__name__ == "CustomerServiceTask"  # built-in names win
    with pytest.raises(UnknownTaskError, match="no domain at examples/nowhere: expected a directory"):
        get_task("examples/nowhere")
    with pytest.raises(UnknownTaskError, match="or the path of a file domain"):
        get_task("cooking")
    assert task_slug("examples/domains/telecom_billing,sales") == "telecom_billing_sales"
    assert task_slug("x/bikes.yaml") == "bikes" and task_slug("x/bikes/domain.yaml") == "bikes"


def test_config_task_path_round_trips_through_config_yaml(tmp_path):
    config = TrainingConfig(task=" examples/domains/telecom_billing , sales", output_dir=str(tmp_path))
    assert config.task_sequence == ["examples/domains/telecom_billing", "sales"]
    saved = yaml.safe_load(config.save().read_text())
    assert saved["task"] == "examples/domains/telecom_billing,sales"  # kept as given
    assert TrainingConfig.from_file(tmp_path / "config.yaml") == config
    assert TrainingConfig(task=TELECOM).task == str(TELECOM) and TrainingConfig(task=[TELECOM]).task == str(TELECOM)


def test_cli_config_from_a_domain_path(monkeypatch, tmp_path):
    from stateset_agents.cli import add_training_flags, config_from_args
    import argparse

    monkeypatch.chdir(REPO)
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    config = config_from_args(parser.parse_args(["--task", "examples/domains/telecom_billing"]))
    assert config.output_dir == "./outputs/telecom_billing_gspo"
    assert config.system_prompt == load_domain(TELECOM).system_prompt  # the preset uses the domain's own prompt


def test_broken_domain_is_one_error_line(tmp_path, capsys):
    domain = copy_domain(tmp_path)
    line = edit(domain / "domain.yaml", "      - check: amount > 0", "      - check: amout > 0")
    assert main(["train", "--model", TINY, "--task", str(domain), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1
    assert f"domain.yaml line {line}: tools[2].steps[3].check: unknown name 'amout'" in err
    assert not (tmp_path / "out").exists()


def test_domain_notes_log_the_digest_and_changes_on_resume(tmp_path):
    domain = copy_domain(tmp_path)
    task = load_domain(domain)
    notes = domain_notes([task, get_task("sales")], tmp_path / "run", resume=False)
    assert notes == [f"task domain telecom_billing from {domain} (sha256 {task.digest[:12]})"]
    assert json.loads((tmp_path / "run" / "domains.json").read_text()) == {str(domain): task.digest}
    assert domain_notes([task], tmp_path / "run", resume=True)[1:] == []
    edit(domain / "train.jsonl", '"persona": "polite"', '"persona": "terse"')
    changed = load_domain(domain)
    notes = domain_notes([changed], tmp_path / "run", resume=True)
    assert f"changed since the run recorded it (sha256 {task.digest[:12]} -> {changed.digest[:12]})" in notes[1]


# -- shipped files -------------------------------------------------------------------------------------------

def _generator():
    spec = importlib.util.spec_from_file_location("telecom_generate", TELECOM / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_shipped_files(tmp_path):
    generator = _generator()
    generator.main(["--out-dir", str(tmp_path)])
    for split in ("train", "eval"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (TELECOM / f"{split}.jsonl").read_bytes(), split
    out = generator.write_transcripts(200, generator.SEED, tmp_path / "transcripts.jsonl")
    assert out.read_bytes() == (TELECOM / "transcripts.jsonl").read_bytes()


def test_shipped_transcripts_are_openai_messages_of_the_train_split(telecom):
    records = [json.loads(line) for line in (TELECOM / "transcripts.jsonl").read_text().splitlines()]
    train_ids = {s["id"] for s in telecom.train_scenarios()}
    qualities = [r["metadata"]["quality"] for r in records]
    assert qualities.count("oracle") == 150 and qualities.count("mediocre") == 50
    for record in records:
        assert record["tools"] == telecom.tools.schemas() and record["metadata"]["scenario_id"] in train_ids
        messages = record["messages"]
        assert messages[0] == {"role": "system", "content": telecom.system_prompt} and messages[1]["role"] == "user"
        calls = {}
        for message in messages:
            for call in message.get("tool_calls", []):
                assert call["type"] == "function" and isinstance(json.loads(call["function"]["arguments"]), dict)
                calls[call["id"]] = call["function"]["name"]
            if message["role"] == "tool":
                assert calls[message["tool_call_id"]] == message["name"]
        if record["metadata"]["quality"] == "oracle":
            assert record["metadata"]["end_reason"] == "success" and record["metadata"]["reward"] > 0.99


# -- end to end ---------------------------------------------------------------------------------------------

SMALL_RUN = dict(  # one iteration in seconds on the tiny model
    lora_r=4, lora_alpha=8, num_generations=2, scenarios_per_iteration=1, per_device_train_batch_size=1,
    gradient_accumulation_steps=1, learning_rate=1e-2, max_new_tokens=8, max_turns=2, rollout_concurrency=2,
    eval_every=0, save_every=1, report_to=["jsonl"], device="cpu", seed=3, lr_scheduler="constant")


def train_on_domain(tmp_path: Path) -> Path:
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_RUN))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--model", TINY, "--task", "examples/domains/telecom_billing",
                 "--use-lora", "--iterations", "1", "--output-dir", str(out)]) == 0
    return out


def iteration_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "event" not in r]


@pytest.mark.slow  # 25 s on 2 quiet cores, 85 s on busy ones
def test_train_one_iteration_on_a_domain(tmp_path, monkeypatch, tiny_model_dir, capsys):
    import argparse

    from stateset_agents.cli import add_training_flags, config_from_args

    monkeypatch.chdir(REPO)
    out = train_on_domain(tmp_path)
    digest = load_domain(TELECOM).digest
    assert f"task domain telecom_billing from examples/domains/telecom_billing (sha256 {digest[:12]})" in \
        capsys.readouterr().out
    records = iteration_records(out)
    assert [(r["iteration"], r["task"]) for r in records] == [(1, "telecom_billing")]
    assert "reward/policy.credit_cap" in records[0]  # the domain's own reward mix was used
    assert yaml.safe_load((out / "config.yaml").read_text())["task"] == "examples/domains/telecom_billing"
    assert json.loads((out / "domains.json").read_text()) == {"examples/domains/telecom_billing": digest}
    # what --resume (without --task) would train on: the saved config names the same domain
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    resumed = config_from_args(parser.parse_args(["--resume", "--output-dir", str(out), "--iterations", "2"]))
    assert resumed.task == "examples/domains/telecom_billing" and get_task(resumed.task).digest == digest


@pytest.mark.slow  # two short training runs (about a minute on 2 busy cores)
def test_resume_continues_on_the_same_domain(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(REPO)
    out = train_on_domain(tmp_path)
    assert main(["train", "--resume", "--output-dir", str(out), "--iterations", "2"]) == 0
    assert [(r["iteration"], r["task"]) for r in iteration_records(out)] == [(1, "telecom_billing"),
                                                                              (2, "telecom_billing")]
