"""Held-out target loss of models before and after `stateset-agents sft` (docs/sft.md, "Measured").

    python benchmarks/sft_heldout_nll.py MODEL [MODEL ...] [--task customer_service] [--n 30] [--out FILE.json]
                                         [--quick]

Held-out transcripts: the task's scripted oracle agent on the *eval* split's scenarios (the example
transcripts come from the train split), text-only, converted with `dialogue_to_openai_messages`.
For each model: the mean negative log-likelihood per target token of every assistant turn (the
tokens `sft` trains on, built by `training.sft_data`), scored as the RL trainer scores rollouts
(`rollout.logprobs.score_completions`), and the share of target tokens the model predicts greedily.
"""

import argparse
import json

import torch

from stateset_agents.core.formats import get_chat_format
from stateset_agents.models.loading import LoadSettings, load_model
from stateset_agents.rollout.encoding import EncodedPrompt, PromptEncoder
from stateset_agents.rollout.logprobs import build_scoring_batch
from stateset_agents.tasks.episodes import generate_reference_dialogues
from stateset_agents.tasks.transcripts import dialogue_to_openai_messages
from stateset_agents.training.sft_data import Transcript, build_examples


def heldout_transcripts(task: str, n: int) -> list[Transcript]:
    dialogues = generate_reference_dialogues(task, 2 * n, seed=1, mix={"oracle": 1.0}, split="eval")
    records = [dialogue_to_openai_messages(d) for d in dialogues
               if not any(isinstance(m.get("content"), list) for m in d["messages"])][:n]
    return [Transcript(i + 1, r["messages"], r.get("tools")) for i, r in enumerate(records)]


@torch.no_grad()
def score(model_name: str, transcripts: list[Transcript], batch: int = 8) -> dict:
    loaded = load_model(model_name, LoadSettings(device="cpu", dtype="float32"))
    encoder = PromptEncoder(loaded.tokenizer, get_chat_format(loaded.tokenizer), loaded.image_settings)
    examples, _ = build_examples(transcripts, encoder)
    nll, correct, tokens = 0.0, 0, 0
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        cuts = [e.completion_mask.index(1) for e in chunk]
        scoring = build_scoring_batch([EncodedPrompt(e.input_ids[:c]) for e, c in zip(chunk, cuts)],
                                      [e.input_ids[c:] for e, c in zip(chunk, cuts)], loaded.tokenizer.pad_token_id,
                                      torch.device("cpu"), torch.float32)
        width = scoring.completion_ids.shape[1]
        logits = loaded.model(**scoring.model_inputs, logits_to_keep=width + 1, use_cache=False).logits[:, -width - 1:-1]
        logprobs = torch.log_softmax(logits.float(), -1).gather(-1, scoring.completion_ids.unsqueeze(-1)).squeeze(-1)
        mask = scoring.completion_mask
        nll -= float((logprobs * mask).sum())
        correct += int(((logits.argmax(-1) == scoring.completion_ids).float() * mask).sum())
        tokens += int(mask.sum())
    return {"model": model_name, "turns": len(examples), "target_tokens": tokens,
            "nll_per_token": round(nll / tokens, 4), "greedy_token_accuracy": round(correct / tokens, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--task", default="customer_service")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--out", help="also write the scores as JSON")
    parser.add_argument("--quick", action="store_true", help="the base tiny model on 2 transcripts (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.n = ["tiny-kimi-k2.5-base"], 2
    if not args.models:
        parser.error("give at least one model (or --quick)")
    transcripts = heldout_transcripts(args.task, args.n)
    scores = [score(model, transcripts) for model in args.models]
    for result in scores:
        print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(scores, handle, indent=2)


if __name__ == "__main__":
    main()
