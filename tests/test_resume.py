"""Stopping and resuming through the real run.py: killed, interrupted, resumed, same numbers."""

import signal
import socket
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_TRAINING, read_json, run_py, start_and_wait_for_checkpoint, topic_args

# 12 epochs of 20 steps, a checkpoint and an evaluation every 10 steps: long enough to stop mid-epoch. The
# hardware is the default's (bf16 autocast where the CPU has it natively, fused AdamW): what users resume.
RESUMABLE = [
    *TINY_TRAINING,
    "task.examples=[]",
    "trainer.num_train_epochs=12",
    "trainer.save_total_limit=2",
    "trainer.save_strategy=steps",
    "trainer.eval_strategy=steps",
    "trainer.save_steps=10",
    "trainer.eval_steps=10",
]
FINAL = {
    "validation": ("loss", "accuracy", "f1_macro"),
    "test": ("loss", "accuracy", "f1_macro"),
    "train": ("loss", "steps", "tokens"),
}


def resumable_args(topic_files, tiny_models, run_dir: Path):
    return [*topic_args(topic_files, tiny_models["bert"], run_dir), *RESUMABLE]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, topic_files, tiny_models) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_py(*resumable_args(topic_files, tiny_models, run_dir), cwd=run_dir.parent)
    assert result.returncode == 0, result.output[-4000:]
    return run_dir


@pytest.mark.trains
def test_save_total_limit_bounds_the_checkpoints_and_keeps_the_best(uninterrupted):
    """24 checkpoints were saved, every 10 steps; 2 are kept: the best and the last."""
    kept = sorted((uninterrupted / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    state = read_json(kept[-1] / "trainer_state.json")
    best = Path(state["best_model_checkpoint"]).name
    assert best == f"checkpoint-{state['best_global_step']}" != "checkpoint-240"  # an earlier evaluation was the best
    assert [p.name for p in kept] == [best, "checkpoint-240"]


def assert_same_final_metrics(resumed: Path, uninterrupted: Path):
    got, expected = read_json(resumed / "metrics.json"), read_json(uninterrupted / "metrics.json")
    for split, keys in FINAL.items():
        for key in keys:
            assert got[split][key] == pytest.approx(expected[split][key], abs=1e-6), (split, key)


def training_curve(run_dir: Path):
    """train/loss as TensorBoard shows it: the whole log folder read in order, purges applied."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "logs"))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars("train/loss")]


@pytest.mark.trains
def test_a_run_killed_mid_epoch_resumes_to_the_same_metrics_and_curve(
    tmp_path, topic_files, tiny_models, uninterrupted
):
    run_dir = tmp_path / "run"
    args = resumable_args(topic_files, tiny_models, run_dir)
    process = start_and_wait_for_checkpoint(args, tmp_path, run_dir, step=50)
    process.send_signal(signal.SIGSTOP)  # paused, still alive: it holds its folder's lock
    try:
        twice = run_py(f"resume={run_dir}", cwd=tmp_path)
        assert twice.returncode == 1 and twice.output.strip() == (
            f"resume={run_dir}: the run in {run_dir} is still running "
            f"(pid {process.pid} on {socket.gethostname()} holds its .lock); "
            "a run is resumed once its process has ended. "
            "Wait for it, or stop it (Ctrl-C or kill: it saves a checkpoint first)."
        )
        joined = run_py(*args, cwd=tmp_path)  # the same command again, as a new run: refused too
        assert joined.returncode == 1 and f"{run_dir} holds a running run (pid {process.pid} on " in joined.output
    finally:
        process.kill()  # SIGKILL (a stopped process dies too): no chance to clean up, mid-epoch (an epoch is 20 steps)
        process.communicate()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model").exists()

    result = run_py(f"resume={run_dir}", cwd=tmp_path)  # the dead run's lock died with it
    assert result.returncode == 0, result.output[-4000:]
    assert "Resuming from " in result.output and "checkpoint-" in result.output
    assert_same_final_metrics(run_dir, uninterrupted)
    curve, expected = training_curve(run_dir), training_curve(uninterrupted)
    assert [step for step, _ in curve] == [step for step, _ in expected] == list(range(2, 241, 2))  # no step twice
    assert [value for _, value in curve] == pytest.approx([value for _, value in expected], abs=1e-6)
    assert (run_dir / "model" / "model.safetensors").is_file()
    environment = read_json(run_dir / "environment.json")  # the session that finished the run
    assert environment["resumed_from"].startswith("checkpoint-")
    assert environment["data"] == read_json(uninterrupted / "environment.json")["data"]


@pytest.mark.trains
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_stops_and_resume_true_finishes_the_run(
    signum, tmp_path, topic_files, tiny_models, uninterrupted
):
    run_dir = tmp_path / "run"
    args = resumable_args(topic_files, tiny_models, run_dir)
    process = start_and_wait_for_checkpoint(args, tmp_path, run_dir, step=50)
    process.send_signal(signum)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 128 + signum, output[-4000:]
    name = signal.Signals(signum).name
    stopped = [line for line in output.splitlines() if f"Stopped by {name} at step" in line]
    assert stopped and f"python run.py resume={run_dir}" in stopped[0]
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert 50 <= step < 240 and (run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model").exists()
    if signum == signal.SIGTERM:  # what a stopped run refuses does not depend on the signal that stopped it
        assert_refuses_a_new_run_and_changed_settings(args, run_dir, tmp_path)
    else:  # a folder saved before the peft and callbacks groups existed: they take their defaults
        saved = run_dir / ".hydra" / "config.yaml"
        config = yaml.safe_load(saved.read_text())
        saved.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in ("peft", "callbacks")}))
    result = run_py(*args, "resume=true", cwd=tmp_path)  # the same command line, plus resume=true
    assert result.returncode == 0, result.output[-4000:]
    assert f"Resuming from {run_dir / 'checkpoints' / f'checkpoint-{step}'}" in result.output
    assert_same_final_metrics(run_dir, uninterrupted)


def assert_refuses_a_new_run_and_changed_settings(args, run_dir: Path, tmp_path: Path) -> None:
    again = run_py(
        *args, cwd=tmp_path
    )  # the same command without resume=true: a new run, refused in a stopped run's folder
    assert again.returncode == 1 and again.output.strip() == (
        f"{run_dir} holds a run that did not finish: continue it with resume={run_dir}, "
        "or choose another folder with hydra.run.dir=<folder>."
    )
    changed = run_py(*args, "resume=true", "trainer.learning_rate=1e-3", cwd=tmp_path)
    assert changed.returncode == 1 and "changes trainer.learning_rate: 0.002 -> 0.001" in changed.output
    extra = run_py(f"resume={run_dir}", "seed=7", cwd=tmp_path)
    assert extra.returncode == 1 and "drop seed=7" in extra.output
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.trains
def test_resume_refuses_what_it_cannot_continue(tmp_path, topic_files, tiny_models, uninterrupted):
    fresh = run_py(*resumable_args(topic_files, tiny_models, tmp_path / "fresh"), "resume=true", cwd=tmp_path)
    assert (
        fresh.returncode == 1 and "Nothing to resume in" in fresh.output and "no run was started there" in fresh.output
    )
    assert not (tmp_path / "fresh").exists()
    started = tmp_path / "started"  # a run that failed before its first checkpoint
    (started / ".hydra").mkdir(parents=True)
    (started / ".hydra" / "config.yaml").write_text("seed: 1\n")
    no_checkpoint = run_py(f"resume={started}", cwd=tmp_path)
    assert (
        no_checkpoint.returncode == 1
        and f"Nothing to resume in {started}: it has no complete checkpoint" in no_checkpoint.output
    )

    missing = run_py(f"resume={tmp_path / 'no-such-run'}", cwd=tmp_path)
    assert missing.returncode == 1 and "no such run folder" in missing.output
    assert not (tmp_path / "no-such-run").exists()

    finished = run_py(f"resume={uninterrupted}", cwd=tmp_path)
    assert finished.returncode == 1 and "has finished (it has metrics.json); nothing to resume" in finished.output
    for result in (fresh, no_checkpoint, missing, finished):
        assert "Traceback" not in result.output
