"""Rehearsal-only tasks for warm-start candidates of the `continual_two_sellers` pair (experiments/FORGETTING.md).

Partner sellers' orders (the `lookup_order` note, `tasks.partner_orders`) handled as they were before the partner
rule: with ShopCo's own policy (`customer_service_partner_legacy`), or a `NEW_RULE_SHARE` of them already with the
claims team's (`customer_service_partner_mixed`: a quarter, `customer_service_partner_half`: half). Importing this
module registers them; `experiments/continue_warm_start.py` does, so its `--tasks` takes them.
"""

from __future__ import annotations

import random
from typing import Any

from stateset_agents.tasks.base import UniqueIds
from stateset_agents.tasks.customer_service import CustomerServiceTask
from stateset_agents.tasks.partner_orders import sold_by_partner
from stateset_agents.tasks.registry import get_task, register_task


@register_task
class LegacyPartnerOrdersTask(CustomerServiceTask):
    """Partner sellers' orders (the lookup shows the note) handled with ShopCo's policy."""

    name = "customer_service_partner_legacy"
    id_prefix = "cl"
    NEW_RULE_SHARE = 0.0

    def scenarios(self, split: str) -> list[dict[str, Any]]:
        # no shipped files: fresh scenarios avoid every id of both stores' shipped splits instead
        return get_task("customer_service").scenarios(split) + get_task("customer_service_partner").scenarios(split)

    def build_scenario(self, rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
        return sold_by_partner(super().build_scenario(rng, ids, family, scenario_id))

    def _family_text(self, rng: random.Random, family: str, item: str, order_id: str,
                     order: dict[str, Any]) -> dict[str, Any]:
        if self.NEW_RULE_SHARE and rng.random() < self.NEW_RULE_SHARE:
            return get_task("customer_service_partner")._family_text(rng, family, item, order_id, order)
        return super()._family_text(rng, family, item, order_id, order)


@register_task
class MixedPartnerOrdersTask(LegacyPartnerOrdersTask):
    """Partner orders around the rule change: a quarter already go to the claims team."""

    name = "customer_service_partner_mixed"
    id_prefix = "cm"
    NEW_RULE_SHARE = 0.25


@register_task
class HalfPartnerOrdersTask(LegacyPartnerOrdersTask):
    """Partner orders around the rule change: half already go to the claims team."""

    name = "customer_service_partner_half"
    id_prefix = "ch"
    NEW_RULE_SHARE = 0.5
