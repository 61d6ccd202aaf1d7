"""`stateset-agents export`: a trained run as files an inference engine loads.

    stateset-agents export outputs/customer_service_gspo --out exports/cs-adapter           # adapter alone
    stateset-agents export outputs/customer_service_gspo --out exports/cs-merged --merge    # full checkpoint
    stateset-agents export outputs/run/checkpoints/iter_000040 --out DIR --merge --model tiny-kimi-k2.5-base

What is exported. RUN_OR_CHECKPOINT is resolved exactly as `eval --adapter` resolves it (a training run
directory: its latest complete checkpoint; a checkpoint directory; a PEFT adapter directory). The base
model is `--model`, else the run's `config.yaml` `model_name`, else the adapter's
`base_model_name_or_path`; an adapter trained on another base than `--model` is refused.

- default: the adapter alone, in the form vLLM's `--lora-modules NAME=DIR` and `POST /v1/load_lora_adapter`
  read (`models.export.export_adapter_for_vllm`: PEFT `adapter_config.json` + `adapter_model.safetensors`,
  public DeepSeek-V3 module names). It carries LoRA on `q_a_proj`, `kv_a_proj_with_mqa`, `q_b_proj`,
  `o_proj` and the dense/shared-expert `gate_proj`/`up_proj`/`down_proj`; an adapter on routed experts
  (PEFT `target_parameters`) or on `kv_b_proj` is refused with a pointer to `--merge` (why: the module's
  docstring). vLLM serves it on the text export of the base (`DeepseekV3ForCausalLM`), not on the hub
  Kimi-K2.5 checkpoint (vLLM's Kimi-K2.5 class has no LoRA support).
- `--merge`: a full checkpoint with the adapter (routed experts included) folded in, in the public
  DeepSeek-V3 layout with the routing fields engines need (`models.export.export_for_vllm`), the
  tokenizer and chat template; or a full fine-tune's weights. A quantized base is refused (load it in
  bf16, merge, then quantize). The merge runs in float32 on CPU and is written in the base's dtype.

Both get a model card (`README.md`): the base model, the run's configuration (`config.yaml`), its final
held-out metrics (the last `eval/*` values in `metrics.jsonl` at or before the exported checkpoint, else
"not measured") and the command that made it. Files are written into a temporary directory next to
`--out` and moved into place at the end, so a failed export leaves nothing behind. Every bad input is one
`error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import uuid
from pathlib import Path

from stateset_agents.commands.eval_command import (
    EvalInputError, WeightsSource, check_base_model, resolve_weights,
)

__all__ = ["add_export_arguments", "export_from_args", "model_card", "final_eval_metrics"]


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                        help="a training run directory (its latest checkpoint), a checkpoint directory, or a PEFT "
                             "adapter directory")
    parser.add_argument("--out", required=True, help="directory to create (must not exist, or be empty)")
    parser.add_argument("--merge", action="store_true",
                        help="write a full checkpoint with the adapter folded in (default: the adapter alone)")
    parser.add_argument("--model", default=None,
                        help="base model (default: the run's config.yaml model_name, else the adapter's base)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the base")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalInputError(f"--out {out} exists and is not empty; choose a new directory (or empty it)")


def _run_config_text(weights: WeightsSource) -> str | None:
    from stateset_agents.training.run_dir import CONFIG_FILENAME

    path = weights.run_dir / CONFIG_FILENAME if weights.run_dir is not None else None
    return path.read_text() if path is not None and path.is_file() else None


def _base_model(args: argparse.Namespace, weights: WeightsSource) -> str:
    if args.model is not None:
        check_base_model(weights, args.model)
        return args.model
    config = _run_config_text(weights)
    if config is not None:
        import yaml

        name = (yaml.safe_load(config) or {}).get("model_name")
        if name:
            return str(name)
    if weights.kind == "adapter":
        recorded = json.loads((weights.path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if recorded:
            return str(recorded)
    raise EvalInputError(f"cannot tell the base model of {weights.given} (no run config.yaml, no base_model_name_or_path "
                         f"in adapter_config.json); pass --model")


def _checkpoint_iteration(weights: WeightsSource) -> int | None:
    match = re.fullmatch(r"iter_(\d+)", weights.checkpoint or "")
    return int(match.group(1)) if match else None


def final_eval_metrics(weights: WeightsSource) -> tuple[int, dict[str, float]] | None:
    """(iteration, eval/* values) of the last metrics.jsonl record with eval metrics at or before the
    exported checkpoint's iteration; None when the run measured none (or there is no run)."""
    from stateset_agents.runs.metrics import read_metrics, split_events

    if weights.run_dir is None or not (weights.run_dir / "metrics.jsonl").is_file():
        return None
    records, _ = split_events(read_metrics(weights.run_dir / "metrics.jsonl"))
    limit = _checkpoint_iteration(weights)
    found = None
    for record in records:
        evals = {k: v for k, v in record.items() if k.startswith("eval/")}
        if evals and (limit is None or record.get("iteration", 0) <= limit):
            found = (int(record.get("iteration", 0)), evals)
    return found


def command_line(args: argparse.Namespace) -> str:
    """The `stateset-agents export ...` command that reproduces this export."""
    parts = ["stateset-agents", "export", args.source, "--out", args.out]
    if args.merge:
        parts.append("--merge")
    if args.model is not None:
        parts += ["--model", args.model]
    if args.trust_remote_code:
        parts.append("--trust-remote-code")
    return shlex.join(parts)


def model_card(args: argparse.Namespace, weights: WeightsSource, base: str, extra: str = "") -> str:
    """README.md of the export (module docstring)."""
    kind = "Merged model (adapter folded into the base weights)" if args.merge else "LoRA adapter for vLLM"
    measured = final_eval_metrics(weights)
    if measured is None:
        metrics = "not measured (the run logged no eval/* metrics: eval_every was 0, or this is not a run directory)"
    else:
        iteration, values = measured
        rows = "\n".join(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
                         for key, value in sorted(values.items()))
        metrics = f"Held-out evaluation at iteration {iteration} (metrics.jsonl):\n\n| metric | value |\n|---|---|\n{rows}"
    config = _run_config_text(weights)
    config_text = f"```yaml\n{config.rstrip()}\n```" if config is not None else \
        "not available (the weights do not come from a run directory with a config.yaml)"
    return "\n".join([
        f"# {Path(args.out).name}", "", f"{kind}, exported by stateset-agents.", "",
        f"- Base model: `{base}`", f"- Weights: {weights.description}",
        f"- Made with: `{command_line(args)}`", *([extra] if extra else []), "",
        "## Final held-out metrics", "", metrics, "", "## Training configuration", "", config_text, "",
        "## Serving", "", f"`stateset-agents serve {shlex.quote(args.out)} --engine vllm` prints the launch command.", "",
    ])


def _write(args: argparse.Namespace, weights: WeightsSource, base: str, target: Path) -> str:
    """Write the export into `target`; returns a line for the model card."""
    from stateset_agents.models.export import export_adapter_for_vllm, export_checkpoint_for_vllm

    if not args.merge:
        if weights.kind != "adapter":
            raise EvalInputError(f"{weights.description} is a full fine-tune: it has no adapter to export alone; "
                                 f"use --merge")
        export_adapter_for_vllm(weights.path, target, base_model=base)
        rank = json.loads((target / "adapter_config.json").read_text()).get("r")
        return (f"- Serve: on the base's text export (`DeepseekV3ForCausalLM`) with `--enable-lora --max-lora-rank "
                f"{max(16, rank or 16)} --lora-modules NAME={args.out}`")
    dtype = _declared_dtype(base)
    export_checkpoint_for_vllm(base, target, weights.path if weights.kind == "adapter" else None,
                               full_checkpoint=weights.path if weights.kind == "full" else None,
                               trust_remote_code=args.trust_remote_code, dtype=dtype)
    return f"- Format: `DeepseekV3ForCausalLM`, public layout (`model.layers.N`), {str(dtype or 'float32').removeprefix('torch.')}"


def _declared_dtype(base: str):
    import torch

    config_file = Path(base) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)


def export(args: argparse.Namespace, log=print) -> Path:
    """Validate, export into a temporary sibling of --out, model card, move into place. EvalInputError,
    ExportError, ModelNotAvailableError, UnsupportedSettingError for bad inputs."""
    weights = resolve_weights(args.source)
    out = Path(args.out).expanduser()
    _check_out(out)
    base = _base_model(args, weights)
    log(f"exporting {weights.description} on base {base} ({'merged' if args.merge else 'adapter only'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    try:
        extra = _write(args, weights, base, temp)
        (temp / "README.md").write_text(model_card(args, weights, base, extra))
        if out.exists():
            out.rmdir()  # empty (checked)
        os.replace(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


def export_from_args(args: argparse.Namespace) -> int:
    """`stateset-agents export`: every bad input is one `error:` line and exit status 2."""
    from stateset_agents.cli import fail
    from stateset_agents.models.export import ExportError
    from stateset_agents.models.loading import ModelNotAvailableError, UnsupportedSettingError

    try:
        out = export(args)
    except (EvalInputError, ExportError, ModelNotAvailableError, UnsupportedSettingError) as error:
        return fail(str(error))
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"wrote {out}: {files}")
    print(f"serve it: stateset-agents serve {shlex.quote(str(out))} --engine vllm")
    return 0

