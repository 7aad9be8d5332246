"""What pyproject.toml declares for an install: the distribution's name and license, a console script for every
command, and one training entry behind python run.py, python -m finetune.run and finetune-train.
tests/test_install.py installs the package and runs the scripts."""

import importlib
import sys

import pytest

from finetune.packages import DISTRIBUTION
from tests.helpers import REPO, python, run_py

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
COMMANDS = ("train", "predict", "export", "serve", "compare", "publish", "suggest", "simulate-labeling")


def test_the_distribution_is_named_apart_from_the_import_name_and_licensed():
    assert PROJECT["name"] == DISTRIBUTION != "finetune"
    assert all(DISTRIBUTION in extra for extra in PROJECT["optional-dependencies"]["test"] if "[" in extra)
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_console_script_that_imports(command):
    module, function = PROJECT["scripts"][f"finetune-{command}"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_a_checkout_reads_its_presets_from_conf():
    from finetune.run import presets_dir

    assert presets_dir() == REPO / "conf" and not (REPO / "finetune" / "conf").exists()


@pytest.mark.trains
def test_python_m_finetune_run_is_run_py_from_any_folder(tmp_path):
    """The same entry: the same composed config, the same job name (the run folder's run.log), the same checks
    before Hydra starts."""
    for args in (["--cfg", "job"], ["--cfg", "hydra"]):
        from_checkout = run_py(*args, cwd=tmp_path)
        module = python("-m", "finetune.run", *args, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
        assert module.returncode == from_checkout.returncode == 0, module.output[-2000:]
        assert module.stdout == from_checkout.stdout
    assert "  job:\n    name: run\n" in module.stdout
    for override, says in [
        ("trainer.hub_token=hf_abc", "trainer.hub_token: an access token on the command line"),  # never saved
        ("task.max_length=abc", "task.max_length='abc': Value 'abc' of type 'str' could not be converted"),
    ]:
        refused = python("-m", "finetune.run", override, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
        assert refused.returncode == 1 and says in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "outputs").exists()
