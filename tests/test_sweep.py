"""Sweeps and scale-out through the real entry points: leaderboards, failures, Optuna, launchers, torchrun."""

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.helpers import REPO, read_json, read_scalars

QUICK = ["trainer=fast", "task.max_length=32", "task.validation_size=0.2", "task.examples=[]"]
needs = {
    name: pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"needs {name}: pip install -e '.[sweeps]'"
    )
    for name, module in [
        ("optuna", "hydra_plugins.hydra_optuna_sweeper"),
        ("submitit", "hydra_plugins.hydra_submitit_launcher"),
    ]
}


def data_args(topic_files, tiny_models) -> List[str]:
    return [f"model.name_or_path={tiny_models['bert']}", f"task.data_files.train={topic_files['train']}", *QUICK]


def run_command(command: List[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    result.output = result.stdout + result.stderr
    assert result.returncode == 0, result.output[-4000:]
    return result


def sweep_folder(cwd: Path) -> Path:
    (folder,) = (cwd / "outputs" / "multirun").iterdir()  # every job of a sweep under one folder
    return folder


def leaderboard(sweep_dir: Path) -> List[Dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def script_sweep(tmp_path_factory, topic_files, tiny_models):
    """multirun_sweep.sh over two model presets x two max_lengths; max_length=1000 is too long for the model."""
    cwd = tmp_path_factory.mktemp("sweep")
    command = [
        str(REPO / "multirun_sweep.sh"),
        "-m",
        "bert,distilbert",
        "-s",
        "1",
        *data_args(topic_files, tiny_models),
        "task.max_length=32,1000",
    ]
    env_python = {"PYTHON": sys.executable}
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **env_python}
    )
    result.output = result.stdout + result.stderr
    assert result.returncode == 0, result.output[-4000:]
    return result, sweep_folder(cwd)


@pytest.mark.slow
def test_sweep_writes_a_ranked_leaderboard_with_metrics_and_failures(script_sweep):
    result, sweep_dir = script_sweep
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [
        "0_bert_ag_news",
        "1_bert_ag_news",
        "2_distilbert_ag_news",
        "3_distilbert_ag_news",
    ]
    rows = leaderboard(sweep_dir)
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "failed"]
    completed, failed = rows[:2], rows[2:]
    assert {r["job"] for r in completed} == {"0", "2"} and {r["job"] for r in failed} == {"1", "3"}
    assert float(completed[0]["val_accuracy"]) >= float(completed[1]["val_accuracy"])
    for row in completed:
        assert (
            0 <= float(row["val_accuracy"]) <= 1 and float(row["val_f1_macro"]) >= 0 and float(row["train_time_s"]) > 0
        )
        assert (
            "task.max_length=32" in row["overrides"] and (sweep_dir / Path(row["run_folder"]).name / "model").is_dir()
        )
    for row in failed:
        assert (
            "task.max_length=1000 is more than" in row["error"]
            and not (sweep_dir / Path(row["run_folder"]).name / "model").exists()
        )
    markdown = (sweep_dir / "summary.md").read_text()
    assert "| 0 | model=bert task.max_length=32 |" in markdown and "failed" in markdown
    assert "Leaderboard (4 jobs, 2 failed)" in result.output


@pytest.mark.slow
def test_each_sweep_run_logs_hparams_for_tensorboard(script_sweep):
    _, sweep_dir = script_sweep
    scalars = read_scalars(sweep_dir / "0_bert_ag_news" / "logs")
    metrics = read_json(sweep_dir / "0_bert_ag_news" / "metrics.json")
    assert scalars["hparams/validation_accuracy"] == [pytest.approx(metrics["validation"]["accuracy"])]
    assert {"train/loss", "eval/accuracy"} <= set(scalars)


@pytest.mark.trains
def test_sweep_script_explains_itself():
    result = run_command([str(REPO / "multirun_sweep.sh"), "-h"], cwd=REPO)
    assert (
        "Usage: multirun_sweep.sh [-m MODELS] [-t TASKS] [-s SEEDS]" in result.stdout and "env MODELS" in result.stdout
    )


@pytest.mark.slow
@needs["optuna"]
def test_optuna_search_reports_the_best_parameters(tmp_path, topic_files, tiny_models):
    run_command(
        [
            sys.executable,
            str(REPO / "run.py"),
            "-m",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            *data_args(topic_files, tiny_models),
        ],
        cwd=tmp_path,
    )
    sweep_dir = sweep_folder(tmp_path)
    rows = leaderboard(sweep_dir)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert all("trainer.learning_rate=" in r["overrides"] for r in rows)
    assert (sweep_dir / "optimization_results.yaml").is_file()
    assert "Best parameters (Optuna): `trainer.learning_rate=" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow
@needs["submitit"]
def test_the_submitit_launcher_runs_a_sweep_in_processes_of_its_own(tmp_path, topic_files, tiny_models):
    """submitit_local: the launcher of a SLURM cluster (hydra/launcher=submitit_slurm), on this machine."""
    result = run_command(
        [
            sys.executable,
            str(REPO / "run.py"),
            "-m",
            "hydra/launcher=submitit_local",
            "seed=1,2",
            *data_args(topic_files, tiny_models),
        ],
        cwd=tmp_path,
    )
    rows = leaderboard(sweep_folder(tmp_path))
    assert sorted(r["overrides"].split()[0] for r in rows) == ["seed=1", "seed=2"]
    assert all(r["status"] == "completed" and float(r["val_accuracy"]) >= 0 for r in rows)
    assert "Leaderboard (2 jobs, 0 failed)" in result.output


TORCHRUN_TRAINING = [
    "trainer.num_train_epochs=4",
    "trainer.learning_rate=2e-3",
    "trainer.logging_steps=2",
    "hardware.precision=fp32",
]


@pytest.mark.slow
def test_torchrun_two_processes_share_one_run_folder_and_match_one_process(tmp_path, topic_files, tiny_models):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    args = [*data_args(topic_files, tiny_models), f"task.data_files.test={topic_files['test']}", *TORCHRUN_TRAINING]
    two = tmp_path / "two"
    two.mkdir()
    run_command(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            str(REPO / "run.py"),
            "hardware=ddp",
            "trainer.per_device_train_batch_size=4",
            *args,
        ],
        cwd=two,
    )
    (run_dir,) = (two / "outputs").iterdir()  # all ranks wrote into one run folder
    log = (run_dir / "run.log").read_text()
    assert log.count("Dataset summary") == 1 and "Processes: 2 (data parallel)" in log  # logged once, by rank 0
    assert (run_dir / "model" / "model.safetensors").is_file()

    one = tmp_path / "one"
    run_command(
        [
            sys.executable,
            str(REPO / "run.py"),
            "hardware=cpu",
            "trainer.per_device_train_batch_size=8",
            f"hydra.run.dir={one}",
            *args,
        ],
        cwd=tmp_path,
    )
    ddp, single = read_json(run_dir / "metrics.json"), read_json(one / "metrics.json")
    assert ddp["train"]["steps"] == single["train"]["steps"] == 80  # same global batch: 160 rows / 8, 4 epochs
    assert ddp["train"]["samples"] == single["train"]["samples"] == 160
    for metrics in (ddp, single):  # different sample order, same learning: both solve the easy task
        assert metrics["validation"]["accuracy"] >= 0.75 and metrics["test"]["accuracy"] >= 0.75, metrics
    assert abs(ddp["test"]["accuracy"] - single["test"]["accuracy"]) <= 0.15


@pytest.mark.trains
def test_ddp_preset_without_a_launcher_says_how_to_launch(tmp_path, topic_files, tiny_models):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            "hardware=ddp",
            f"hydra.run.dir={tmp_path}",
            *data_args(topic_files, tiny_models),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "torchrun --nproc_per_node=N run.py hardware=ddp" in result.stdout + result.stderr


@pytest.mark.trains
@pytest.mark.filterwarnings(
    "ignore::FutureWarning"
)  # isinstance() over gc.get_objects() touches deprecated torch names
def test_nothing_of_a_finished_job_stays_in_memory(tmp_path, topic_files, tiny_models):
    import gc

    from hydra import compose, initialize_config_dir
    from transformers import PreTrainedModel, Trainer

    from finetune.config.resolvers import register_resolvers
    from finetune.config.schemas import register_configs
    from finetune.launch import release_memory
    from finetune.training.train import run

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=data_args(topic_files, tiny_models))
    gc.collect()
    before = {
        id(o) for o in gc.get_objects() if isinstance(o, (Trainer, PreTrainedModel))
    }  # other tests' in this worker
    run(cfg, tmp_path)
    release_memory()
    assert not [o for o in gc.get_objects() if isinstance(o, (Trainer, PreTrainedModel)) and id(o) not in before]
