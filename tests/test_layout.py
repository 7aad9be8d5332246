"""The package's layout holds: imports go downwards between rooms with no circles (import-linter's
contracts in pyproject.toml), and no module or function grows past what a reader takes in at once."""

import ast
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
