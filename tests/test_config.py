"""TrainingConfig (validation, files) and the Kimi-K2.5 preset."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
from pydantic import ValidationError

from stateset_agents.training.config import CONTINUAL_STRATEGIES, TrainingConfig
from stateset_agents.training.kimi25_config import GENERIC_SYSTEM_PROMPT, get_kimi25_config

GUIDE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_guide_snippets_are_accepted_unchanged():
    manual = TrainingConfig(
        model_name="moonshotai/Kimi-K2.5",
        use_lora=True,
        lora_r=64,
        lora_alpha=128,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        per_device_train_batch_size=1,
        gradient_accumulation_steps=16,
        num_generations=8,
        learning_rate=3e-6,
        max_grad_norm=1.0,
    )
    assert manual.effective_batch_size == 16
    assert manual.optimizer_steps_per_rollout() == 2  # 4 scenarios x 8 = 32 episodes / 16
    with pytest.warns(UserWarning, match="single task 'customer_service'.*neither replays nor distils.*task sequence"):
        continual = TrainingConfig(  # the guide's snippet trains one task: accepted, with a warning that says so
            model_name="moonshotai/Kimi-K2.5",
            continual_strategy="replay_lwf",
            replay_buffer_size=2000,
            replay_ratio=0.5,
            kl_penalty_beta=0.1,
        )
    assert continual.continual_strategy == "replay_lwf" and continual.task_sequence == ["customer_service"]


def test_every_field_is_documented():
    undocumented = [name for name, field in TrainingConfig.model_fields.items() if not field.description]
    assert undocumented == []


def test_typos_are_errors_with_a_suggestion():
    with pytest.raises(ValidationError, match="unknown TrainingConfig field 'lerning_rate' .did you mean 'learning_rate'"):
        TrainingConfig(lerning_rate=1e-5)
    config = TrainingConfig()
    with pytest.raises(ValidationError, match="did you mean .lora_r."):
        config.lora_rank = 8


def test_rejected_assignment_leaves_the_config_unchanged():
    config = TrainingConfig()
    with pytest.raises(ValidationError, match="lora_dropout"):
        config.lora_dropout = 0.1  # cross-field: experts are targeted
    assert config.lora_dropout == 0.0 and "lora_dropout" not in config.model_fields_set
    with pytest.raises(ValidationError):
        config.learning_rate = -1.0
    assert config.learning_rate == 1e-4
    config.lora_target_experts = False
    config.lora_dropout = 0.1
    assert config.lora_dropout == 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_generations=1), "group needs at least 2"),
        (dict(clip_epsilon_low=-0.1), "greater than or equal to 0"),
        (dict(clip_epsilon_high=-1e-4), "greater than or equal to 0"),
        (dict(replay_ratio=1.0), "less than 1"),
        (dict(continual_strategy="replay", replay_ratio=0.0), r"set replay_ratio in \(0, 1\)"),
        (dict(continual_strategy="lwf", kl_penalty_beta=0.0), "set kl_penalty_beta > 0"),
        (dict(continual_strategy="lwf", use_lora=False), "second frozen LoRA adapter"),
        (dict(lora_dropout=0.05), "PEFT target_parameters, which refuses dropout.*lora_dropout=0.0"),
        (dict(use_4bit=True, use_lora=False), "needs use_lora=True"),
        (dict(scenarios_per_iteration=3, gradient_accumulation_steps=4), "is not a multiple of"),
        # every geometry error names a value for each number that could fix it
        (dict(num_generations=3), "set scenarios_per_iteration=8, or num_generations=4, or gradient_accumulation_steps=1"),
        (dict(num_generations=2, scenarios_per_iteration=1, per_device_train_batch_size=1,
              gradient_accumulation_steps=16), "scenarios_per_iteration=8, or num_generations=16, or "
                                               "gradient_accumulation_steps=2"),
        (dict(clip_epsilon_low=0.0, clip_epsilon_high=0.0), "clipped ratio is always exactly 1"),
        (dict(lora_alpha=float("inf")), "finite number"),
        (dict(kl_beta=float("inf")), "finite number"),
        (dict(max_grad_norm=float("nan")), "finite number"),
        (dict(minibatches_per_rollout=3), "minibatches_per_rollout=3 steps of 8 episodes .* make 24"),
        (dict(task="sales,,technical_support"), "empty name"),
        (dict(lora_target_modules=[]), "non-empty list"),
        (dict(device="gpu"), "should match pattern"),
        (dict(vllm_base_url="localhost:8000"), "should match pattern"),
        (dict(dtype="fp8"), "'auto', 'float32', 'bfloat16' or 'float16'"),
    ],
)
def test_invalid_settings_say_what_to_change(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        TrainingConfig(**kwargs)


def test_unknown_continual_strategy_lists_the_valid_ones():
    with pytest.raises(ValidationError) as info:
        TrainingConfig(continual_strategy="ewc")
    assert all(f"'{name}'" in str(info.value) for name in CONTINUAL_STRATEGIES)


def test_vllm_settings_are_checked_and_say_what_to_change():
    assert TrainingConfig(use_vllm=True).vllm_base_url is None  # a managed server
    urls = ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
    assert TrainingConfig(use_vllm=True, vllm_base_url=urls).vllm_base_url == urls
    with pytest.raises(ValidationError, match="'ftp://x' should match pattern"):
        TrainingConfig(vllm_base_url=["http://a:1", "ftp://x"])
    with pytest.raises(ValidationError, match="empty list"):
        TrainingConfig(vllm_base_url=[])
    with pytest.raises(ValidationError, match="vllm_sync='reload' reloads the managed server"):
        TrainingConfig(use_vllm=True, vllm_base_url="http://a:1", vllm_sync="reload")
    with pytest.raises(ValidationError, match="greater than 0"):
        TrainingConfig(importance_weight_cap=0)


def test_batch_geometry_derives_the_number_of_optimizer_steps():
    config = TrainingConfig()  # 4 scenarios x 4 generations = 16 episodes, 4 x 2 = 8 per step
    assert (config.episodes_per_rollout, config.effective_batch_size) == (16, 8)
    assert config.optimizer_steps_per_rollout() == 2
    assert config.optimizer_steps_per_rollout(episodes=5) == 1  # never more steps than episodes...
    assert TrainingConfig(minibatches_per_rollout=4, gradient_accumulation_steps=1).optimizer_steps_per_rollout() == 4


def test_one_step_per_rollout_warns_that_the_ratio_cannot_move():
    with pytest.warns(UserWarning, match="ratio stays 1"):
        TrainingConfig(scenarios_per_iteration=2)


def test_tasks_as_text_or_list():
    assert TrainingConfig(task="sales, technical_support").task_sequence == ["sales", "technical_support"]
    config = TrainingConfig(task=["customer_service", "sales"])
    assert config.task == "customer_service,sales" and config.task_sequence == ["customer_service", "sales"]


def test_effective_temperature_follows_kimi_advice():
    assert TrainingConfig().effective_temperature == 1.0
    assert TrainingConfig(thinking=False).effective_temperature == 0.6
    assert TrainingConfig(thinking=False, temperature=0.8).effective_temperature == 0.8


def test_yaml_and_json_round_trip(tmp_path):
    config = TrainingConfig(task=["sales", "customer_service"], lora_target_modules=GUIDE_TARGETS, report_to=["jsonl"])
    path = config.save(tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    assert TrainingConfig.from_file(path) == config
    json_path = tmp_path / "config.json"
    json_path.write_text(json.dumps(config.model_dump(mode="json")))
    assert TrainingConfig.from_file(json_path) == config
    assert config.replace(seed=3).seed == 3 and config.seed == 0


def test_bad_files_are_rejected(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model_name: tiny-kimi-k2.5\nnum_generation: 4\n")
    with pytest.raises(ValidationError, match="did you mean 'num_generations'"):
        TrainingConfig.from_file(typo)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        TrainingConfig.from_file(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match=r"must end in \.yaml"):
        TrainingConfig.from_file(tmp_path / "config.toml")


# --- Kimi-K2.5 preset --------------------------------------------------------------------------


def test_kimi25_preset_matches_the_guide():
    config = get_kimi25_config(
        model_name="moonshotai/Kimi-K2.5", task="customer_service", use_lora=True, output_dir="./outputs/kimi25_gspo"
    )
    assert (config.num_generations, config.learning_rate, config.lora_r, config.lora_alpha) == (8, 3e-6, 64, 128)
    assert (config.clip_epsilon_low, config.clip_epsilon_high) == (1.5e-4, 2.5e-4)
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (1, 16)
    assert config.loss_type == "gspo" and config.thinking and config.temperature == 1.0 and config.top_p == 0.95
    assert config.dtype == "auto" and config.lora_dropout == 0.0 and config.max_new_tokens == 4096
    assert config.optimizer_steps_per_rollout() >= 2
    from stateset_agents.tasks.registry import get_task

    assert config.system_prompt == get_task("customer_service").system_prompt


def test_kimi25_preset_prompts_sampling_and_overrides():
    assert get_kimi25_config(thinking=False).temperature == 0.6
    assert get_kimi25_config(thinking=False, temperature=0.3).temperature == 0.3
    assert get_kimi25_config(task="legal_intake").system_prompt == GENERIC_SYSTEM_PROMPT
    assert get_kimi25_config(task="sales,technical_support").system_prompt is None
    assert get_kimi25_config(model_name="tiny-kimi-k2.5").max_new_tokens == TrainingConfig().max_new_tokens
    assert get_kimi25_config(seed=7, num_outer_iterations=2).seed == 7
    with pytest.raises(ValidationError, match="did you mean 'num_generations'"):
        get_kimi25_config(num_generation=4)
    with pytest.raises(ValidationError, match="group needs at least 2"):
        get_kimi25_config(num_generations=1)


def test_removed_router_aux_loss_coef_is_explained(tmp_path):
    # Kimi-K2.5 balances experts without an auxiliary loss: the field was never read and is gone
    path = tmp_path / "config.yaml"
    path.write_text("router_aux_loss_coef: 0.01\n")
    with pytest.raises(ValidationError, match="no longer a TrainingConfig field.*aux-loss-free.*noaux_tc"):
        TrainingConfig.from_file(path)
    # an earlier run's config.yaml holds the "off" value: accepted with the same explanation, so it can resume
    path.write_text("router_aux_loss_coef: 0.0\nseed: 4\n")
    with pytest.warns(UserWarning, match="router_aux_loss_coef.*noaux_tc.*ignored"):
        config = TrainingConfig.from_file(path)
    assert config.seed == 4 and "router_aux_loss_coef" not in config.model_dump()


def test_a_small_local_model_keeps_the_cpu_generation_length(tiny_model_dir, tmp_path):
    """A fine-tuned tiny model (a local directory) is not given a real checkpoint's 4096 thinking tokens."""
    import json

    real = get_kimi25_config(model_name="moonshotai/Kimi-K2.5")
    tiny = get_kimi25_config(model_name=str(tiny_model_dir))
    assert tiny.max_new_tokens == get_kimi25_config(model_name="tiny-kimi-k2.5").max_new_tokens < real.max_new_tokens
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({"text_config": {"hidden_size": 7168}}))
    assert get_kimi25_config(model_name=str(wide)).max_new_tokens == real.max_new_tokens
