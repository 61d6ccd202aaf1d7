"""Where does the warm-started model's loss go? Per-token loss by kind, on dialogues it never saw.

    python experiments/warm_start_token_loss.py [--model tiny-kimi-k2.5] [--seed 7] [--turns 400] [--results DIR]
                                                [--quick]

Reference dialogues are generated exactly like the warm start's, but on fresh scenarios from
another seed (new order numbers, devices, SKUs), and scored teacher-forced. The loss of each
target token is grouped by kind: digits (ids, amounts, days: almost always copies of something
earlier in the conversation), id letters (the ``T`` of ``T916``), words copied into tool arguments
(``laptop``, ``billing``), special tokens (the turn's format), the first token of a turn (the behaviour
choice) and other text. Chance on a digit is ln 10 = 2.30 nats: a model that copies scores near 0
there. Writes `--results`/warm_start_token_loss[_quick]_<model>_<commit>.json (default experiments/results).
`--quick`: the base model, 16 turns.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))


def token_kind(token: str, next_token: str, token_id: int, special_ids: set[int], words: set[str]) -> str:
    if token_id in special_ids:
        return "special"
    if token.isdigit():
        return "digit"
    if token.isascii() and token.isupper() and token.isalpha() and next_token.isdigit():
        return "id letter"
    return "argument word" if token in words else "text"


def main() -> None:
    import torch

    from stateset_agents.core.formats import get_chat_format
    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.embedded import ensure_embedded_model, is_embedded
    from stateset_agents.embedded.tokenizer_corpus import tool_argument_words
    from stateset_agents.rollout.encoding import PromptEncoder
    from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions
    from stateset_agents.training.warm_start import WarmStartSettings, reference_dialogues, turn_examples

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-kimi-k2.5")
    parser.add_argument("--seed", type=int, default=7, help="fresh-scenario seed (the warm start uses 0)")
    parser.add_argument("--turns", type=int, default=400, help="assistant turns scored")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the json goes")
    parser.add_argument("--quick", action="store_true", help="base model, 16 turns")
    args = parser.parse_args()
    from common import result_stem

    if args.quick:
        args.model, args.turns = "tiny-kimi-k2.5-base", 16
    path = ensure_embedded_model(args.model) if is_embedded(args.model) else args.model
    loaded = load_model(str(path), LoadSettings(device="cpu", dtype="float32"))
    tokenizer = loaded.tokenizer
    encoder = PromptEncoder(tokenizer, get_chat_format(tokenizer), loaded.image_settings)
    settings = WarmStartSettings(seed=args.seed, dialogues_per_task=max(args.turns // 6, 20))
    examples = [e for task, dialogue in reference_dialogues(settings)
                for e in turn_examples(task, dialogue["messages"], encoder)]
    random.Random(0).shuffle(examples)
    examples = examples[:args.turns]
    special_ids = set(tokenizer.all_special_ids)
    words = set(tool_argument_words())
    losses: dict[str, list[float]] = defaultdict(list)
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            chunk = examples[start:start + 16]
            batch = build_scoring_batch([p for p, _ in chunk], [c for _, c in chunk], tokenizer.pad_token_id,
                                        torch.device("cpu"), torch.float32)
            logprobs = score_completions(loaded.model, batch).logprobs
            for row, (_, completion) in enumerate(chunk):
                nll = (-logprobs[row][batch.completion_mask[row].bool()]).tolist()
                tokens = tokenizer.convert_ids_to_tokens(completion) + [""]
                for position, (token_id, value) in enumerate(zip(completion, nll)):
                    kind = "first token" if position == 0 else token_kind(
                        tokens[position], tokens[position + 1], token_id, special_ids, words)
                    losses[kind].append(value)
    summary = {kind: {"tokens": len(values), "mean_nll": statistics.fmean(values),
                      "share_above_chance_digit": sum(v > 2.3026 for v in values) / len(values)}
               for kind, values in sorted(losses.items())}
    args.results.mkdir(parents=True, exist_ok=True)
    command = f"python experiments/warm_start_token_loss.py --model {args.model} --seed {args.seed} --turns {args.turns}"
    report = {"command": command, "kinds": summary}
    (args.results / f"{result_stem('warm_start_token_loss', args.model, args.quick)}.json").write_text(json.dumps(report, indent=2))
    print(command)
    for kind, row in summary.items():
        print(f"{kind:12s} {row['tokens']:6d} tokens  mean loss {row['mean_nll']:.3f} nats  "
              f"> 2.30 nats: {row['share_above_chance_digit']:.1%}")


if __name__ == "__main__":
    main()
