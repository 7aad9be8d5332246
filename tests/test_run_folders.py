"""Run and sweep folders through the real run.py: runs started together never share one,
a finished run is never written over."""

import csv
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List

import pytest
from omegaconf import OmegaConf

from tests.helpers import REPO, TINY_TRAINING, run_py

# Every run reads its start time from here (the run_time resolver), as torchrun's ranks do:
# the processes below all name their folder as if started in the same second.
SAME_SECOND = {"FINETUNE_START_TIME": "1764460800.0"}
STARTED = datetime.fromtimestamp(1764460800.0).strftime("%Y-%m-%d_%H-%M-%S")  # local time, as the resolver formats it
FAST = [*TINY_TRAINING, "trainer.num_train_epochs=1", "task.examples=[]", "hardware=cpu"]


def data_args(topic_files, tiny_models) -> List[str]:
    return [
        "task=ag_news",
        "model=distilbert",
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={topic_files['train']}",
        f"task.data_files.test={topic_files['test']}",
        "task.validation_size=0.2",
        *FAST,
    ]


def start_together(commands: List[List[str]], cwd: Path) -> List[subprocess.CompletedProcess]:
    """Start every command at once and wait for all of them."""
    env = {**os.environ, **SAME_SECOND}
    processes = [
        subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), *c],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in commands
    ]
    results = []
    for process in processes:
        output = process.communicate(timeout=900)[0]
        results.append(subprocess.CompletedProcess(process.args, process.returncode, output))
        results[-1].output = output
    return results


def snapshot(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory, topic_files, tiny_models):
    cwd = tmp_path_factory.mktemp("four_runs")
    results = start_together([[*data_args(topic_files, tiny_models), f"seed={seed}"] for seed in (1, 2, 3, 4)], cwd)
    for result in results:
        assert result.returncode == 0, result.output[-4000:]
    return cwd, results


@pytest.mark.trains
def test_four_runs_started_in_the_same_second_each_get_their_own_complete_folder(four_runs):
    cwd, results = four_runs
    folders = sorted((cwd / "outputs").iterdir())
    base = f"{STARTED}_distilbert_ag_news"
    assert {f.name for f in folders} == {base, f"{base}-2", f"{base}-3", f"{base}-4"}
    assert sum("was taken (another run started in the same second" in r.output for r in results) == 3
    seeds, pids = {}, set()
    for folder in folders:
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
        seeds[folder.name] = config.seed
        assert f"seed={config.seed}" in OmegaConf.load(folder / ".hydra" / "overrides.yaml")
        assert OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.runtime.output_dir == str(folder)
        assert (folder / "metrics.json").is_file() and (folder / "model" / "model.safetensors").is_file()
        assert [p.name for p in (folder / "checkpoints").iterdir()] == [
            "checkpoint-20"
        ]  # its own, none deleted by another's rotation
        log = (folder / "run.log").read_text()
        assert log.count("Dataset summary") == 1 and log.count("run folder") == 1  # one run's log, start to end
        assert f"run folder   {folder}\n" in log
        writers = {
            p.name.split(".")[-2] for p in (folder / "logs").glob("events.out.tfevents.*")
        }  # the writing process's id
        assert len(writers) == 1 and not writers & pids, writers  # TensorBoard events of one process only
        pids |= writers
    assert sorted(seeds.values()) == [1, 2, 3, 4]
    for result in results:  # each process says where it wrote, and that is the folder its seed is in
        seed = int(result.args[-1].split("=")[1])
        (named,) = [name for name, s in seeds.items() if s == seed]
        assert f"run folder   {cwd / 'outputs' / named}\n" in result.output


@pytest.mark.trains
def test_a_new_run_pointed_at_a_finished_run_is_refused_and_changes_nothing(four_runs, topic_files, tiny_models):
    cwd, _ = four_runs
    finished = sorted((cwd / "outputs").iterdir())[0]
    before = snapshot(finished)
    for how in (f"hydra.run.dir={finished}", f"resume={finished}"):
        args = [*data_args(topic_files, tiny_models), how] if how.startswith("hydra") else [how]
        result = run_py(*args, cwd=cwd)
        assert result.returncode == 1 and "Traceback" not in result.output, result.output[-3000:]
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert snapshot(finished) == before  # not a byte changed, no file added
    new_run = run_py(*data_args(topic_files, tiny_models), f"hydra.run.dir={finished}", cwd=cwd)
    assert new_run.output.strip() == (
        f"{finished} holds a finished run (it has metrics.json): a new run never writes into it; "
        "choose another folder with hydra.run.dir=<folder>."
    )


@pytest.mark.trains
def test_a_named_folder_may_exist_but_not_hold_a_run(tmp_path, topic_files, tiny_models):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_py(*data_args(topic_files, tiny_models), f"hydra.run.dir={empty}", "trainer.max_steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    assert (empty / "metrics.json").is_file()

    failed = tmp_path / "failed"  # a run that stopped on a bad row, before any work: its folder is free again
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine text,World\nmore text,Wrld\n")
    args = [*data_args(topic_files, tiny_models), f"hydra.run.dir={failed}", "trainer.max_steps=2"]
    assert run_py(*args, f"task.data_files.train={bad}", cwd=tmp_path).returncode == 1
    again = run_py(*args, cwd=tmp_path)
    assert again.returncode == 0 and (failed / "metrics.json").is_file(), again.output[-3000:]

    started = (
        tmp_path / "started"
    )  # a run that did work (environment.json, logs/) and stopped before its first checkpoint
    for name in (".hydra", "logs", "checkpoints"):
        (started / name).mkdir(parents=True)
    for name in ("run.log", "environment.json", ".lock"):
        (started / name).write_text("{}")
    before = snapshot(started)
    refused = run_py(*data_args(topic_files, tiny_models), f"hydra.run.dir={started}", cwd=tmp_path)
    assert refused.returncode == 1 and refused.output.strip() == (
        f"{started} holds a run that stopped before its first checkpoint "
        "(it has .hydra, run.log, checkpoints, logs, environment.json; "
        "its run.log says why): choose another folder with hydra.run.dir=<folder>, or delete that folder."
    )
    assert snapshot(started) == before


@pytest.mark.slow
def test_two_sweeps_started_in_the_same_second_each_get_their_own_folder(tmp_path, topic_files, tiny_models):
    common = ["-m", *data_args(topic_files, tiny_models), "trainer.max_steps=2"]
    results = start_together([[*common, "seed=1,2"], [*common, "seed=3,4"]], tmp_path)
    for result in results:
        assert result.returncode == 0, result.output[-4000:]
    sweeps = sorted((tmp_path / "outputs" / "multirun").iterdir())
    assert [s.name for s in sweeps] == [STARTED, f"{STARTED}-2"]
    assert sum("this sweep writes into" in r.output for r in results) == 1
    seen = set()
    for sweep in sweeps:
        with (sweep / "summary.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        seeds = sorted(r["overrides"].split()[-1] for r in rows)
        assert seeds in (["seed=1", "seed=2"], ["seed=3", "seed=4"]) and all(
            r["status"] == "completed" for r in rows
        ), rows
        seen.update(seeds)
        for job in ("0_distilbert_ag_news", "1_distilbert_ag_news"):
            folder = sweep / job
            assert (folder / "metrics.json").is_file() and (folder / "model").is_dir()
            assert OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.sweep.dir == str(sweep.relative_to(tmp_path))
            assert (folder / "run.log").read_text().count("Dataset summary") == 1
    assert seen == {"seed=1", "seed=2", "seed=3", "seed=4"}

    again = run_py(
        *common, "seed=5", f"hydra.sweep.dir={sweeps[0]}", cwd=tmp_path
    )  # a named sweep folder that holds a sweep
    assert again.returncode == 1 and again.output.strip() == (
        f"{sweeps[0]} holds a finished sweep (it has summary.csv): a new sweep never writes into it; "
        "choose another folder with hydra.sweep.dir=<folder>."
    )
    shared = run_py(*common, "seed=5,6", "hydra.sweep.subdir=same", cwd=tmp_path)
    assert shared.returncode == 1 and "hydra.sweep.subdir=same would give two jobs the same folder" in shared.output
    assert len(list((tmp_path / "outputs" / "multirun").iterdir())) == 2


@pytest.mark.trains
def test_a_lock_dies_with_its_process(tmp_path):
    """The lock of a folder is free again the moment its holder ends, however it ends."""
    from finetune.runs import folders

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
            "from finetune.runs import folders; "
            f"folders.lock(Path({str(tmp_path)!r})); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    assert folders.holder(tmp_path) is not None and folders.lock(tmp_path) is not None
    holder.kill()
    holder.wait()
    deadline = time.monotonic() + 10
    while folders.holder(tmp_path) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert folders.lock(tmp_path) is None and folders.holds(tmp_path)
    folders.release(tmp_path)
