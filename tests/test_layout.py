"""The package's layout holds: imports go downwards between rooms with no circles (import-linter's
contracts in pyproject.toml), and no module or function grows past what a reader takes in at once."""

import ast
import re
import shutil

import pytest

from tests.helpers import REPO, python

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_the_import_contracts_are_kept(capsys):
    from importlinter.cli import lint_imports

    assert lint_imports(str(REPO / "pyproject.toml"), no_cache=True) == 0, capsys.readouterr().out
    printed = capsys.readouterr().out
    assert "Rooms import downwards only KEPT" in printed and "No import circles KEPT" in printed


@pytest.mark.trains
def test_an_upward_import_or_a_circle_breaks_a_contract_naming_the_import(tmp_path):
    """The contracts bite: a copy of the package with one upward import (it also closes a ring) fails both."""
    shutil.copytree(REPO / "finetune", tmp_path / "finetune")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    metrics = tmp_path / "finetune" / "tasks" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom finetune.training import train  # noqa\n")
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = python("-c", lint, "--no-cache", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert "finetune.tasks is not allowed to import finetune.training" in result.stdout
    assert "finetune.tasks.metrics -> finetune.training.train" in result.stdout
    assert "Rooms import downwards only BROKEN" in result.stdout and "No import circles BROKEN" in result.stdout


def python_files():
    return sorted((REPO / "finetune").rglob("*.py"))


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_longer_than_a_reader_takes_in(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {lines} lines: split it by concern"


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            ):
                long.append(
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert not long, "name the stages of these: " + "; ".join(long)


# The file names of a run folder, a model folder and an export folder: finetune/runs/saved.py alone writes them.
RUN_FOLDER_NAMES = (
    ".hydra",
    "config.yaml",
    "hydra.yaml",
    "overrides.yaml",
    "run.log",
    ".lock",
    "metrics.json",
    "failed.json",
    "environment.json",
    "checkpoints",
    "trainer_state.json",
    "export.json",
    "finetune.json",
    "calibration.json",
    "thresholds.json",
    "model.onnx",
    "out_of_fold.parquet",
    "predictions_",
    "misclassified_",
    "summary.csv",
)
OWNER = REPO / "finetune" / "runs" / "saved.py"


def string_literals(tree: ast.AST):
    """Every string constant of a module, its docstrings left out (they may name files to the reader)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_the_run_folders_file_names_are_written_only_in_their_owner():
    found = []
    for path in python_files():
        if path == OWNER:
            continue
        for node in string_literals(ast.parse(path.read_text(encoding="utf-8"))):
            for name in RUN_FOLDER_NAMES:
                if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", node.value):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {name!r} in {node.value[:60]!r}")
    assert not found, "name these through finetune/runs/saved.py: " + "; ".join(found)
    owner = {node.value for node in string_literals(ast.parse(OWNER.read_text(encoding="utf-8")))}
    assert all(any(name in value for value in owner) for name in RUN_FOLDER_NAMES)  # the list is the owner's


@pytest.mark.trains
@pytest.mark.parametrize("command", [("format", "--check"), ("check",)], ids=["ruff format", "ruff check"])
def test_the_code_is_formatted_and_linted(command):
    """ruff's settings are pyproject.toml's: the package, its tests, the benchmarks and run.py, lines of 120 at most."""
    result = python("-m", "ruff", *command, ".")
    assert result.returncode == 0, result.output[-3000:]
