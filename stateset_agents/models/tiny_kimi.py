"""The embedded default model: a tiny, randomly initialised Kimi-K2.5.

`tiny-kimi-k2.5-base` is a native `Kimi_K25ForConditionalGeneration` (DeepSeek-V3 text backbone
with MLA attention and MoE: layer 0 dense, later layers 8 routed experts / 2 active / 1 shared;
a 2-layer MoonViT vision tower) with a byte-level BPE tokenizer trained locally on the task data.
The tokenizer carries Kimi's special tokens and a jinja chat template reproducing Kimi's format,
so it exercises the same code paths as the real 1T model: MLA and expert LoRA targets, thinking,
tool calls, images. It is built once, reproducibly from a seed, and saved as an ordinary Hugging
Face model directory (see `stateset_agents.embedded` for where,
and for the task dialogues its tokenizer is trained on).

Simplification: special tokens take the lowest ids (0..N-1) instead of Kimi's 163584+.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch

from stateset_agents.core.formats import KIMI_CHAT_TEMPLATE, KimiChatFormat
from stateset_agents.models.vision import ImageProcessorSettings

BASE_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
VIDEO_PLACEHOLDER = "<|kimi_k25_video_placeholder|>"  # reserved: videos are not used in training


@dataclass(frozen=True)
class TinyKimiSpec:
    """Sizes of the tiny model (the defaults give about 2.46M parameters, sized for two CPU cores),
    its seed and its tokenizer recipe version. Everything is small except the MLA KV latent and the
    rotary dims, which are Kimi-K2.5's real widths (`kv_lora_rank=512`, `qk_rope_head_dim=64`):
    vLLM's CPU MLA attention runs only those, so the same tiny model runs in transformers and in
    vLLM. (Before, 64 and 32: attention already wider relative to the rest; why: experiments/LOG.md.)
    """

    vocab_size: int = 4096
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 256
    moe_intermediate_size: int = 64
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1
    q_lora_rank: int = 64
    kv_lora_rank: int = 512  # Kimi-K2.5's real width (vLLM's CPU MLA runs only 512 + 64)
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 64  # Kimi-K2.5's real width
    v_head_dim: int = 32
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 64
    max_image_patches_per_side: int = 8  # images up to 112x112 px -> at most 16 image tokens
    seed: int = 0
    tokenizer_version: int = 3  # bump when the tokenizer recipe changes: cached models rebuild

    def fingerprint(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def special_tokens() -> list[str]:
    """Every special token, in id order: the base tokens, then Kimi's format tokens."""
    ordered = list(BASE_TOKENS)
    for token in [*KimiChatFormat.special_tokens, VIDEO_PLACEHOLDER]:
        if token not in ordered:
            ordered.append(token)
    return ordered


def build_tokenizer(corpus: Iterable[str], vocab_size: int, max_token_length: int = 32,
                    whole_words: Iterable[str] = ()):
    """Train a byte-level BPE on `corpus` and wrap it as a transformers tokenizer with Kimi's template.

    Unlike GPT-style BPE, merges may cross spaces and punctuation (so templated phrases and tool
    schemas become few tokens), but what the agent must copy is never fused with its neighbours:
    digits are single tokens, an id's letters (the ``T`` of ``T916``) are a token of their own, and
    each of `whole_words` is kept apart from the text around it. Copying an order number, an item
    number or a product category is then a copy of tokens. (With ``It is item T`` as one token,
    the tiny model copied the digits of item numbers but guessed their letter.)
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens()
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    isolated = [r"[A-Z]+(?=[0-9])"]
    words = sorted(set(whole_words))
    if words:
        isolated.append(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b")
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        *(pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in isolated),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_length,
        show_progress=False,
    )
    # special tokens are matched whole at encode time; keep their text out of the merges, or the
    # model could spell "<|im_end|>" from ordinary tokens without ever sampling the real one
    pattern = re.compile("|".join(re.escape(token) for token in specials))
    bpe.train_from_iterator([pattern.sub("\n", text) for text in corpus], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        additional_special_tokens=specials[len(BASE_TOKENS):],
    )
    tokenizer.chat_template = KIMI_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def kimi_config(spec: TinyKimiSpec, tokenizer):
    """A `Kimi_K25Config` with the real model's structure at tiny sizes."""
    from transformers import Kimi_K25Config

    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        model_type="deepseek_v3",
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        moe_intermediate_size=spec.moe_intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        n_routed_experts=spec.n_routed_experts,
        num_experts_per_tok=spec.num_experts_per_tok,
        n_shared_experts=spec.n_shared_experts,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.827,
        q_lora_rank=spec.q_lora_rank,
        kv_lora_rank=spec.kv_lora_rank,
        qk_nope_head_dim=spec.qk_nope_head_dim,
        qk_rope_head_dim=spec.qk_rope_head_dim,
        v_head_dim=spec.v_head_dim,
        max_position_embeddings=262144,
        rope_parameters=dict(
            rope_type="yarn", factor=64.0, original_max_position_embeddings=4096, beta_fast=32.0,
            beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0, rope_theta=50000.0,
        ),
        tie_word_embeddings=False,
        bos_token_id=ids("[BOS]"),
        eos_token_id=ids("[EOS]"),
        pad_token_id=ids("[PAD]"),
    )
    side = spec.max_image_patches_per_side
    vision = dict(
        patch_size=14,
        num_hidden_layers=spec.vision_layers,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_attention_heads=spec.vision_heads,
        pos_emb_height=max(side, 4),
        pos_emb_width=max(side, 4),
    )
    return Kimi_K25Config(
        text_config=text,
        vision_config=vision,
        projection_hidden_size=spec.vision_hidden_size,
        tie_word_embeddings=False,
        image_token_id=ids("<|media_pad|>"),
        video_token_id=ids("<|kimi_k25_video_placeholder|>"),
        vision_start_token_id=ids("<|media_begin|>"),
        vision_end_token_id=ids("<|media_end|>"),
        bos_token_id=ids("[BOS]"),
        eos_token_id=ids("[EOS]"),
        pad_token_id=ids("[PAD]"),
    )


def build_tiny_kimi(directory: str | Path, corpus: Iterable[str], whole_words: Iterable[str] = (),
                    spec: TinyKimiSpec = TinyKimiSpec()) -> Path:
    """Build the base tiny Kimi-K2.5 into `directory` (model, tokenizer, preprocessor, generation
    config), its tokenizer trained on `corpus` with `whole_words` kept apart (`build_tokenizer`)."""
    from transformers import GenerationConfig, Kimi_K25ForConditionalGeneration

    directory = Path(directory)
    tokenizer = build_tokenizer(corpus, spec.vocab_size, whole_words=whole_words)
    config = kimi_config(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = Kimi_K25ForConditionalGeneration(config).eval()
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        eos_token_id=[end_of_turn], pad_token_id=config.text_config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id, temperature=1.0, top_p=0.95, do_sample=True,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    side = spec.max_image_patches_per_side
    ImageProcessorSettings(max_patches=side * side, max_side=side).save(directory)
    (directory / "tiny_kimi_spec.json").write_text(spec.fingerprint())
    return directory
