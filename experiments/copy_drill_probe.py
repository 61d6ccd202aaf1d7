"""Does in-context copying form on copy drills alone? Held-out drill loss while training the base model.

    python experiments/copy_drill_probe.py [--phases 19200:0 6400:120] [--lr 2e-3] [--model tiny-kimi-k2.5-base]
                                           [--architecture kimi|llama] [--out FILE.json] [--quick]

Trains the random-init base model on copy drills (`stateset_agents.training.copy_drills`), one
phase per `COUNT:MAX_FILLER` pair, and prints the loss on held-out drills with no filler and with up to
120 filler tokens every 100 steps. A loss near 2 nats/token means nothing is copied; copying shows as a
sharp drop. `--architecture llama` trains a Llama of the same width and depth instead (same tokenizer),
to tell our architecture from the task. `--out` also writes every report as JSON. `--quick`: one phase
of 64 drills, 16 held-out drills per filler (a smoke test). What it showed: experiments/LOG.md.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch


def drill_loss(model, drills, pad_token_id: int) -> float:
    from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions

    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, len(drills), 64):
            chunk = drills[start:start + 64]
            batch = build_scoring_batch([p for p, _ in chunk], [c for _, c in chunk], pad_token_id,
                                        torch.device("cpu"), torch.float32)
            logprobs = score_completions(model, batch).logprobs
            total -= (logprobs * batch.completion_mask).sum().item()
            count += batch.completion_mask.sum().item()
    model.train()
    return total / count


def main() -> None:
    from stateset_agents.models.loading import LoadSettings, load_model
    from stateset_agents.embedded import ensure_embedded_model
    from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions
    from stateset_agents.training.copy_drills import copy_drill_examples
    from stateset_agents.training.warm_start import length_bucketed_batches

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="+", default=["19200:0", "6400:120"], help="COUNT:MAX_FILLER per phase")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="tiny-kimi-k2.5-base")
    parser.add_argument("--architecture", choices=("kimi", "llama"), default="kimi")
    parser.add_argument("--out", type=Path, help="also write the reports as JSON")
    parser.add_argument("--quick", action="store_true", help="one phase of 64 drills, 16 held-out drills")
    args = parser.parse_args()
    held_out_count = 16 if args.quick else 128
    if args.quick:
        args.phases = ["64:0"]

    torch.manual_seed(0)
    loaded = load_model(str(ensure_embedded_model(args.model)), LoadSettings(device="cpu", dtype="float32"))
    model, tokenizer = loaded.model, loaded.tokenizer
    if args.architecture == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        text = getattr(model.config, "text_config", model.config)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_attention_heads, max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id))
    held_out = {filler: copy_drill_examples(tokenizer, held_out_count, seed=99, max_filler=filler) for filler in (0, 120)}

    reports = []

    def report(label: str) -> None:
        losses = {f"filler<={f}": round(drill_loss(model, d, tokenizer.pad_token_id), 3) for f, d in held_out.items()}
        reports.append({"label": label, "held_out_loss": losses, "seconds": time.perf_counter() - started})
        print(f"{label}: held-out loss {losses}  ({time.perf_counter() - started:.0f} s)", flush=True)

    started = time.perf_counter()
    for phase, spec in enumerate(args.phases):
        count, max_filler = (int(part) for part in spec.split(":"))
        drills = copy_drill_examples(tokenizer, count, seed=phase, max_filler=max_filler)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
        batches = length_bucketed_batches([len(p.input_ids) + len(c) for p, c in drills], args.batch, random.Random(0))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=len(batches),
                                                        pct_start=0.1)
        model.train()
        for step, indices in enumerate(batches):
            if step % 100 == 0:
                report(f"phase {phase} ({spec}) step {step}")
            chunk = [drills[i] for i in indices]
            batch = build_scoring_batch([p for p, _ in chunk], [c for _, c in chunk], tokenizer.pad_token_id,
                                        torch.device("cpu"), torch.float32)
            loss = -score_completions(model, batch).logprobs.sum() / batch.completion_mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        report(f"phase {phase} ({spec}) end")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "reports": reports},
                                       indent=2))


if __name__ == "__main__":
    main()
