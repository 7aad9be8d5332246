"""Fixtures: generated data sets, tiny random models of each architecture, and the tiny runs that
many tests read, each trained once per session (tests that change a run take a copy).

Every test that trains a model or starts a process is marked ``trains`` (``pytest -m "not trains"``
is the quick check): those that use a trained run are marked here, the others where they are
written; ``run_py`` and ``cli`` refuse to start a process in a test without the mark.
"""

import shutil
from pathlib import Path
from typing import Dict

import pytest

from tests import helpers
from tests.helpers import (
    FAKE_TOKEN,
    TINY_CONFIGS,
    TINY_TRAINING,
    TOPICS,
    VOCAB,
    glue_tsv_files,
    multi_label_rows,
    pair_rows,
    printed,
    run_py,
    save_tokenizer,
    score_rows,
    topic_args,
    topic_rows,
    write_csv,
)

TRAINED_RUNS = ("topic_run", "pair_run", "multi_label_run", "regression_run")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups into the test ids
def pytest_collection_modifyitems(items) -> None:
    """A test that reads a trained run trains (once per session); so do the slow and integration ones.

    With pytest-xdist (``pytest -n auto``, grouped by ``--dist loadgroup``), the tests of the trained runs
    go to one worker, so that each run is trained once, and each other module to one worker, so that
    its module fixtures are built once.
    """
    for item in items:
        reads_runs = bool(set(item.fixturenames) & set(TRAINED_RUNS))
        if reads_runs or item.get_closest_marker("slow") or item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.trains)
        together = reads_runs or item.get_closest_marker("uses_trained_runs") is not None
        item.add_marker(pytest.mark.xdist_group("trained_runs" if together else item.module.__name__))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: run where the workers' collections arrive
def pytest_xdist_node_collection_finished(node, ids) -> None:
    """Under ``--dist loadgroup``, each test id carries its group: a pytest-xdist that no longer adds it would
    spread the groups over the workers (each trained run trained on every one), silently; stop instead."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    ungrouped = [nodeid for nodeid in ids if "@" not in nodeid.rsplit("]", 1)[-1]]
    if ungrouped:
        pytest.exit(
            f"pytest-xdist did not group {len(ungrouped)} of {len(ids)} tests (the first: {ungrouped[0]}): this "
            "pytest and pytest-xdist do not work together under --dist loadgroup; install the versions the test "
            "extra of pyproject.toml names (pip install -e '.[test]').",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """Before the test's fixtures (a module's trained run among them): may it start processes?"""
    helpers.MAY_START_PROCESSES = item.get_closest_marker("trains") is not None


def pytest_runtest_teardown(item) -> None:
    helpers.MAY_START_PROCESSES = False


@pytest.fixture(scope="session")
def topic_files(tmp_path_factory) -> Dict[str, Path]:
    """AG-News-like train.csv (label names) and test.csv (label ids), easy to learn."""
    folder = tmp_path_factory.mktemp("topics")
    test = [{"text": r["text"], "label": list(TOPICS).index(r["label"])} for r in topic_rows(40, seed=2)]
    return {
        "train": write_csv(folder / "train.csv", topic_rows(200, seed=1)),
        "test": write_csv(folder / "test.csv", test),
    }


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory) -> Dict[str, Path]:
    """RTE-like train.tsv and an unlabeled test.tsv, unquoted like GLUE's (one field starts with a bare quote)."""
    return glue_tsv_files(
        tmp_path_factory.mktemp("pairs"), pair_rows(160, seed=3), pair_rows(30, seed=4, labeled=False)
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Dict[str, Path]:
    """A random 2-layer model of each architecture, saved with a small WordPiece tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("models")
    folders = {}
    for model_type, sizes in TINY_CONFIGS.items():
        torch.manual_seed(0)
        config = AutoConfig.for_model(model_type, vocab_size=len(VOCAB), pad_token_id=0, **sizes)
        folder = root / model_type
        AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
        save_tokenizer(folder, padding_side="left" if model_type == "xlnet" else "right")  # XLNet pads on the left
        folders[model_type] = folder
    return folders


@pytest.fixture(scope="session")
def multi_label_files(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("multi_label")
    return {
        "train": write_csv(folder / "train.csv", multi_label_rows(200, seed=21)),
        "test": write_csv(folder / "test.csv", multi_label_rows(40, seed=22)),
    }


@pytest.fixture(scope="session")
def regression_files(tmp_path_factory) -> Dict[str, Path]:
    """STS-B-like train.tsv (scores) and an unlabeled test.tsv."""
    return glue_tsv_files(
        tmp_path_factory.mktemp("regression"), score_rows(160, seed=23), score_rows(20, seed=24, labeled=False)
    )


def _trained(run_dir: Path, *args: str, cwd=None, **kwargs) -> Path:
    result = run_py(*args, f"hydra.run.dir={run_dir}", cwd=cwd or run_dir.parent, **kwargs)
    assert result.returncode == 0, result.output[-4000:]
    printed(run_dir).write_text(
        result.output, encoding="utf-8"
    )  # beside the run folder: for the tests that read the output
    return run_dir


@pytest.fixture(scope="session")
def topic_run(tmp_path_factory, topic_files, tiny_models) -> Path:
    """Single-label: the tiny BERT on the topics, with a labeled test split and the preset's examples,
    from an empty working folder."""
    cwd = tmp_path_factory.mktemp("cwd")
    args = [
        a
        for a in topic_args(topic_files, tiny_models["bert"], cwd / "runs" / "topics")
        if not a.startswith("hydra.run.dir=")
    ]
    return _trained(cwd / "runs" / "topics", *args, cwd=cwd, env={"HF_TOKEN": FAKE_TOKEN})


@pytest.fixture(scope="session")
def pair_run(tmp_path_factory, pair_files, tiny_models) -> Path:
    """Single-label pairs: the tiny XLNet (it pads on the left) on RTE-like pairs,
    with an unlabeled test split (predicted into a submission file)."""
    return _trained(
        tmp_path_factory.mktemp("pairs") / "rte",
        "task=rte",
        "model=xlnet",
        f"model.name_or_path={tiny_models['xlnet']}",
        f"task.data_files.train={pair_files['train']}",
        f"task.data_files.test={pair_files['test']}",
        "hardware=cpu",
        *TINY_TRAINING,
    )


@pytest.fixture(scope="session")
def multi_label_run(tmp_path_factory, multi_label_files, tiny_models) -> Path:
    return _trained(
        tmp_path_factory.mktemp("kinds") / "multi",
        "task=ag_news",
        "task.kind=multi_label",
        "task.label_field=labels",
        "task.metrics=[f1_micro,f1_macro,f1_samples,accuracy]",
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={multi_label_files['train']}",
        f"task.data_files.test={multi_label_files['test']}",
        "task.validation_size=0.2",
        *TINY_TRAINING,
        "hardware=cpu",
        "task.examples=['coach league goal treaty minister border']",
    )


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory, regression_files, tiny_models) -> Path:
    return _trained(
        tmp_path_factory.mktemp("kinds") / "regression",
        "task=stsb",
        f"model.name_or_path={tiny_models['bert']}",
        f"task.data_files.train={regression_files['train']}",
        f"task.data_files.test={regression_files['test']}",
        "task.validation_size=0.2",
        "task.metrics=[pearson,spearman,mse]",
        *TINY_TRAINING,
        "hardware=cpu",
        "task.examples=[]",
    )


@pytest.fixture
def copy_of(tmp_path):
    """A copy of a session's run, for a test that writes into it (an export, a resume)."""

    def copy(run_dir: Path) -> Path:
        return Path(shutil.copytree(run_dir, tmp_path / run_dir.name, symlinks=True))

    return copy
