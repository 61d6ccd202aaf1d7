"""The marketplace claims desk: the same surface as customer_service, a conflicting policy."""

from __future__ import annotations

import random

from stateset_agents.tasks.customer_service import (DAMAGED_OPENINGS, ITEMS, LATE_OPENINGS, PHOTO_OPENINGS,
                                                     RETURN_OPENINGS)
from stateset_agents.tasks.episodes import run_scripted_episode
from stateset_agents.tasks.registry import TASK_SEQUENCES, WARM_START_TASKS, get_task, list_tasks
from stateset_agents.tasks.scripted_agents import make_agent
from stateset_agents.training.config import TrainingConfig
from stateset_agents.training.kimi25_config import get_kimi25_config

SHOP, CLAIMS = get_task("customer_service"), get_task("customer_service_claims")


def test_same_customers_tools_and_families_another_policy():
    assert CLAIMS.families == SHOP.families
    assert CLAIMS.tools.schemas() == SHOP.tools.schemas()
    assert CLAIMS.system_prompt != SHOP.system_prompt and "claims team" in CLAIMS.system_prompt
    templates = DAMAGED_OPENINGS + PHOTO_OPENINGS + RETURN_OPENINGS + LATE_OPENINGS
    shop_openings = {template.format(item=item) for template in templates for item in ITEMS}
    assert all(s["opening"] in shop_openings for s in CLAIMS.scenarios("eval") + CLAIMS.scenarios("train"))
    assert not {s["id"] for s in CLAIMS.scenarios("eval")} & {s["id"] for s in CLAIMS.scenarios("train")}


def _with_solution_of(task, other, scenario):
    """`scenario` (of `task`) with the success path `other`'s policy gives for the same order."""
    order_id = scenario["facts"]["order_id"]
    order = scenario["world"]["orders"][order_id]
    text = other._family_text(random.Random(0), scenario["family"], order["item"], order_id, order)
    return {**scenario, "solution": text["solution"]}


def test_each_store_rewards_its_own_policy_and_fails_the_other():
    for task, other in ((SHOP, CLAIMS), (CLAIMS, SHOP)):
        own, foreign = {}, {}
        for i, scenario in enumerate(task.scenarios("eval")):
            family = scenario["family"]
            own.setdefault(family, []).append(
                run_scripted_episode(task, scenario, make_agent("oracle"), seed=i).end_reason == "success")
            foreign.setdefault(family, []).append(run_scripted_episode(
                task, _with_solution_of(task, other, scenario), make_agent("oracle"), seed=i).end_reason == "success")
        assert all(all(results) for results in own.values())
        conflicting = [family for family in task.families if not any(foreign[family])]
        assert sorted(conflicting) == ["damaged_refund", "over_cap", "photo_deny", "photo_refund", "return"]
        assert all(foreign["late_delivery"])  # tracked the same way at both stores


def test_the_built_in_sequence_trains_both_stores_in_order():
    assert TASK_SEQUENCES["continual_two_stores"] == ("customer_service", "customer_service_claims")
    config = get_kimi25_config(model_name="tiny-kimi-k2.5", task="continual_two_stores", use_lora=True,
                               continual_strategy="replay_lwf", replay_ratio=0.5, kl_penalty_beta=0.1)
    assert config.task_sequence == ["customer_service", "customer_service_claims"]
    assert config.system_prompt is None  # each store keeps its own prompt
    assert TrainingConfig(task="sales,continual_two_stores").task_sequence == [
        "sales", "customer_service", "customer_service_claims"]


def test_the_embedded_model_does_not_learn_the_claims_desk():
    assert "customer_service_claims" in list_tasks() and "customer_service_claims" not in WARM_START_TASKS
