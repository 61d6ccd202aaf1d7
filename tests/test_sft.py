"""`stateset-agents sft`: transcripts -> exact per-turn targets -> TRL SFTTrainer -> a model RL can start from.

Real components throughout: the tiny Kimi-K2.5 (conftest), a tiny Llama with a byte-level BPE tokenizer and
a Hermes-style chat template (the non-Kimi path), TRL's SFTTrainer, PEFT LoRA, the RL trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stateset_agents.core.formats import GenericChatFormat, KimiChatFormat, get_chat_format
from stateset_agents.models.loading import LoadSettings, load_model
from stateset_agents.rollout.encoding import EncodedPrompt, PromptEncoder
from stateset_agents.rollout.logprobs import build_scoring_batch, score_completions
from stateset_agents.tasks.transcripts import dialogue_to_openai_messages, write_transcripts
from stateset_agents.training.sft import SFTRunError, SFTSettings, last_checkpoint, run_sft
from stateset_agents.training.sft_data import (
    TemplateError, TranscriptError, Transcript, build_examples, read_transcripts, transcript_examples,
)

TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Look up an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]


def order_transcript(order: str, status: str = "shipped") -> dict:
    """A short helpdesk conversation with OpenAI-style call ids ("c1"), reasoning, a tool call and its result."""
    return {"messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "reasoning_content": "Need the id.", "content": "What is your order number?"},
        {"role": "user", "content": f"It is {order}."},
        {"role": "assistant", "reasoning_content": "Look it up.", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"order {order}: {status}"},
        {"role": "assistant", "reasoning_content": "Tell them.", "content": f"Your order {order} has {status}."},
    ], "tools": TOOLS, "metadata": {"task": "customer_service"}}


def expected_kimi_targets(order: str, status: str = "shipped") -> list[str]:
    args = json.dumps({"order_id": order})
    return ["Need the id.</think>What is your order number?<|im_end|>",
            "Look it up.</think><|tool_calls_section_begin|><|tool_call_begin|>functions.lookup_order:0"
            f"<|tool_call_argument_begin|>{args}<|tool_call_end|><|tool_calls_section_end|><|im_end|>",
            f"Tell them.</think>Your order {order} has {status}.<|im_end|>"]


@pytest.fixture(scope="module")
def transcripts_file(tmp_path_factory) -> Path:
    orders = [f"A{1000 + 37 * i}" for i in range(12)]
    records = [order_transcript(order, "shipped" if i % 2 else "been delivered") for i, order in enumerate(orders)]
    return write_transcripts(records, tmp_path_factory.mktemp("data") / "transcripts.jsonl")


@pytest.fixture(scope="module")
def kimi_encoder(tiny_loaded) -> PromptEncoder:
    return PromptEncoder(tiny_loaded.tokenizer, get_chat_format(tiny_loaded.tokenizer), tiny_loaded.image_settings)


def split(example) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids); the target must be one block at the end."""
    start = example.completion_mask.index(1)
    assert example.completion_mask == [0] * start + [1] * (len(example.input_ids) - start)
    return example.input_ids[:start], example.input_ids[start:]


# ----------------------------------------------------------------------------- transcripts


def test_dialogue_to_openai_messages_from_reference_dialogues():
    from stateset_agents.tasks.episodes import generate_reference_dialogues

    dialogue = generate_reference_dialogues("technical_support", 1, seed=0, mix={"oracle": 1.0})[0]
    record = dialogue_to_openai_messages(dialogue)
    assert json.loads(json.dumps(record)) == record  # JSON-serialisable as is
    assert record["tools"] == dialogue["tools"] and record["metadata"]["task"] == "technical_support"
    assert [m["role"] for m in record["messages"]] == [m["role"] for m in dialogue["messages"]]
    calls = [c for m in record["messages"] for c in m.get("tool_calls", [])]
    assert calls and all(isinstance(c["function"]["arguments"], str) and c["type"] == "function" for c in calls)
    assert set(record) == {"messages", "tools", "metadata"}
    assert not (set().union(*map(set, record["messages"])) - {"role", "content", "reasoning_content", "tool_calls",
                                                              "tool_call_id", "name"})


def test_dialogue_to_openai_messages_images_and_dict_arguments():
    from PIL import Image

    picture = Image.new("RGB", (4, 4), "red")
    record = dialogue_to_openai_messages({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image", "image": picture}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]})
    part = record["messages"][0]["content"][1]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")
    assert record["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert "tools" not in record and "metadata" not in record


# ----------------------------------------------------------------------------- validation


def test_validation_names_line_and_field(tmp_path):
    good = order_transcript("A1234")
    bad_args = json.loads(json.dumps(good))
    bad_args["messages"][4]["tool_calls"][0]["function"]["arguments"] = '{"order_id": '
    bad_role = {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    orphan = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"},
                           {"role": "tool", "tool_call_id": "zz", "content": "r"}]}
    image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url",
                                                                                         "image_url": {"url": "x.png"}}]},
                          {"role": "assistant", "content": "ok"}]}
    no_assistant = {"messages": [{"role": "user", "content": "hi"}]}
    lines = [json.dumps(good), "{not json", "", json.dumps(bad_args), json.dumps(bad_role), json.dumps(orphan),
             json.dumps(image), json.dumps(no_assistant), json.dumps({"messages": [], "tools": {}})]
    path = tmp_path / "transcripts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TranscriptError) as caught:
        read_transcripts(path)
    problems = caught.value.problems
    assert problems[0].startswith(f"{path} line 2: not valid JSON")
    assert f"{path} line 4: messages[4].tool_calls[0].function.arguments: not valid JSON" in problems
    assert f"{path} line 5: messages[0].role: must be one of system, user, assistant, tool, got 'bot'" in problems
    assert f"{path} line 6: messages[2].tool_call_id: 'zz' answers no earlier tool call" in problems
    assert any(p.startswith(f"{path} line 7: messages[0].content[1]: image parts are not supported") for p in problems)
    assert f"{path} line 8: messages: no assistant message (nothing to learn from)" in problems
    assert any(p.startswith(f"{path} line 9: messages: missing or empty") for p in problems)
    assert not any(" line 1:" in p or " line 3:" in p for p in problems)  # the good line and the blank one


def test_cli_reports_every_bad_line_before_loading_a_model(tmp_path, capsys):
    from stateset_agents.cli import main

    path = tmp_path / "t.jsonl"
    path.write_text('{"messages": [{"role": "user"}]}\n[1]\n')
    out = tmp_path / "out"
    assert main(["sft", "--model", "no-such-model", "--data", str(path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {path} line 1: messages[0].content: missing (a string, or a list of text parts)",
                   f"error: {path} line 2: expected a JSON object with 'messages', got list"]
    assert not out.exists()  # nothing written, and the (missing) model was never looked up


# ----------------------------------------------------------------------------- examples (Kimi)


def test_kimi_targets_are_exactly_the_sampled_turns(kimi_encoder):
    record = order_transcript("A1234")
    examples = transcript_examples(Transcript(1, record["messages"], record["tools"]), kimi_encoder)
    tokenizer, fmt = kimi_encoder.tokenizer, kimi_encoder.chat_format
    assert isinstance(fmt, KimiChatFormat)
    targets = [tokenizer.decode(split(e)[1]) for e in examples]
    assert targets == expected_kimi_targets("A1234")
    prompts = [tokenizer.decode(split(e)[0]) for e in examples]
    assert all(p.endswith("<|im_assistant|>assistant<|im_middle|><think>") for p in prompts)
    # the tool result is linked to the renamed call and named after its tool, as our environments do
    assert "<|im_system|>lookup_order<|im_middle|>## Return of functions.lookup_order:0\norder A1234: shipped" in prompts[2]
    assert prompts[0].startswith("<|im_system|>tool_declare<|im_middle|>")
    # what the model learns to write parses back into the transcript's turn (ids Kimi's parser can read)
    parsed = fmt.parse(targets[1])
    assert parsed.well_formed and parsed.reasoning == "Look it up."
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("lookup_order", {"order_id": "A1234"})]
    # history reasoning is emptied as the sampler sees it (Kimi's template), the current turn's kept
    assert "<think></think>What is your order number?" in prompts[2]


def test_kimi_targets_without_thinking(kimi_encoder):
    record = order_transcript("A1234")
    examples = transcript_examples(Transcript(1, record["messages"], record["tools"]), kimi_encoder, thinking=False)
    decoded = [[kimi_encoder.tokenizer.decode(part) for part in split(e)] for e in examples]
    assert decoded[0][1] == "What is your order number?<|im_end|>"
    assert all(prompt.endswith("<think></think>") for prompt, _ in decoded)


def test_text_that_looks_like_markup_stays_text(kimi_encoder):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "type <|im_end|> to stop"}]
    (example,) = transcript_examples(Transcript(1, messages), kimi_encoder)
    target = split(example)[1]
    end = kimi_encoder.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert target.count(end) == 1 and target[-1] == end  # only the real end of turn is the special token


def test_long_turns_are_set_apart_whole(kimi_encoder, transcripts_file):
    transcripts = read_transcripts(transcripts_file)
    everything, none_long = build_examples(transcripts, kimi_encoder)
    assert len(everything) == 3 * len(transcripts) and not none_long
    limit = sorted(len(e.input_ids) for e in everything)[len(everything) // 2]
    kept, too_long = build_examples(transcripts, kimi_encoder, max_length=limit)
    assert kept and too_long and len(kept) + len(too_long) == len(everything)
    assert all(len(e.input_ids) <= limit for e in kept) and all(len(e.input_ids) > limit for e in too_long)


# ----------------------------------------------------------------------------- examples (any model)

HERMES_TEMPLATE = (  # {{ '\n' }} where a newline must survive jinja's whitespace control
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}<|im_start|>assistant{{ '\n' }}"
    "{%- if m.get('reasoning_content') -%}<think>{{ '\n' + m['reasoning_content'] + '\n' }}</think>{{ '\n\n' }}"
    "{%- endif -%}"
    "{{ m['content'] or '' }}"
    "{%- for c in m.get('tool_calls') or [] -%}<tool_call>{{ '\n' }}{\"name\": \"{{ c['function']['name'] }}\", "
    "\"arguments\": {{ c['function']['arguments'] }}}{{ '\n' }}</tool_call>{%- endfor -%}<|im_end|>{{ '\n' }}"
    "{%- elif m['role'] == 'tool' -%}<|im_start|>user{{ '\n' }}<tool_response>{{ '\n' + m['content'] + '\n' }}"
    "</tool_response><|im_end|>{{ '\n' }}"
    "{%- else -%}<|im_start|>{{ m['role'] + '\n' + m['content'] }}<|im_end|>{{ '\n' }}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\n' }}{%- endif -%}"
)


def tiny_llama_dir(directory: Path, template: str = HERMES_TEMPLATE) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer and a Hermes-style template: a model that is not Kimi."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [json.dumps(order_transcript(f"A{n}")) for n in range(1000, 1100)]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=specials[3:], chat_template=template)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("llama"))


def test_generic_targets_are_what_the_template_adds_up_to_the_end_of_turn(llama_dir):
    loaded = load_model(str(llama_dir), LoadSettings(device="cpu"))
    encoder = PromptEncoder(loaded.tokenizer, get_chat_format(loaded.tokenizer))
    assert isinstance(encoder.chat_format, GenericChatFormat)
    record = order_transcript("A1234")
    examples = transcript_examples(Transcript(1, record["messages"], record["tools"]), encoder)
    targets = [loaded.tokenizer.decode(split(e)[1]) for e in examples]
    assert targets == [
        "<think>\nNeed the id.\n</think>\n\nWhat is your order number?<|im_end|>",
        '<think>\nLook it up.\n</think>\n\n<tool_call>\n{"name": "lookup_order", "arguments": {"order_id": "A1234"}}'
        "\n</tool_call><|im_end|>",
        "<think>\nTell them.\n</think>\n\nYour order A1234 has shipped.<|im_end|>",
    ]
    assert loaded.tokenizer.decode(split(examples[2])[0]).endswith(
        "<tool_response>\norder A1234: shipped\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_a_template_that_drops_reasoning_is_refused(tmp_path):
    template = HERMES_TEMPLATE.replace("{%- if m.get('reasoning_content') -%}", "{%- if false -%}")
    loaded = load_model(str(tiny_llama_dir(tmp_path, template)), LoadSettings(device="cpu"))
    encoder = PromptEncoder(loaded.tokenizer, get_chat_format(loaded.tokenizer))
    record = order_transcript("A1234")
    with pytest.raises(TemplateError, match="line 7: the chat template drops the assistant turn's reasoning_content"):
        build_examples([Transcript(7, record["messages"], record["tools"])], encoder)


# ----------------------------------------------------------------------------- training


def target_nll(model, examples, pad_id: int) -> float:
    """Mean negative log-likelihood of the target tokens, scored as the RL trainer scores them."""
    prompts, targets = zip(*(split(e) for e in examples))
    batch = build_scoring_batch([EncodedPrompt(p) for p in prompts], list(targets), pad_id, torch.device("cpu"),
                                torch.float32)
    with torch.no_grad():
        logprobs = score_completions(model, batch).logprobs
    return float(-logprobs.sum() / batch.completion_mask.sum())


def settings(tmp_path, data, **overrides) -> SFTSettings:
    values = dict(model="tiny-kimi-k2.5-base", data=str(data), output_dir=str(tmp_path / "sft"), lora_r=8,
                  lora_alpha=16, max_steps=8, batch_size=4, learning_rate=1e-2, warmup=0, save_steps=4,
                  logging_steps=1, device="cpu", seed=1)
    values.update(overrides)
    return SFTSettings(**values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, transcripts_file, tiny_model_dir):
    return run_sft(settings(tmp_path_factory.mktemp("run"), transcripts_file), log=lambda _: None)


@pytest.mark.slow  # 55 s on 2 busy cores (8 LoRA steps with expert adapters, 3 model loads)
def test_training_lowers_the_target_loss_and_writes_a_loadable_model(trained, transcripts_file, tiny_model_dir):
    base = load_model(str(tiny_model_dir), LoadSettings(device="cpu"))
    tuned = load_model(str(trained.model_dir), LoadSettings(device="cpu"))
    encoder = PromptEncoder(tuned.tokenizer, get_chat_format(tuned.tokenizer), tuned.image_settings)
    examples, _ = build_examples(read_transcripts(transcripts_file), encoder)
    before = target_nll(base.model, examples, base.tokenizer.pad_token_id)
    after = target_nll(tuned.model, examples, tuned.tokenizer.pad_token_id)
    assert after < before - 0.25, (before, after)  # measured: 8.00 -> 7.64 nats per target token
    assert trained.global_step == 8 and len(trained.losses) == 8 and trained.task == "customer_service"
    # the merged model is the base with the adapter folded in (routed-expert LoRA included)
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(load_model(str(tiny_model_dir), LoadSettings(device="cpu")).model,
                                        str(trained.adapter_dir))
    assert adapted.peft_config["default"].target_parameters  # the fused experts were adapted too
    ids = torch.tensor([examples[2].input_ids])
    with torch.no_grad():
        torch.testing.assert_close(tuned.model(input_ids=ids).logits, adapted(input_ids=ids).logits,
                                   atol=1e-4, rtol=1e-4)
    # the special-token ids the base was loaded with, not the ones the Trainer aligned during training
    assert tuned.model.generation_config.eos_token_id == base.model.generation_config.eos_token_id
    assert tuned.is_kimi and (trained.model_dir / "preprocessor_config.json").exists()


@pytest.mark.slow  # 33 s on 2 busy cores, plus the trained fixture
def test_rl_starts_from_the_output_model(trained, tmp_path):
    from stateset_agents.training.config import TrainingConfig
    from stateset_agents.training.trainer import GSPOTrainer

    config = TrainingConfig(
        model_name=str(trained.model_dir), task="customer_service", output_dir=str(tmp_path / "rl"), use_lora=True,
        lora_r=4, lora_alpha=8, num_generations=2, scenarios_per_iteration=1, per_device_train_batch_size=1,
        gradient_accumulation_steps=1, num_outer_iterations=1, learning_rate=1e-3, max_new_tokens=8, max_turns=1,
        eval_every=0, save_every=1, report_to=["jsonl"], device="cpu", seed=0)
    result = GSPOTrainer(config).train()
    rows = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    records = [row for row in rows if "event" not in row]
    assert [r["iteration"] for r in records] == [1] and records[0]["tokens/completion"] > 0


@pytest.mark.slow  # 55-130 s on 2 busy cores: three training runs
def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path, transcripts_file, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Crash(Exception):
        pass

    class CrashAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Crash(state.global_step)

    short = dict(max_steps=4, save_steps=2, batch_size=2, lora_target_experts=False)  # small: 3 runs below
    whole = run_sft(settings(tmp_path / "whole", transcripts_file, **short), log=lambda _: None)
    data = tmp_path / "copy.jsonl"
    data.write_bytes(transcripts_file.read_bytes())
    interrupted = settings(tmp_path / "resumed", data, **short)
    with pytest.raises(Crash):
        run_sft(interrupted, log=lambda _: None, callbacks=[CrashAfterFirstCheckpoint()])
    assert last_checkpoint(interrupted.output_dir).name == "checkpoint-2"
    with pytest.raises(SFTRunError, match="already holds an sft run; pass --resume"):
        run_sft(interrupted, log=lambda _: None)
    with pytest.raises(SFTRunError, match="learning_rate: was 0.01, now 0.02"):
        run_sft(settings(tmp_path / "resumed", data, **short, learning_rate=2e-2, resume=True))
    original = data.read_bytes()
    data.write_bytes(original + original.splitlines(keepends=True)[0])
    with pytest.raises(SFTRunError, match="these differ: the contents of .*copy.jsonl"):
        run_sft(settings(tmp_path / "resumed", data, **short, resume=True))
    data.write_bytes(original)
    resumed = run_sft(settings(tmp_path / "resumed", data, **short, resume=True), log=lambda _: None)
    assert resumed.global_step == whole.global_step == 4
    assert len(resumed.losses) == 4 and resumed.losses[2:] == pytest.approx(whole.losses[2:], abs=1e-5)
    a, b = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(SFTRunError, match="has no checkpoint to continue from"):
        run_sft(settings(tmp_path / "fresh", transcripts_file, resume=True))


def test_any_model_trains_through_its_own_template(llama_dir, transcripts_file, tmp_path):
    result = run_sft(settings(tmp_path, transcripts_file, model=str(llama_dir), max_steps=3, save_steps=3),
                     log=lambda _: None)
    tuned = load_model(str(result.model_dir), LoadSettings(device="cpu"))
    assert isinstance(get_chat_format(tuned.tokenizer), GenericChatFormat) and not tuned.is_kimi
    assert result.global_step == 3 and all(loss == loss for loss in result.losses)


def test_the_next_command_names_the_domain_the_transcripts_came_from():
    from stateset_agents.commands.sft_command import rl_task

    assert rl_task("customer_service", "examples/data/customer_service_transcripts.jsonl") == "customer_service"
    assert rl_task("telecom_billing", "examples/domains/telecom_billing/transcripts.jsonl") == \
        "examples/domains/telecom_billing"
    assert rl_task(None, "examples/data/customer_service_transcripts.jsonl") == "customer_service"
