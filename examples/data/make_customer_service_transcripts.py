"""Write `customer_service_transcripts.jsonl`: an example input for `stateset-agents sft`.

    python examples/data/make_customer_service_transcripts.py [--n 100] [--out PATH]

The conversations are the customer_service task's scripted oracle agent played through the real
environment (tools, rule-based customer) on the train split's scenarios, converted to OpenAI messages
with `stateset_agents.tasks.transcripts.dialogue_to_openai_messages`. Scenarios with a photo are left
out: `sft` trains on text-only transcripts. Deterministic for a given --seed.
"""

import argparse
from pathlib import Path

from stateset_agents.tasks.episodes import generate_reference_dialogues
from stateset_agents.tasks.transcripts import dialogue_to_openai_messages, write_transcripts


def has_image(messages) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") != "text" for p in m["content"])
               for m in messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="number of transcripts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).with_name("customer_service_transcripts.jsonl")))
    args = parser.parse_args()
    # a third of the scenarios show a photo; play enough episodes to keep n text-only ones
    dialogues = generate_reference_dialogues("customer_service", 2 * args.n, args.seed, {"oracle": 1.0})
    text_only = [d for d in dialogues if not has_image(d["messages"])][: args.n]
    if len(text_only) < args.n:
        raise SystemExit(f"only {len(text_only)} text-only dialogues; lower --n")
    path = write_transcripts([dialogue_to_openai_messages(d) for d in text_only], args.out)
    print(f"wrote {len(text_only)} transcripts to {path}")


if __name__ == "__main__":
    main()
