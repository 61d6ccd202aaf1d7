"""Continual learning: reservoir replay buffer, mixing ratio, off-policy replay, LwF teacher and KL, resume."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import LengthReward, tiny_config

from stateset_agents.training.config import TrainingConfig
from stateset_agents.training.continual import (
    REPLAY_BUFFER_FILE, ReplayBuffer, ReplayEpisode, ReplayTurn, TeacherAdapter, replay_count,
    rows_from_replay,
)
from stateset_agents.training.losses import policy_loss, sequence_kl
from stateset_agents.training.trainer import GSPOTrainer

TASKS = "customer_service,technical_support"


def episode(task: str, index: int = 0, advantage: float = 0.5) -> ReplayEpisode:
    turn = ReplayTurn([1, 2, 3, index], [4 + index % 5, 5], [-0.25, -1.5], temperature=0.7, policy_version=index)
    return ReplayEpisode(task, reward=float(index), advantage=advantage, turns=[turn])


# ----------------------------------------------------------------------------- buffer


def test_the_guide_snippet_validates():
    config = TrainingConfig(model_name="moonshotai/Kimi-K2.5", continual_strategy="replay_lwf",
                            replay_buffer_size=2000, replay_ratio=0.5, kl_penalty_beta=0.1)
    assert (config.continual_strategy, config.replay_buffer_size, config.replay_ratio,
            config.kl_penalty_beta) == ("replay_lwf", 2000, 0.5, 0.1)
    with pytest.raises(ValueError, match="'none', 'replay', 'lwf' or 'replay_lwf'"):
        TrainingConfig(continual_strategy="ewc")


def test_reservoir_keeps_a_uniform_sample_across_tasks():
    # 3 tasks offered in order (200, 200, 400 episodes) into a buffer of 80; algorithm R keeps each of
    # the 800 episodes with probability 80/800 = 0.1, so expected counts are 20, 20, 40 however early
    # a task came. Over 300 seeded buffers: task shares within 5% of expectation, and inclusion
    # frequencies by arrival position are flat (early and late quarters within 0.02 of 0.1).
    sizes, capacity, trials = {"a": 200, "b": 200, "c": 400}, 80, 300
    stream = [episode(task, 0) for task, count in sizes.items() for _ in range(count)]
    for position, item in enumerate(stream):
        item.reward = float(position)
    totals = {task: 0 for task in sizes}
    inclusion = torch.zeros(len(stream))
    for seed in range(trials):
        buffer = ReplayBuffer(capacity, seed=seed)
        buffer.extend(stream)
        assert len(buffer) == capacity and buffer.seen == 800
        for task, count in buffer.task_counts().items():
            totals[task] += count
        for item in buffer.items:
            inclusion[int(item.reward)] += 1
    for task, count in sizes.items():
        expected = trials * capacity * count / 800
        assert abs(totals[task] - expected) / expected < 0.05, (task, totals[task], expected)
    rate = inclusion / trials
    for quarter in rate.chunk(4):
        assert abs(float(quarter.mean()) - 0.1) < 0.01


def test_buffer_fills_first_then_samples_without_replacement_and_excludes_the_current_task():
    buffer = ReplayBuffer(5, seed=0)
    for i in range(3):
        buffer.add(episode("a", i))
    assert [int(e.reward) for e in buffer.items] == [0, 1, 2]
    buffer.add(episode("b", 3))
    drawn = buffer.sample(10, exclude_task="b")
    assert sorted(int(e.reward) for e in drawn) == [0, 1, 2]
    assert buffer.sample(2, exclude_task="a")[0].task == "b" and len(buffer.sample(2, exclude_task="a")) == 1


@pytest.mark.parametrize("fresh,ratio", [(4, 0.5), (32, 0.5), (32, 0.25), (8, 0.25), (16, 0.1), (10, 0.9)])
def test_replay_count_gives_the_ratio(fresh, ratio):
    replayed = replay_count(fresh, ratio)
    fraction = replayed / (fresh + replayed)
    # rounding to whole episodes: within half an episode of the exact count
    assert abs(replayed - fresh * ratio / (1 - ratio)) <= 0.5
    assert abs(fraction - ratio) <= 0.5 / (fresh + replayed) + 1e-12
    assert replay_count(fresh, 0.0) == 0


def test_buffer_round_trips_through_a_file_with_its_rng(tmp_path):
    buffer = ReplayBuffer(4, seed=7)
    for i in range(9):
        buffer.add(episode("a" if i < 5 else "b", i, advantage=i / 3))
    buffer.items[0].turns[0].pixel_values = torch.randn(2, 3, 14, 14)
    buffer.items[0].turns[0].image_grid_thw = torch.tensor([[1, 1, 2]])
    buffer.save(tmp_path / "buffer.pt")
    restored = ReplayBuffer(4, seed=0)
    restored.load(tmp_path / "buffer.pt")
    assert restored.seen == 9 and [e.task for e in restored.items] == [e.task for e in buffer.items]
    for a, b in zip(buffer.items, restored.items):
        assert (a.reward, a.advantage) == (b.reward, b.advantage)
        for name in ("prompt_ids", "completion_ids", "logprobs"):
            assert torch.equal(getattr(a.turns[0], name), getattr(b.turns[0], name))
        assert (b.turns[0].temperature, b.turns[0].policy_version) == (0.7, a.turns[0].policy_version)
    assert torch.equal(buffer.items[0].turns[0].pixel_values, restored.items[0].turns[0].pixel_values)
    # the RNG continues identically
    extra = [episode("c", 100 + i) for i in range(20)]
    buffer.extend(extra)
    restored.extend(extra)
    assert [e.reward for e in buffer.items] == [e.reward for e in restored.items]
    with pytest.raises(ValueError, match="replay_buffer_size"):
        ReplayBuffer(5).load(tmp_path / "buffer.pt")


# ----------------------------------------------------------------------------- off-policy replay


def test_replayed_rows_keep_behaviour_logprobs_and_advantage_and_clipping_bounds_stale_episodes():
    stored = episode("a", 1, advantage=1.0)
    (row,) = rows_from_replay([stored], first_episode=7)
    assert row.old_logprobs == [-0.25, -1.5] and row.advantage == 1.0 and row.episode == 7
    assert (row.temperature, row.policy_version) == (0.7, 1)  # scored as it was sampled, not at today's setting
    with pytest.raises(ValueError, match="no sampling temperature"):
        rows_from_replay([ReplayEpisode("a", 0.0, 1.0, [ReplayTurn([1], [2], [-0.5])])], first_episode=0)
    old = torch.tensor([row.old_logprobs])
    mask = torch.ones(1, 2)

    def grad_at(shift: float, advantage: float) -> float:
        logprobs = (old + shift).requires_grad_(True)  # the current policy moved by `shift` nats/token
        loss, stats = policy_loss(logprobs, old, torch.tensor([advantage]), mask,
                                  clip_epsilon_low=3e-4, clip_epsilon_high=4e-4)
        loss.backward()
        return float(logprobs.grad.abs().sum())

    # policy moved towards what the advantage wants (s = e^0.5 > 1 + eps with A > 0): clipped, no gradient
    assert grad_at(+0.5, 1.0) == 0.0 and grad_at(-0.5, -1.0) == 0.0
    # moved against it (a good old episode became unlikely): unclipped, pulled back with weight s = e^-0.5
    # d(-s*A)/d logp_t = -s*A/|y| per token: 2 tokens * e^-0.5 / 2 = e^-0.5
    assert grad_at(-0.5, 1.0) == pytest.approx(torch.exp(torch.tensor(-0.5)).item(), rel=1e-5)
    assert grad_at(+0.5, -1.0) > 0.0


# ----------------------------------------------------------------------------- in the trainer


def _adapter(trainer, name: str) -> dict[str, torch.Tensor]:
    marker = f".{name}."
    return {k.replace(marker, "."): v.detach().clone() for k, v in trainer.policy.named_parameters() if marker in k}


class Recording(GSPOTrainer):
    """Records what each update saw: fresh/replayed episodes, per-step stats, the teacher's weights."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[dict] = []

    def _update(self, trajectories, advantages, replayed=()):
        call = {"fresh": len(trajectories), "replayed": list(replayed), "teacher_before": _adapter(self, "teacher")}
        call["steps"], mismatch = super()._update(trajectories, advantages, replayed)
        call["teacher_after"] = _adapter(self, "teacher")
        call["default_after"] = _adapter(self, "default")
        self.calls.append(call)
        return call["steps"], mismatch


@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory):
    """replay_lwf on customer_service then technical_support, one iteration each (4 episodes each)."""
    config = tiny_config(tmp_path_factory.mktemp("continual"), task=TASKS, num_outer_iterations=2,
                         continual_strategy="replay_lwf", replay_buffer_size=16, replay_ratio=0.5,
                         kl_penalty_beta=0.5, save_every=0)
    trainer = Recording(config, reward_fn=LengthReward(), log=lambda _: None)
    metrics = [trainer.iteration(0)]
    default_at_boundary = _adapter(trainer, "default")
    metrics.append(trainer.iteration(1))
    return trainer, metrics, default_at_boundary


def test_replay_is_mixed_in_at_the_ratio_only_after_the_first_task(two_task_run):
    trainer, metrics, _ = two_task_run
    first, second = trainer.calls
    assert first["replayed"] == [] and metrics[0]["continual/replay_fraction"] == 0.0
    assert second["fresh"] == 4 and len(second["replayed"]) == 4  # 4 / (4 + 4) = replay_ratio 0.5
    assert metrics[1]["continual/replay_fraction"] == pytest.approx(0.5)
    assert {e.task for e in second["replayed"]} == {"customer_service"}
    assert metrics[1]["continual/buffer_size"] == 8 and trainer.continual.buffer.task_counts() == {
        "customer_service": 4, "technical_support": 4}


def test_teacher_is_the_policy_at_the_boundary_and_never_changes(two_task_run):
    trainer, metrics, default_at_boundary = two_task_run
    first, second = trainer.calls
    assert first["teacher_before"] == {} and "continual/kl_teacher" not in metrics[0]
    teacher = second["teacher_before"]
    assert teacher.keys() == default_at_boundary.keys() and len(teacher) > 0
    assert all(torch.equal(teacher[k], default_at_boundary[k]) for k in teacher)
    assert all(torch.equal(teacher[k], second["teacher_after"][k]) for k in teacher)
    assert any(not torch.equal(teacher[k], second["default_after"][k]) for k in teacher)  # the student moved
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    named = dict(trainer.policy.named_parameters())
    assert optimized == {id(p) for n, p in named.items() if ".default." in n}
    assert not any(p.requires_grad for n, p in named.items() if ".teacher." in n)
    assert all(p.requires_grad for n, p in named.items() if ".default." in n)
    assert trainer.policy.active_adapter == "default"
    # one model: the teacher is an adapter, not a copy
    assert sum(1 for m in trainer.policy.modules() if type(m).__name__.startswith("Kimi_K25ForConditional")) == 1


def test_lwf_kl_is_zero_on_the_first_step_after_the_boundary_and_positive_after(two_task_run):
    trainer, metrics, _ = two_task_run
    steps = trainer.calls[1]["steps"]
    kls = [s["continual/kl_teacher"] for s in steps]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # student == teacher before the first step of task B
    assert max(kls[1:]) > 1e-6
    assert metrics[1]["continual/kl_teacher"] == pytest.approx(sum(kls) / len(kls), rel=1e-5)


def test_teacher_context_switches_back_and_keeps_gradients(tmp_path):
    trainer = GSPOTrainer(tiny_config(tmp_path, continual_strategy="lwf"), log=lambda _: None)
    teacher = TeacherAdapter(trainer.policy)
    teacher.snapshot()
    with torch.no_grad():
        for name, parameter in trainer.policy.named_parameters():
            if ".default." in name and "lora_B" in name:
                parameter.add_(0.05)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        student = trainer.policy(input_ids=ids).logits
        with teacher.active():
            assert trainer.policy.active_adapter == "teacher"
            inside = trainer.policy(input_ids=ids).logits
        with trainer.policy.disable_adapter():
            base = trainer.policy(input_ids=ids).logits
    assert trainer.policy.active_adapter == "default"
    assert not torch.allclose(student, inside)
    assert torch.allclose(inside, base, atol=1e-6)  # snapshot of a fresh adapter (B = 0) is the base model
    assert all(p.requires_grad for n, p in trainer.policy.named_parameters() if ".default." in n)
    assert not any(p.requires_grad for p in teacher.parameters())


# ----------------------------------------------------------------------------- checkpoints


def test_resuming_in_the_middle_of_the_second_task_restores_buffer_and_teacher(tmp_path):
    import shutil

    overrides = dict(task=TASKS, num_outer_iterations=4, continual_strategy="replay_lwf", replay_buffer_size=6,
                     replay_ratio=0.5, kl_penalty_beta=0.2)
    uninterrupted = GSPOTrainer(tiny_config(tmp_path, **overrides), reward_fn=LengthReward(), log=lambda _: None)
    uninterrupted.train()  # iterations 0, 1: customer_service; 2, 3: technical_support
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "iter_000003" / "adapter" / "teacher" / "adapter_model.safetensors").is_file()
    assert (checkpoints / "iter_000003" / REPLAY_BUFFER_FILE).is_file()
    shutil.rmtree(checkpoints / "iter_000004")  # as if killed during the last iteration (mid task B)

    class Resumed(GSPOTrainer):
        def iteration(self, iteration):
            if not hasattr(self, "restored"):  # what _resume restored, before any training
                self.restored = (iteration, self.continual.lwf_active, len(self.continual.buffer),
                                 _adapter(self, "teacher"))
            return super().iteration(iteration)

    resumed = Resumed(tiny_config(tmp_path, resume=True, **overrides), reward_fn=LengthReward(), log=lambda _: None)
    resumed.train()
    assert resumed.restored[:3] == (3, True, 6)
    teacher = _adapter(uninterrupted, "teacher")  # teacher loaded from the checkpoint, not re-made
    assert all(torch.equal(resumed.restored[3][k], teacher[k]) for k in teacher) and teacher
    for name in ("default", "teacher"):
        expected, actual = _adapter(uninterrupted, name), _adapter(resumed, name)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name
    a, b = uninterrupted.continual.buffer, resumed.continual.buffer
    assert a.seen == b.seen == 16
    assert [(e.task, e.reward, e.turns[0].completion_ids.tolist()) for e in a.items] == \
           [(e.task, e.reward, e.turns[0].completion_ids.tolist()) for e in b.items]
    # the boundary is in the metrics: an event and the task field
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    records = [x for x in lines if "event" not in x]
    assert any("task boundary: customer_service -> technical_support" in str(x["event"]) for x in lines if "event" in x)
    assert [x["task"] for x in records][:4] == ["customer_service"] * 2 + ["technical_support"] * 2


def test_strategy_none_adds_nothing(tmp_path):
    trainer = GSPOTrainer(tiny_config(tmp_path, task=TASKS, num_outer_iterations=2), reward_fn=LengthReward(),
                          log=lambda _: None)
    assert trainer.continual.buffer is None and trainer.continual.teacher is None
    assert trainer.continual.extra_files() == {}
    metrics = trainer.iteration(1)
    assert not any(key.startswith("continual/") for key in metrics)
    assert "teacher" not in trainer.policy.peft_config


class RecordingMicroBatches(GSPOTrainer):
    """Records, per micro-batch of the update: each row's replayed flag and whether it has teacher log-probs, and
    the logged teacher KL."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.micro_batches: list[dict] = []

    def _loss(self, logprobs, mb, mask, scored):
        loss, stats = super()._loss(logprobs, mb, mask, scored)
        self.micro_batches.append({"replayed": [row.replayed for row in mb.rows],
                                   "taught": [row.teacher_logprobs is not None for row in mb.rows],
                                   "kl_teacher": stats.get("continual/kl_teacher")})
        return loss, stats


def test_lwf_rows_replayed_teaches_the_replayed_episodes_only(tmp_path):
    config = tiny_config(tmp_path, task=TASKS, num_outer_iterations=2, continual_strategy="replay_lwf",
                         replay_buffer_size=16, replay_ratio=0.5, kl_penalty_beta=0.5, save_every=0,
                         lwf_rows="replayed")
    trainer = RecordingMicroBatches(config, reward_fn=LengthReward(), log=lambda _: None)
    trainer.iteration(0)
    assert all(not any(mb["taught"]) for mb in trainer.micro_batches)  # no teacher before the boundary
    trainer.micro_batches.clear()
    metrics = trainer.iteration(1)
    rows = [(replayed, taught) for mb in trainer.micro_batches for replayed, taught in zip(mb["replayed"], mb["taught"])]
    assert {replayed for replayed, _ in rows} == {True, False}
    assert all(replayed == taught for replayed, taught in rows)  # the teacher scores exactly the replayed rows
    fresh_only = [mb for mb in trainer.micro_batches if not any(mb["replayed"])]
    assert fresh_only and all(mb["kl_teacher"] == 0.0 for mb in fresh_only)  # logged as the 0 it adds to the loss
    values = [mb["kl_teacher"] for mb in trainer.micro_batches]
    assert None not in values and max(values) > 0  # the student moves away from the teacher after the first step
    # one episode per micro-batch, two per step: the logged KL is the plain mean over the step's episodes
    assert metrics["continual/kl_teacher"] == pytest.approx(sum(values) / len(values), rel=1e-5)


class RecordingTeacherKL(GSPOTrainer):
    """Records, per micro-batch, the logged teacher KL and both directions' k3 recomputed from its tensors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kls: list[tuple[float, float, float]] = []

    def _loss(self, logprobs, mb, mask, scored):
        loss, stats = super()._loss(logprobs, mb, mask, scored)
        if mb.teacher_logprobs is not None:
            student, teacher = logprobs.detach(), mb.teacher_logprobs
            self.kls.append((stats["continual/kl_teacher"], sequence_kl(student, teacher, mask, mb.sequence_index).item(),
                             sequence_kl(teacher, student, mask, mb.sequence_index).item()))
        return loss, stats


def test_lwf_divergence_forward_puts_the_teacher_first_in_the_kl(tmp_path):
    """lwf_divergence='forward': the loss's teacher term is KL(teacher || policy) on the sampled tokens (k3 with the
    roles swapped), which differs from the reverse one as soon as the policy has moved."""
    config = tiny_config(tmp_path, task=TASKS, num_outer_iterations=2, continual_strategy="replay_lwf",
                         replay_buffer_size=16, replay_ratio=0.5, kl_penalty_beta=0.5, save_every=0,
                         lwf_divergence="forward")
    trainer = RecordingTeacherKL(config, reward_fn=LengthReward(), log=lambda _: None)
    trainer.iteration(0)
    trainer.iteration(1)
    moved = [(logged, reverse, forward) for logged, reverse, forward in trainer.kls if forward > 1e-6]
    assert moved, "the policy never moved away from the teacher"
    for logged, reverse, forward in moved:
        assert logged == pytest.approx(forward, rel=1e-4) and logged != pytest.approx(reverse, rel=1e-4)
    with pytest.raises(ValueError):
        TrainingConfig(lwf_divergence="backward")


def test_lwf_rows_replayed_needs_replay():
    with pytest.raises(ValueError, match="lwf_rows='replayed'"):
        TrainingConfig(continual_strategy="lwf", lwf_rows="replayed")
    assert TrainingConfig(task=TASKS, continual_strategy="replay_lwf", lwf_rows="replayed").lwf_rows == "replayed"


def test_task_iterations_set_each_tasks_share_of_the_run(tmp_path):
    """task_iterations: [1, 2] trains the first task 1 iteration and the second 2 (equal shares: 2 then 1)."""
    uneven = GSPOTrainer(tiny_config(tmp_path / "uneven", task=TASKS, num_outer_iterations=3, task_iterations=[1, 2]),
                         reward_fn=LengthReward(), log=lambda _: None)
    assert [uneven.task_index(i) for i in range(3)] == [0, 1, 1]
    even = GSPOTrainer(tiny_config(tmp_path / "even", task=TASKS, num_outer_iterations=3), reward_fn=LengthReward(),
                       log=lambda _: None)
    assert [even.task_index(i) for i in range(3)] == [0, 0, 1]
    with pytest.raises(ValueError, match="sum to 4, num_outer_iterations is 3"):
        TrainingConfig(task=TASKS, num_outer_iterations=3, task_iterations=[2, 2])
    for counts in ([3], [0, 3], [1, 1, 1]):
        with pytest.raises(ValueError, match="one count >= 1 per task"):
            TrainingConfig(task=TASKS, num_outer_iterations=3, task_iterations=counts)


def test_resume_may_lengthen_the_last_task_only(tmp_path):
    from stateset_agents.training.run_dir import RunDirectoryError, check_run_directory

    saved = TrainingConfig(task=TASKS, num_outer_iterations=4, task_iterations=[2, 2], output_dir=str(tmp_path))
    saved.save(tmp_path)
    (tmp_path / "checkpoints" / "iter_000003").mkdir(parents=True)
    (tmp_path / "checkpoints" / "iter_000003" / "COMPLETE").write_text("3")
    longer_b = saved.replace(num_outer_iterations=6, task_iterations=[2, 4], resume=True)
    assert any(line.startswith("task_iterations") for line in check_run_directory(longer_b))
    for moved in (dict(num_outer_iterations=6, task_iterations=[4, 2]),   # the boundary moves
                  dict(num_outer_iterations=6, task_iterations=None)):    # equal shares: 3 + 3
        with pytest.raises(RunDirectoryError, match="moves a task boundary"):
            check_run_directory(saved.replace(resume=True, **moved))
