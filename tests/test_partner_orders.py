"""Partner orders: ShopCo's prompt, tools and customers; only the order lookup tells the policies apart."""

from __future__ import annotations

import random

import pytest

from stateset_agents.envs.tools import ToolError
from stateset_agents.tasks.customer_service import lookup_order
from stateset_agents.tasks.episodes import run_scripted_episode
from stateset_agents.tasks.registry import TASK_SEQUENCES, WARM_START_TASKS, get_task
from stateset_agents.tasks.scripted_agents import make_agent
from stateset_agents.training.config import TrainingConfig

SHOP, PARTNER = get_task("customer_service"), get_task("customer_service_partner")
MARKER = "sold by a marketplace partner"


def test_same_prompt_tools_and_families_as_shopco():
    assert PARTNER.system_prompt == SHOP.system_prompt
    assert PARTNER.tools.schemas() == SHOP.tools.schemas()
    assert PARTNER.families == SHOP.families
    assert "customer_service_partner" not in WARM_START_TASKS


def test_only_the_lookup_says_a_partner_sold_the_order():
    for scenario in PARTNER.scenarios("eval") + PARTNER.scenarios("train"):
        assert all(order["seller"] == "partner" for order in scenario["world"]["orders"].values())
    assert not any("seller" in order for s in SHOP.scenarios("eval") for order in s["world"]["orders"].values())
    partner = PARTNER.scenarios("eval")[0]
    order_id = partner["facts"]["order_id"]
    assert MARKER in lookup_order({"world": partner["world"]}, order_id)
    shop = SHOP.scenarios("eval")[0]
    assert MARKER not in lookup_order({"world": shop["world"]}, shop["facts"]["order_id"])
    with pytest.raises(ToolError, match="no order Z0000"):
        lookup_order({"world": partner["world"]}, "Z0000")


def test_without_a_note_a_partners_order_looks_like_shopcos(monkeypatch):
    from stateset_agents.tasks import customer_service

    partner = PARTNER.scenarios("eval")[0]
    monkeypatch.setattr(customer_service, "PARTNER_NOTE", "")
    text = lookup_order({"world": partner["world"]}, partner["facts"]["order_id"])
    assert text.startswith("order A") and text.endswith("days ago") and MARKER not in text


def test_the_partner_policy_conflicts_with_shopcos_on_five_families():
    for i, scenario in enumerate(PARTNER.scenarios("eval")):
        assert run_scripted_episode(PARTNER, scenario, make_agent("oracle"), seed=i).end_reason == "success"
        order_id = scenario["facts"]["order_id"]
        order = scenario["world"]["orders"][order_id]
        shop_path = SHOP._family_text(random.Random(0), scenario["family"], order["item"], order_id, order)["solution"]
        shop_way = run_scripted_episode(PARTNER, {**scenario, "solution": shop_path}, make_agent("oracle"), seed=i)
        # ShopCo's way solves a partner's late delivery and nothing else (over_cap: the reply names a supervisor)
        assert (shop_way.end_reason == "success") == (scenario["family"] == "late_delivery"), scenario["family"]


def test_the_built_in_sequence_trains_shopco_then_partner_orders():
    assert TASK_SEQUENCES["continual_two_sellers"] == ("customer_service", "customer_service_partner")
    assert TrainingConfig(task="continual_two_sellers").task_sequence == ["customer_service", "customer_service_partner"]
