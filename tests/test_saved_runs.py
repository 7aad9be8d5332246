"""Run folders written by older code still resume, predict, export, serve and compare, through the command lines.

tests/fixtures/saved_runs/ holds two generations, made by tests/fixtures/make_saved_runs.py: ``finished`` and
``stopped`` by commit e065c19 (the flat package, before the subpackages), ``c522505/finished`` and
``c522505/stopped`` by commit c522505 (before the refactor that moved the Python API). Their saved configs
name the classes where they lived then (``finetune.data.TextClassificationData``,
``finetune.training.callbacks.StopOnSignal``, ...); the code maps those names to where the classes live now.
Only the commands are used here (``run.py``, ``python -m finetune.predict|export|serve|compare``): they are
what a user types, and they stay while the Python API moves.
"""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.make_saved_runs import command
from tests.helpers import REPO, cli, read_json, run_py

SAVED_RUNS = REPO / "tests" / "fixtures" / "saved_runs"
GENERATIONS = {"e065c19": "", "c522505": "c522505/"}  # commit -> its folder in saved_runs/
FINISHED = [pytest.param(f"{folder}finished", id=commit) for commit, folder in GENERATIONS.items()]
STOPPED = [pytest.param(f"{folder}stopped", id=commit) for commit, folder in GENERATIONS.items()]
TEXT = "coach league goal the season match"
pytestmark = pytest.mark.trains


def copy_of_saved_runs(tmp_path_factory, name: str) -> Path:
    """A copy of saved_runs/ (the runs' configs name data/ and tiny_bert/ relative to it: commands run from it)."""
    return Path(shutil.copytree(SAVED_RUNS, tmp_path_factory.mktemp(name) / "saved_runs"))


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> Path:
    return copy_of_saved_runs(tmp_path_factory, "saved")


@pytest.fixture(scope="module", params=STOPPED)
def resumed(request, saved_runs):
    """A generation's stopped run resumed as the README says, once per module: the command it was started with
    (its own ``hydra.run.dir``), and ``resume=true``; what run.py printed and returned."""
    stopped = request.param
    return stopped, run_py(*command(stopped), "resume=true", cwd=saved_runs)


def labels_of(run_dir: Path):
    id2label = read_json(run_dir / "model" / "config.json")["id2label"]
    return [id2label[k] for k in sorted(id2label, key=int)]


def assert_finished_from_its_checkpoint(run_dir: Path, result: subprocess.CompletedProcess, stopped: str) -> None:
    assert result.returncode == 0, result.output[-4000:]
    assert "Resuming from" in result.output and "checkpoint-10" in result.output, result.output[-4000:]
    metrics = read_json(run_dir / "metrics.json")
    # 2 epochs of 10 batches, the first 10 before the stop
    assert metrics["train"]["steps"] == 20 and metrics["train"]["samples"] == 80, metrics["train"]
    assert read_json(run_dir / "environment.json")["resumed_from"] == "checkpoint-10"
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "predictions_test.parquet").is_file()
    # The original record of the run stays as it was written: the old names, read through the map.
    saved = (SAVED_RUNS / stopped / ".hydra" / "config.yaml").read_text(encoding="utf-8")
    assert (run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8") == saved


@pytest.mark.parametrize("run", STOPPED)
def test_the_saved_stopped_runs_were_started_with_the_command_the_tests_resume_them_with(run):
    """make_saved_runs.command() is what made them: resuming with it repeats the run's own command."""
    assert read_json(SAVED_RUNS / run / "environment.json")["command"] == " ".join(["python run.py", *command(run)])


def test_a_stopped_run_of_older_code_resumes_with_its_command_and_resume_true(resumed, saved_runs):
    stopped, result = resumed
    assert_finished_from_its_checkpoint(saved_runs / stopped, result, stopped)


def test_a_stopped_run_of_older_code_resumes_when_resume_names_its_folder(tmp_path_factory):
    root = copy_of_saved_runs(tmp_path_factory, "resume_folder")
    result = run_py("resume=stopped", cwd=root)  # e065c19's: the oldest names to map
    assert_finished_from_its_checkpoint(root / "stopped", result, "stopped")


@pytest.mark.parametrize("run", FINISHED)
def test_a_finished_run_of_older_code_predicts_as_it_scored(run, saved_runs, tmp_path):
    output = tmp_path / "predicted.csv"
    result = cli("predict", run, "--input", "data/test.csv", "--output", str(output), cwd=saved_runs)
    assert result.returncode == 0, result.output[-4000:]
    assert f"Wrote 20 rows to {output}" in result.stderr and json.loads(result.stdout)["rows"] == 20
    rescored = read_json(tmp_path / "predicted.metrics.json")
    assert rescored["accuracy"] == pytest.approx(read_json(saved_runs / run / "metrics.json")["test"]["accuracy"])

    result = cli("predict", run, TEXT, cwd=saved_runs)
    assert result.returncode == 0, result.output[-4000:]
    answer = json.loads(result.stdout)  # the labels, best first, with their scores
    assert sorted(a["label"] for a in answer) == sorted(labels_of(saved_runs / run))


@pytest.mark.parametrize("run", FINISHED)
def test_a_finished_run_of_older_code_exports_with_parity(run, saved_runs, tmp_path):
    # checked on the run's own validation split, rebuilt from its config
    result = cli("export", run, "--output", str(tmp_path / "export"), cwd=saved_runs)
    assert result.returncode == 0, result.output[-4000:]
    record = read_json(tmp_path / "export" / "export.json")
    assert record["parity"]["checked_on"].startswith("the validation split of the run (20 rows")
    assert record["parity"]["agreement"] == 1.0 and (tmp_path / "export" / "model.onnx").is_file()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, payload=None, timeout: float = 30):
    """(status, JSON answer) of a GET, or of a POST of ``payload`` as JSON."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.mark.parametrize("run", FINISHED)
def test_a_finished_run_of_older_code_serves_over_http(run, saved_runs):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command_line = [sys.executable, "-m", "finetune.serve", run, "--port", str(port), "--threads", "1"]
    server = subprocess.Popen(command_line, cwd=saved_runs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            assert time.monotonic() < deadline, "the server was not ready within 120 s"
            try:
                if request(url + "/health", timeout=5)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            time.sleep(0.2)
        status, answer = request(url + "/predict", {"text": TEXT})
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    output = server.stdout.read()
    assert status == 200, (status, answer, output[-4000:])
    assert answer[0]["label"] in labels_of(saved_runs / run), answer
    assert "Traceback" not in output, output[-4000:]


def test_runs_of_both_generations_compare_with_each_other(saved_runs):
    result = cli("compare", "finished", "c522505/finished", "--output", "comparison.json", cwd=saved_runs)
    assert result.returncode == 0, result.output[-4000:]
    comparison = read_json(saved_runs / "comparison.json")
    assert comparison["split"] == "test" and comparison["rows"] == 20 and comparison["metric"] == "accuracy"
    assert comparison["a"]["runs"] == ["finished"] and comparison["b"]["runs"] == ["c522505/finished"]
