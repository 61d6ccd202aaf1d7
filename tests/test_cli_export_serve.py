"""`stateset-agents export` and `serve`: merged and adapter-only exports of a run, bad inputs, launch commands,
and (marked vllm) a trained tool call parsed by vLLM's own kimi_k2 parsers.

The model is the tiny Kimi-K2.5 built at the MLA widths vLLM's CPU attention runs (`kv_lora_rank=512`,
`qk_rope_head_dim=64`, set explicitly so these tests do not depend on TinyKimiSpec's defaults). The run
directory is what the trainer leaves: `config.yaml`, `metrics.jsonl` (with a held-out eval record) and
complete checkpoints of a LoRA adapter whose B matrices are randomised (a zero B would make the merge a
no-op), routed experts included.

Merged-export tolerance: the export, reloaded by transformers as `DeepseekV3ForCausalLM`, gives the
PEFT model's logits to atol 1e-5 in float32 (tests/test_export.py measures ~1e-6: `(W + sBA) x` rounds
differently from `W x + s B (A x)`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from stateset_agents.cli import main

ATOL = 1e-5
IDS = torch.tensor([[5, 17, 300, 42, 999, 7, 1200, 64, 8, 2000, 33, 1500]])
EVAL_RECORD = {"iteration": 2, "reward/mean": 0.1, "eval/reward_mean": 0.4321, "eval/reward_std": 0.1,
               "eval/success_rate": 0.25}


@pytest.fixture(scope="session")
def base_dir(tiny_model_dir) -> Path:
    """The session's base tiny model (the default spec has vLLM's MLA widths, 512 + 64); only read here."""
    return tiny_model_dir


def load(base_dir):
    from stateset_agents.models.loading import LoadSettings, load_model

    return load_model(str(base_dir), LoadSettings(device="cpu", dtype="float32"))


def lora(model, include_experts: bool, modules: list[str] | None = None, seed: int = 1):
    from peft import LoraConfig, get_peft_model

    from stateset_agents.models.lora_targets import resolve_lora_targets

    if modules is None:
        config = resolve_lora_targets(model, None, include_experts=include_experts).build_lora_config(r=4, alpha=8)
    else:
        config = LoraConfig(r=4, lora_alpha=8, target_modules=modules)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return peft_model.eval()


def make_run(root: Path, base_dir: Path, peft_model, with_eval: bool = True) -> Path:
    from stateset_agents.runs.checkpoints import save_checkpoint
    from stateset_agents.training.kimi25_config import get_kimi25_config

    get_kimi25_config(model_name=str(base_dir), output_dir=str(root)).save(root)
    save_checkpoint(root, 1, peft_model, None, None, {}, keep_last=None)
    save_checkpoint(root, 2, peft_model, None, None, {}, keep_last=None)
    lines = [{"iteration": 1, "reward/mean": 0.0, "eval/reward_mean": 0.1}, EVAL_RECORD, {"iteration": 3}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines[: 3 if with_eval else 0]))
    return root


@pytest.fixture(scope="session")
def expert_run(base_dir, tmp_path_factory):
    """(run dir, logits of base+adapter on IDS): LoRA on every projection and the fused routed experts."""
    model = lora(load(base_dir).model, include_experts=True)
    with torch.no_grad():
        adapted = model(input_ids=IDS).logits
        with model.disable_adapter():
            base = model(input_ids=IDS).logits
    assert (adapted - base).abs().max() > 1e-2, "the adapter must change the model for the test to mean anything"
    return make_run(tmp_path_factory.mktemp("expert_run"), base_dir, model), adapted


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the test printed before (model loading progress bars)
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- export --merge


def test_merged_export_equals_base_plus_adapter_and_reloads_in_transformers(expert_run, base_dir, tmp_path, capsys):
    from transformers import DeepseekV3ForCausalLM

    run, adapted = expert_run
    out = tmp_path / "merged"
    code, stdout, err = run_cli(capsys, "export", run, "--out", out, "--merge")
    assert code == 0, err
    reloaded = DeepseekV3ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "DeepseekV3ForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, adapted, rtol=0, atol=ATOL)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md"} <= names
    config = json.loads((out / "config.json").read_text())
    assert (config["topk_method"], config["scoring_func"], config["architectures"]) == \
        ("noaux_tc", "sigmoid", ["DeepseekV3ForCausalLM"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")], "temporary directory left behind"
    card = (out / "README.md").read_text()
    assert f"- Base model: `{base_dir}`" in card and f"run {run}, latest checkpoint iter_000002" in card
    assert "iter_000002" in card and "| eval/reward_mean | 0.4321 |" in card and "iteration 2" in card
    assert "model_name:" in card and "```yaml" in card  # the run's config.yaml
    assert f"stateset-agents export {run} --out {out} --merge" in card


def test_a_run_without_eval_metrics_says_not_measured(base_dir, tmp_path, capsys):
    model = lora(load(base_dir).model, include_experts=False, modules=["q_a_proj", "o_proj"])
    run = make_run(tmp_path / "run", base_dir, model, with_eval=False)
    code, _, err = run_cli(capsys, "export", run / "checkpoints" / "iter_000001", "--out", tmp_path / "out", "--merge")
    assert code == 0, err
    assert "## Final held-out metrics\n\nnot measured" in (tmp_path / "out" / "README.md").read_text()


# ----------------------------------------------------------------------------- export (adapter only)


def test_adapter_only_export_uses_vllm_module_names(base_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    modules = ["q_a_proj", "kv_a_proj_with_mqa", "q_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = lora(load(base_dir).model, include_experts=False, modules=modules)
    run = make_run(tmp_path / "run", base_dir, model)
    out = tmp_path / "adapter"
    code, _, err = run_cli(capsys, "export", run, "--out", out)
    assert code == 0, err
    saved = load_file(str(run / "checkpoints" / "iter_000002" / "adapter" / "adapter_model.safetensors"))
    exported = load_file(str(out / "adapter_model.safetensors"))
    assert len(saved) == len(exported)
    pattern = re.compile(r"base_model\.model\.model\.layers\.\d+\.(self_attn|mlp|mlp\.shared_experts)\.\w+\.lora_[AB]\.weight")
    assert all(pattern.fullmatch(k) for k in exported), sorted(exported)[:4]
    for key, tensor in saved.items():
        assert torch.equal(exported[key.replace("model.language_model.", "model.")], tensor)
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(modules) and not config["target_parameters"]
    assert config["base_model_name_or_path"] == str(base_dir) and config["auto_mapping"] is None
    assert "LoRA adapter for vLLM" in (out / "README.md").read_text()


@pytest.mark.parametrize("what, modules, message", [
    ("routed experts", None, "not vLLM's expert-LoRA format"),
    ("kv_b_proj", ["q_a_proj", "kv_b_proj"], "folds into its decode weights"),
])
def test_adapter_only_export_refuses_what_vllm_cannot_run(base_dir, tmp_path, capsys, what, modules, message):
    model = lora(load(base_dir).model, include_experts=True, modules=modules)
    run = make_run(tmp_path / "run", base_dir, model)
    code, _, err = run_cli(capsys, "export", run, "--out", tmp_path / "out")
    one_error_line(code, err)
    assert message in err and "--merge" in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_error_line(expert_run, base_dir, tmp_path, capsys):
    run, _ = expert_run
    err = one_error_line(*run_cli(capsys, "export", tmp_path / "missing", "--out", tmp_path / "o")[::2])
    assert "does not exist" in err
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    err = one_error_line(*run_cli(capsys, "export", tmp_path / "empty_run", "--out", tmp_path / "o")[::2])
    assert "has no complete checkpoint" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    err = one_error_line(*run_cli(capsys, "export", run, "--out", tmp_path / "full", "--merge")[::2])
    assert "exists and is not empty" in err and (tmp_path / "full" / "x.txt").read_text() == "keep me"
    err = one_error_line(*run_cli(capsys, "export", run, "--out", tmp_path / "o", "--model", "tiny-kimi-k2.5")[::2])
    assert "was trained on base model" in err


def test_merging_into_a_quantized_base_is_refused(expert_run, base_dir, tmp_path, capsys):
    run, _ = expert_run
    quantized = tmp_path / base_dir.name  # the name the run was trained on: only the quantization differs
    shutil.copytree(base_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized"}
    (quantized / "config.json").write_text(json.dumps(config))
    err = one_error_line(*run_cli(capsys, "export", run, "--out", tmp_path / "o", "--merge", "--model", quantized)[::2])
    assert "quantized (compressed-tensors)" in err and "load the base in bf16" in err and "then quantize" in err


def test_a_model_loaded_in_4bit_is_refused():
    from types import SimpleNamespace

    from stateset_agents.models.export import ExportError, check_not_quantized

    with pytest.raises(ExportError, match="loaded in 4/8-bit.*merge, then quantize"):
        check_not_quantized({"model_type": "deepseek_v3"}, SimpleNamespace(is_loaded_in_4bit=True))


# ----------------------------------------------------------------------------- serve (printing)


def test_serve_prints_the_cpu_command_for_the_tiny_model(expert_run, tmp_path, capsys):
    run, _ = expert_run
    assert run_cli(capsys, "export", run, "--out", tmp_path / "m", "--merge")[0] == 0
    code, out, _ = run_cli(capsys, "serve", tmp_path / "m", "--engine", "vllm", "--port", "8123")
    assert code == 0
    command = out.splitlines()[1]
    for flag in ("VLLM_CPU_KVCACHE_SPACE=1 ", "-m vllm.entrypoints.openai.api_server", f"--model {tmp_path / 'm'}",
                 "--dtype float32", "--enforce-eager", "--max-model-len 1024", "--port 8123",
                 "--enable-auto-tool-choice --tool-call-parser kimi_k2 --reasoning-parser kimi_k2"):
        assert flag in command, (flag, command)
    assert "-tp" not in command and "--trust-remote-code" not in command
    code, out, _ = run_cli(capsys, "serve", tmp_path / "m", "--engine", "ktransformers")
    assert code == 0 and "does not apply" in out


def test_serve_prints_the_gpu_commands_for_kimi_k25(capsys):
    code, out, _ = run_cli(capsys, "serve", "moonshotai/Kimi-K2.5", "--engine", "vllm")
    assert code == 0
    assert ("vllm serve moonshotai/Kimi-K2.5 -tp 8 --mm-encoder-tp-mode data --trust-remote-code "
            "--enable-auto-tool-choice --tool-call-parser kimi_k2 --reasoning-parser kimi_k2") in out
    code, out, _ = run_cli(capsys, "serve", "moonshotai/Kimi-K2.5", "--engine", "sglang")
    assert ("python -m sglang.launch_server --model-path moonshotai/Kimi-K2.5 --tp 8 --trust-remote-code "
            "--tool-call-parser kimi_k2 --reasoning-parser kimi_k2") in out
    code, out, _ = run_cli(capsys, "serve", "moonshotai/Kimi-K2.5", "--engine", "ktransformers")
    assert code == 0 and out.startswith("# UNVERIFIED") and "--kt-method" in out
    code, _, err = run_cli(capsys, "serve", "moonshotai/Kimi-K2.5", "--engine", "sglang", "--run")
    assert "--run starts vLLM only" in one_error_line(code, err)


# ----------------------------------------------------------------------------- serve --run (real vLLM)

COMPLETION_REASONING = "The customer asks about order T916. I will look it up."
COMPLETION_ARGS = '{"order_id": "T916"}'


def train_to_emit(model, prompt_ids: list[int], completion_ids: list[int], steps: int = 300) -> int:
    """Adam on the completion tokens only until every one is the teacher-forced argmax by a margin of 2 nats
    (so greedy decoding reproduces it in any engine whose logits agree to far less than that). Returns steps."""
    ids = torch.tensor([prompt_ids + completion_ids])
    start = len(prompt_ids)
    labels = ids[0, start:]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(1, steps + 1):
        logits = model(input_ids=ids).logits[0, start - 1:-1]
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            top2 = logits.topk(2, dim=-1)
            correct = (top2.indices[:, 0] == labels).all()
            margin = (top2.values[:, 0] - top2.values[:, 1]).min()
        if correct and margin > 2.0:
            model.eval()
            return step
    raise AssertionError(f"the tiny model did not learn the completion in {steps} steps (loss {loss.item():.3f})")


@pytest.mark.vllm
def test_vllm_parses_what_we_trained_into_tool_calls_and_reasoning(base_dir, tmp_path, capsys):
    """What this proves: a model trained here (full fine-tune of the text stack; LoRA on the random tiny base
    learns one answer far slower on 2 cores, and merging LoRA is proved above) to answer the smoke conversation
    with a thinking block and a Kimi tool call, exported with `export --merge` and started by `serve --run`,
    is served by vLLM such that (1) vLLM's rendering of the conversation with tools through the export's chat
    template is token for token the prompt we trained on, and (2) vLLM's own `kimi_k2` reasoning and tool
    parsers turn the greedy completion into `reasoning` and `tool_calls` equal to what our `KimiChatFormat.parse`
    reads from the same trained text (name, arguments, reasoning, content), i.e. what we train is what vLLM
    parses. What it does not prove: parser agreement on malformed or streamed output, several calls in one
    turn, thinking off, or a model that chose the call on its own (the tiny model was taught this one answer)."""
    pytest.importorskip("httpx")
    from stateset_agents.commands.serve_command import SMOKE_MESSAGES, SMOKE_TOOLS
    from stateset_agents.core.formats.kimi import KimiChatFormat
    from stateset_agents.rollout.vllm_server import VLLMNotAvailableError, find_vllm_python, free_port

    try:
        find_vllm_python()
    except VLLMNotAvailableError as error:
        pytest.skip(str(error))
    loaded = load(base_dir)
    tokenizer = loaded.tokenizer
    prompt_ids = list(tokenizer.apply_chat_template(SMOKE_MESSAGES, tools=SMOKE_TOOLS, add_generation_prompt=True,
                                                    tokenize=True, return_dict=True)["input_ids"])
    target = {"role": "assistant", "content": "", "reasoning_content": COMPLETION_REASONING, "tool_calls": [
        {"id": "functions.get_order_status:0", "type": "function",
         "function": {"name": "get_order_status", "arguments": COMPLETION_ARGS}}]}
    completion_text = KimiChatFormat().render_completion(target)
    completion_ids = tokenizer.encode(completion_text, add_special_tokens=False)
    assert tokenizer.decode(completion_ids) == completion_text, "the completion must round-trip the tokenizer"
    model = loaded.model
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith("model.vision_tower") and "mm_projector" not in name)
    steps = train_to_emit(model, prompt_ids, completion_ids)
    print(f"trained the tiny model to emit the tool call in {steps} steps")
    run = make_run(tmp_path / "run", base_dir, model)
    assert run_cli(capsys, "export", run, "--out", tmp_path / "merged", "--merge")[0] == 0

    code, out, err = run_cli(capsys, "serve", tmp_path / "merged", "--engine", "vllm", "--run", "--smoke-only",
                             "--port", free_port(), "--log", tmp_path / "vllm.log")
    print(out)
    assert code == 0, err
    result = json.loads(out.split("smoke result: ", 1)[1].splitlines()[0])
    assert result["prompt_ids_equal"] is True and result["prompt_tokens"] == len(prompt_ids)
    ours = KimiChatFormat().parse(completion_text)
    assert ours.well_formed and ours.reasoning == COMPLETION_REASONING
    message = result["message"]
    assert result["finish_reason"] == "tool_calls"
    assert message["reasoning"] == ours.reasoning
    assert (message["content"] or "") == ours.content
    calls = [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]]
    assert calls == [(c.id, c.name, c.arguments) for c in ours.tool_calls] == \
        [("functions.get_order_status:0", "get_order_status", {"order_id": "T916"})]
