"""Customer service for orders sold by marketplace partners: ShopCo's own desk, prompt and tools, but the
order belongs to a partner seller, so refunds and returns go to the claims team (`escalate`).

The system prompt is ShopCo's, byte for byte; the only thing that tells the two apart is the `lookup_order`
result, which for a partner's order adds "sold by a marketplace partner: refunds and returns go to the claims
team". A model that has only ever worked ShopCo's own orders acts on partner orders as it would on ShopCo's, so
training on them moves the very behaviour ShopCo's orders need, unless the model learns to read the lookup. The
pair `continual_two_sellers` (`tasks.registry.TASK_SEQUENCES`) measures that forgetting; the families and
success paths are the claims desk's (`tasks.claims_desk`), which differ from ShopCo's on five of six families.
"""

from __future__ import annotations

import random
from typing import Any

from stateset_agents.tasks.base import UniqueIds
from stateset_agents.tasks.claims_desk import ClaimsDeskTask
from stateset_agents.tasks.customer_service import CustomerServiceTask

__all__ = ["PartnerOrdersTask", "sold_by_partner"]


def sold_by_partner(scenario: dict[str, Any]) -> dict[str, Any]:
    """`scenario` with every order of its world marked as a partner seller's (`lookup_order` then adds the note)."""
    for order in scenario["world"]["orders"].values():
        order["seller"] = "partner"
    return scenario


class PartnerOrdersTask(ClaimsDeskTask):
    """ShopCo's desk on partner sellers' orders: refunds and returns go to the claims team (`escalate`)."""

    name = "customer_service_partner"
    id_prefix = "cp"
    system_prompt = CustomerServiceTask.system_prompt

    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        return sold_by_partner(super().build_scenario(rng, ids, family, scenario_id))
