"""Write the telecom_billing domain's scenario files, and scripted transcripts for supervised fine-tuning.

    python examples/domains/telecom_billing/generate.py                      # train.jsonl, eval.jsonl
    python examples/domains/telecom_billing/generate.py --transcripts 200    # and transcripts.jsonl

Scenarios: one seeded `random.Random` draws the train split, then the eval split; account and charge
ids are never reused, so the splits share no scenario. Families rotate so both splits cover each.
The output is canonical JSONL (sorted keys): re-running reproduces the files byte for byte.

Transcripts: dialogues of the scripted oracle (75%) and the mediocre agent (25%: redundant
questions, skipped steps, mistyped ids it recovers from) on train scenarios, through the real
environment and rule-based user, as OpenAI-style messages (`stateset_agents.tasks.transcripts`).
Each record's ``metadata`` says which agent spoke, its reward, and ``mistyped_turns`` (indexes of
the assistant turns that typed a wrong id on purpose: worth masking in SFT).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from stateset_agents.tasks.base import UniqueIds, money, scenario_text
from stateset_agents.tasks.scenario_records import dump_jsonl

HERE = Path(__file__).resolve().parent
NAME = "telecom_billing"
SEED = 20260601
SIZES = {"train": 60, "eval": 30}
FAMILIES = ("duplicate_charge", "late_fee", "roaming_over_cap", "plan_fee_dispute", "upgrade", "downgrade_in_contract")
PLANS = {"basic": {"price": 30.0, "data": "10 GB"}, "plus": {"price": 45.0, "data": "40 GB"},
         "unlimited": {"price": 65.0, "data": "unlimited"}}
CREDIT_CAP = 75.0  # the domain's constants.credit_cap
HOLDERS = ("Dana", "Omar", "Li", "Sofia", "Ken", "Amara", "Jonas", "Priya", "Mateo", "Hana", "Tariq", "Elena")
ADD_ONS = ("streaming add-on", "international calls pack", "cloud storage", "device insurance", "music add-on")
COUNTRIES = ("Spain", "Japan", "Canada", "Brazil", "Kenya", "Italy")
CANNOT = ["cannot", "can't", "unable", "not able"]
TRANSCRIPT_MIX = {"oracle": 0.75, "mediocre": 0.25}

OPENINGS = {
    "duplicate_charge": ("I was charged twice for my {add_on} this month.", "My bill shows the {add_on} two times.",
                         "Why am I paying for the {add_on} twice?"),
    "late_fee": ("I paid my bill on time but I got a late fee.", "There is a late fee on my bill and I paid on time.",
                 "Please remove the late fee, my autopay went through."),
    "roaming_over_cap": ("I was charged {amount} for roaming in {country}. That is way too much.",
                         "My bill has a huge roaming charge from my trip to {country}.",
                         "I want the roaming charge from {country} taken off my bill."),
    "plan_fee_dispute": ("I barely used my phone this month. Please refund my monthly fee.",
                         "I want my plan fee back, I was abroad all month.", "Can you refund this month's plan fee?"),
    "upgrade": ("I want to switch to the {wanted} plan.", "Can I move up to the {wanted} plan?",
                "Please upgrade me to {wanted}."),
    "downgrade_in_contract": ("I want a cheaper plan. Please move me to {wanted}.",
                              "My plan is too expensive, switch me to the {wanted} plan.",
                              "Can I downgrade to {wanted}?"),
}


def account_world(rng: random.Random, ids: UniqueIds, plan: str, contract: int) -> tuple[str, dict, dict]:
    """One account with its plan fee and one or two add-ons: (account id, account, charges)."""
    account_id = ids.new("M", 5)
    charges = {ids.new("CH"): {"account": account_id, "description": f"{plan} plan monthly fee", "kind": "plan_fee",
                               "amount": PLANS[plan]["price"], "status": "billed"}}
    for add_on in rng.sample(ADD_ONS, rng.randint(1, 2)):
        charges[ids.new("CH")] = {"account": account_id, "description": add_on, "kind": "add_on",
                                  "amount": float(rng.choice((5, 8, 10, 12, 15))), "status": "billed"}
    account = {"holder": rng.choice(HOLDERS), "plan": plan, "contract_months": contract, "balance": 0.0}
    return account_id, account, charges


def add_charge(ids: UniqueIds, charges: dict, account_id: str, description: str, kind: str, amount: float) -> str:
    charge_id = ids.new("CH")
    charges[charge_id] = {"account": account_id, "description": description, "kind": kind, "amount": amount,
                          "status": "billed"}
    return charge_id


def build_scenario(rng: random.Random, ids: UniqueIds, family: str, scenario_id: str) -> dict[str, Any]:
    """One scenario of `family`: the world (the customer's account, a decoy account, every charge), the
    opening, the hidden account number, the goal and the success path."""
    in_contract = family == "downgrade_in_contract" or rng.random() < 0.4
    plan = {"upgrade": rng.choice(("basic", "plus")), "downgrade_in_contract": rng.choice(("plus", "unlimited"))}.get(
        family, rng.choice(tuple(PLANS)))
    account_id, account, charges = account_world(rng, ids, plan, rng.randint(3, 18) if in_contract else 0)
    decoy_id, decoy, decoy_charges = account_world(rng, ids, rng.choice(tuple(PLANS)), rng.choice((0, 6, 12)))
    plan_fee = next(key for key, charge in charges.items() if charge["kind"] == "plan_fee")
    details = {"add_on": "", "amount": "", "country": rng.choice(COUNTRIES), "wanted": ""}
    lookup = {"tool": "lookup_account", "args": {"account_number": account_id},
              "why": "I have the account number; I will look up the account."}
    listing = {"tool": "list_charges", "args": {"account_number": account_id},
               "why": "I will list the charges to find the one in question."}
    disputed = plan_fee
    if family in ("duplicate_charge", "late_fee"):
        if family == "duplicate_charge":
            original = next(key for key, charge in charges.items() if charge["kind"] == "add_on")
            details["add_on"] = charges[original]["description"]
            amount = charges[original]["amount"]
            disputed = add_charge(ids, charges, account_id, f"{details['add_on']} (duplicate)", "duplicate", amount)
            topic, said = f"a double charge for the {details['add_on']}", f"the duplicate {details['add_on']} charge"
        else:
            amount = float(rng.choice((10, 15, 20, 25)))
            disputed = add_charge(ids, charges, account_id, "late payment fee", "late_fee", amount)
            topic, said = "a late fee", "the late fee"
        credit = {"tool": "credit_charge", "args": {"account_number": account_id, "charge_id": disputed, "amount": amount},
                  "why": f"Charge {disputed} is {said}, {money(amount)}, under the $75 cap; I will credit it."}
        text = dict(calls=[listing, credit], say=[["credit"]], opener="I'm sorry about the extra charge.",
                    description=f"You want {said} ({money(amount)}) credited.",
                    reply=f"I have credited {money(amount)} for {said} ({disputed}). Thank you for your patience.")
    elif family == "roaming_over_cap":
        amount = float(rng.randint(90, 300))
        details["amount"] = money(amount)
        disputed = add_charge(ids, charges, account_id, f"roaming data in {details['country']}", "roaming", amount)
        topic = "a roaming charge"
        escalate = {"tool": "escalate", "args": {"account_number": account_id, "reason": "roaming charge over the cap"},
                    "goal_args": {"account_number": account_id},
                    "why": f"The roaming charge is {money(amount)}, over the $75 credit cap; I must escalate."}
        text = dict(calls=[listing, escalate], say=[["supervisor", "escalat"]], forbid=("credit_charge",),
                    opener="I'm sorry about the roaming charge.",
                    description=f"You want the {money(amount)} roaming charge looked at by someone who can remove it.",
                    reply="Credits over $75 need a supervisor, so I have escalated your roaming charge. They will "
                          "contact you within a day. Thank you!")
    elif family == "plan_fee_dispute":
        topic = "a plan fee refund"
        text = dict(calls=[listing], say=[CANNOT], forbid=("credit_charge",), opener="I understand your concern.",
                    description="You want this month's plan fee back, but accept a clear no.",
                    reply=f"I'm sorry, monthly plan fees are not refundable, so I cannot refund the "
                          f"{money(PLANS[plan]['price'])} fee for your {plan} plan.",
                    reply_why="Plan fees are never credited; I must say no.")
    else:
        order = list(PLANS)
        if family == "upgrade":
            details["wanted"] = rng.choice(order[order.index(plan) + 1:])
        else:
            details["wanted"] = rng.choice(order[:order.index(plan)])
        wanted = details["wanted"]
        topic = f"a move to the {wanted} plan"
        if family == "upgrade":
            change = {"tool": "change_plan", "args": {"account_number": account_id, "plan": wanted},
                      "why": f"The {wanted} plan costs more, so the contract does not block it; I will change it."}
            text = dict(calls=[lookup, change], say=[[wanted]], opener="Thanks for reaching out. Happy to help with your plan.",
                        description=f"You want to move to the {wanted} plan.",
                        reply=f"Done: your account moves to the {wanted} plan at {money(PLANS[wanted]['price'])}/month "
                              f"from your next bill. Thank you!")
        else:
            months = account["contract_months"]
            lookup = dict(lookup, why="I need to check the account's plan and contract.")
            text = dict(calls=[lookup], say=[CANNOT], forbid=("change_plan",), opener="I understand, plans can be pricey.",
                        description=f"You want the cheaper {wanted} plan, but accept a clear no.",
                        reply=f"I'm sorry, your account is in a contract for {months} more months, so I cannot move it "
                              f"to the cheaper {wanted} plan until the contract ends.",
                        reply_why="The account is in a contract and the plan is cheaper; I must say no.")
    charges.update(decoy_charges)
    for key, holder in ((account_id, account), (decoy_id, decoy)):
        holder["balance"] = round(sum(c["amount"] for c in charges.values() if c["account"] == key), 2)
    scenario = {"id": scenario_id, "task": NAME, "family": family, "persona": rng.choice(("polite", "terse", "impatient")),
                "facts": {"account_number": account_id}, "disputed_charge": disputed,
                "world": {"accounts": dict(sorted({account_id: account, decoy_id: decoy}.items())),
                          "plans": PLANS, "charges": dict(sorted(charges.items()))}}
    opening = rng.choice(OPENINGS[family]).format(**details)
    scenario.update(scenario_text(opening=opening, topic=topic, ask_why=f"The customer needs help with {topic}; I "
                                  f"need the account number.", **text))
    return scenario


def generate(seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(f"{NAME}:{seed}")
    ids = UniqueIds(rng)
    return {split: [build_scenario(rng, ids, FAMILIES[i % len(FAMILIES)], f"tb-{split}-{i:03d}") for i in range(size)]
            for split, size in SIZES.items()}


def write_transcripts(n: int, seed: int, out: Path) -> Path:
    """`n` scripted dialogues on the train split as OpenAI-style JSONL (see the module docstring)."""
    from stateset_agents.tasks.episodes import generate_reference_dialogues
    from stateset_agents.tasks.file_domain import load_domain
    from stateset_agents.tasks import transcripts

    task = load_domain(HERE)
    records = []
    for dialogue in generate_reference_dialogues(task, n, seed=seed, mix=TRANSCRIPT_MIX, split="train"):
        record = transcripts.dialogue_to_openai_messages(dialogue)
        record["metadata"]["mistyped_turns"] = dialogue["mistyped_turns"]
        records.append(record)
    return transcripts.write_transcripts(records, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(HERE), help="where to write the files (default: this directory)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--transcripts", type=int, default=0, metavar="N",
                        help="also write N scripted dialogues of the train split to transcripts.jsonl")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, scenarios in generate(args.seed).items():
        (out / f"{split}.jsonl").write_text(dump_jsonl(scenarios), encoding="utf-8")
        print(out / f"{split}.jsonl")
    if args.transcripts:
        if out.resolve() != HERE:
            raise SystemExit("--transcripts runs the domain in this directory; use it without --out-dir")
        print(write_transcripts(args.transcripts, args.seed, out / "transcripts.jsonl"))


if __name__ == "__main__":
    main()
