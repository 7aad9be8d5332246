"""The package as a user installs it: ``pip install <checkout>`` into a fresh virtual environment outside the
checkout, then its console scripts from another folder: finetune-train trains a tiny run (its folder under that
folder's outputs/, as python run.py would), and predict, export, serve, compare and publish --dry-run work on it.

The dependencies are not downloaded again: the fresh environment sees those of this environment that the package
declares (its requirements and theirs, with the extras the test installs), and only those, through a .pth file
naming a folder of links to them. pip checks them against pyproject.toml's versions and installs the package alone;
a dependency pyproject.toml forgets is missing there, and fails here.
"""

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

import finetune
from tests.helpers import REPO, TINY_TRAINING, call, free_socket, program, topic_rows, wait_ready, write_csv

pytestmark = [pytest.mark.trains, pytest.mark.slow]

DISTRIBUTION = "finetune-encoders"  # this checkout, installed here (editable) and into the fresh environment
EXTRAS = ("serve", "onnx")  # for finetune-serve and finetune-export
OWN = {"pip", "setuptools", "wheel"}  # the fresh environment's own: pip may upgrade them there
COMMANDS = ("train", "predict", "export", "serve", "compare", "publish", "suggest", "simulate-labeling")
HEAVY = {"torch", "transformers", "datasets", "sklearn"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
NOT_COPIED = (".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".venv", "outputs", "multirun")


def with_requirements(
    name: str, found: Dict[str, importlib.metadata.Distribution], extras: Tuple[str, ...] = ()
) -> None:
    """``name``'s installed distribution and, recursively, those of its requirements (with ``name``'s ``extras``,
    its requirements' extras left out)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    key = canonicalize_name(name)
    if key in found or key in OWN:
        return
    try:
        found[key] = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return
    for line in found[key].requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in ("", *extras)):
            with_requirements(requirement.name, found)


def declared_requirements() -> Dict[str, importlib.metadata.Distribution]:
    """This environment's distributions that the package requires (with ``EXTRAS``), and what they require."""
    found: Dict[str, importlib.metadata.Distribution] = {}
    with_requirements(DISTRIBUTION, found, EXTRAS)
    del found[DISTRIBUTION]  # installed from the checkout
    assert {"torch", "transformers", "fastapi", "onnxruntime"} <= set(found), sorted(found)
    return found


def reuse_declared_requirements(python: Path, folder: Path) -> None:
    """Links to the declared requirements in ``folder``, on the fresh environment's path."""
    folder.mkdir()
    for dist in declared_requirements().values():
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source = Path(dist.locate_file(top))
            if source.exists() and not top.endswith(".pth") and not (folder / top).exists():
                (folder / top).symlink_to(source)
    site = program(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=folder)
    (Path(site.stdout.strip()) / "declared_requirements.pth").write_text(f"{folder}\n", encoding="utf-8")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh environment with the package installed from the checkout (and its serve and onnx
    extras, for finetune-serve and finetune-export)."""
    root = tmp_path_factory.mktemp("install")
    started = time.monotonic()
    assert program(sys.executable, "-m", "venv", str(root / "venv"), cwd=root).returncode == 0
    python = root / "venv" / "bin" / "python"
    reuse_declared_requirements(python, root / "reused")
    # The checkout as a fresh clone has it: no build/ or egg-info of an earlier build to leak into the wheel, and
    # none left in the checkout by this one.
    checkout = Path(shutil.copytree(REPO, root / "checkout", ignore=shutil.ignore_patterns(*NOT_COPIED)))
    result = program(
        str(python), "-m", "pip", "install", "--no-compile", f"{checkout}[{','.join(EXTRAS)}]", cwd=root, timeout=1200
    )
    assert result.returncode == 0, result.output[-4000:]
    print(f"created and installed in {time.monotonic() - started:.0f} s")
    return python.parent


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_models) -> Path:
    """A folder outside the checkout with a train and a test file; the tiny BERT beside it."""
    folder = tmp_path_factory.mktemp("work")
    write_csv(folder / "train.csv", topic_rows(48, seed=1))
    write_csv(folder / "test.csv", topic_rows(16, seed=2))
    return folder


@pytest.fixture(scope="module")
def trained(installed, work, tiny_models) -> Path:
    """finetune-train on the own-file task, from the work folder: the run folder it made under outputs/."""
    training = [o for o in TINY_TRAINING if not o.startswith("trainer.num_train_epochs=")]
    started = time.monotonic()
    result = program(
        str(installed / "finetune-train"),
        "task=file",
        "file=train.csv",
        "test_file=test.csv",
        "model=bert",
        f"model.name_or_path={tiny_models['bert']}",
        "hardware=cpu",
        "task.validation_size=0.25",  # few labels hold out none when there is a test file: TINY_TRAINING evaluates
        *training,
        "trainer.num_train_epochs=1",
        cwd=work,
        env=OFFLINE,
    )
    assert result.returncode == 0, result.output[-4000:]
    print(f"trained in {time.monotonic() - started:.0f} s")
    (run,) = (work / "outputs").iterdir()
    return run


def test_every_command_is_installed_and_the_package_and_presets_are_the_installed_ones(installed, work):
    assert all((installed / f"finetune-{name}").is_file() for name in COMMANDS)
    where = "import finetune, finetune.run as r; print(finetune.__file__); print(r.presets_dir())"
    package, presets = program(str(installed / "python"), "-c", where, cwd=work, env=OFFLINE).stdout.split()
    site = installed.parent / "lib"
    assert Path(package).is_relative_to(site) and Path(presets) == Path(package).parent / "conf"
    shipped = {p.relative_to(presets).as_posix() for p in Path(presets).rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    (licence,) = site.glob("python*/site-packages/finetune_encoders-*.dist-info/licenses/LICENSE")
    assert licence.read_text() == (REPO / "LICENSE").read_text()


def test_train_help_and_cfg_job_are_quick_and_import_no_heavy_library(installed, work):
    for args in (["--help"], ["--cfg", "job"]):
        started = time.monotonic()
        result = program(
            str(installed / "python"),
            "-X",
            "importtime",
            str(installed / "finetune-train"),
            *args,
            cwd=work,
            env=OFFLINE,
        )
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.output[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
        assert not imported & HEAVY, args
        print(f"finetune-train {' '.join(args)}: {seconds:.1f} s")
    assert "name_or_path: distilbert-base-uncased" in result.stdout


def test_training_writes_its_run_folder_under_the_working_folder_as_run_py_does(trained, work):
    assert trained.parent == work / "outputs" and trained.name.endswith("_bert_train")
    assert {"run.log", "metrics.json", "model", ".hydra", "environment.json"} <= {p.name for p in trained.iterdir()}
    card = (trained / "model" / "README.md").read_text()
    assert "## License" in card and "Fill in `license:`" in card  # the tiny model names no license
    environment = json.loads((trained / "environment.json").read_text())
    assert environment["packages"]["finetune"] == finetune.__version__
    assert environment["command"].startswith("finetune-train task=file file=train.csv ")


def test_predict_export_compare_and_publish_dry_run_on_the_run(installed, trained, work):
    def command(name: str, *args: str):
        result = program(str(installed / f"finetune-{name}"), *args, cwd=work, env=OFFLINE)
        assert result.returncode == 0, f"finetune-{name}: {result.output[-3000:]}"
        return result

    command("predict", str(trained), "--input", "test.csv", "--output", "predicted.csv")
    assert (work / "predicted.csv").read_text().splitlines()[0].split(",")[-2:] == ["predicted", "confidence"]
    command("export", str(trained))
    assert (trained / "export" / "model.onnx").is_file()
    command("compare", str(trained), str(trained), "--output", "comparison.json")
    assert json.loads((work / "comparison.json").read_text())["difference"] == 0
    listed = command("publish", str(trained), "--repo-id", "me/tiny", "--dry-run").stdout
    assert "README.md" in listed and "model.safetensors" in listed and "nothing was sent" in listed


def test_serve_answers_from_the_installed_command(installed, trained, work):
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [str(installed / "finetune-serve"), str(trained), "--port", str(port), "--threads", "1"],
        cwd=work,
        env={**os.environ, **OFFLINE},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        status, answer = call(url, "/predict", {"text": "coach league goal season"})
        assert status == 200 and answer, answer
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
