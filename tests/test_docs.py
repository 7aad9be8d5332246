"""The documentation as a user reads it: the README is short, the site builds, and every command, flag, key and
preset it shows exists (the commands' own --help, the composed config, the schemas)."""

import json
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from tests.helpers import REPO, cli, compose_config, read_json, run_py, topic_rows, write_csv

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:python |finetune-|torchrun |accelerate )[^`]+)`")
SCRIPTS = {  # console script -> the module python -m runs
    "finetune-predict": "predict",
    "finetune-export": "export",
    "finetune-serve": "serve",
    "finetune-compare": "compare",
    "finetune-suggest": "suggest",
    "finetune-simulate-labeling": "simulate_labeling",
    "finetune-publish": "publish",
}
WITHOUT_VALUE = ("-m", "--multirun", "--help", "-h", "--info", "--resolve")  # run.py's own flags
WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir")


def _where(page: Path, text: str, start: int) -> str:
    return f"{page.relative_to(REPO)}:{text.count(chr(10), 0, start) + 1}"


def shown_commands() -> Iterator[Tuple[str, List[str]]]:
    """(where, tokens) of every command line the docs show: shell blocks (continuations joined, comments cut)
    and inline code that starts like a command."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            if block.group(1) not in ("bash", "sh", "shell", ""):
                continue
            for line in block.group(2).replace("\\\n", " ").splitlines():
                yield from _commands(_where(page, text, block.start(2)), line)
        for code in INLINE.finditer(text):
            yield from _commands(_where(page, text, code.start()), code.group(1))


def _commands(where: str, line: str) -> Iterator[Tuple[str, List[str]]]:
    for part in re.split(r"&&|\|\||;|\|", line):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:  # an inline fragment with one quote: not a whole command
            continue
        if tokens:
            yield where, tokens


def run_py_overrides(tokens: List[str]):
    """The overrides a run.py (or finetune-train) line passes, or None if the line does not run it."""
    at = next((i for i, t in enumerate(tokens) if t.endswith("run.py") or t == "finetune-train"), None)
    if at is None:
        return None
    overrides, skip = [], False
    for token in tokens[at + 1 :]:
        if skip or token in WITHOUT_VALUE:
            skip = False
            continue
        if token in WITH_VALUE:
            skip = True
            continue
        key, _, value = token.partition("=")
        if not _ or key in ("resume", "hydra.searchpath") or "$" in value or re.match(r"\w+\(", value):
            continue  # a folder of the reader's, a shell variable, a sweep of range()/choice(): nothing to compose
        if "<" in value or "..." in value:
            value = "placeholder.csv"  # <your file>: any name composes
        overrides.append(f"{key}={_first(value)}")
    return overrides


def _first(value: str) -> str:
    """A sweep's first value (``bert,roberta`` -> ``bert``); a list ``[a,b]`` stays whole."""
    depth, out = 0, ""
    for char in value:
        depth += char in "[({" and 1 or (char in "])}" and -1 or 0)
        if char == "," and depth == 0:
            break
        out += char
    return out


def command_module(tokens: List[str]):
    """The finetune command a line runs (``predict``), or None."""
    for i, token in enumerate(tokens):
        if token == "-m" and i + 1 < len(tokens) and tokens[i + 1].startswith("finetune."):
            return tokens[i + 1].split(".", 1)[1], tokens[i + 2 :]
        if token in SCRIPTS:
            return SCRIPTS[token], tokens[i + 1 :]
    return None


def test_the_readme_fits_a_newcomers_reading():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"
    # the two set-up commands first, then the own-file route within the first screen
    commands = [line for line in lines if line.startswith("pip install -e")]
    assert commands[0].startswith("pip install -e . && python run.py") and "&& pytest" in commands[1]
    assert lines.index(commands[1]) < 15
    assert any("task=file file=" in line for line in lines[:30])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_user_docs_say_nothing_of_how_the_project_was_made(page):
    text = page.read_text(encoding="utf-8")
    found = re.findall(r"[^\n]*\b(?:sittings?|sessions?|the issue'?s?)\b[^\n]*", text, re.I)
    assert not found, found


def test_no_preset_names_a_path_outside_the_checkout():
    named = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in (REPO / "conf").rglob("*.yaml")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"\.\./|shared/data|FINETUNE_SHARED_DATA", line.split("#", 1)[0])
    ]
    assert not named, named


@pytest.mark.trains  # a minute of composing
def test_every_run_py_line_the_docs_show_composes_and_validates(tmp_path, monkeypatch):
    from finetune.config.checks import validate

    _write_shown_presets(tmp_path)  # the reader's own presets, where a line uses them
    monkeypatch.setenv("FINETUNE_CONFIG_DIR", str(tmp_path))
    failures, checked = [], set()
    for where, tokens in shown_commands():
        overrides = run_py_overrides(tokens)
        if overrides is None or tuple(overrides) in checked:
            continue
        checked.add(tuple(overrides))
        try:
            validate(compose_config(*overrides, with_hydra=any(o.startswith("hydra") for o in overrides)))
        except Exception as error:  # every failure is reported, with where the docs show the line
            failures.append(f"{where}: {' '.join(overrides)}\n    {type(error).__name__}: {error}")
    assert len(checked) >= 40, "the docs show fewer run.py lines than expected: is the parsing broken?"
    assert not failures, "\n".join(failures)


def shown_presets() -> Iterator[Tuple[str, str, str, str]]:
    """(where, group, name, YAML) of every preset the docs show, its path in its first comment line."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            first = block.group(2).split("\n", 1)[0]
            path = re.match(r"# \S*?(\w+)/(\w+)\.yaml:", first)
            if block.group(1) == "yaml" and path:
                yield _where(page, text, block.start(2)), path.group(1), path.group(2), block.group(2)


def _write_shown_presets(folder: Path) -> List[Tuple[str, str, str, str]]:
    shown = list(shown_presets())
    for _, group, name, yaml in shown:
        (folder / group).mkdir(exist_ok=True)
        (folder / group / f"{name}.yaml").write_text(yaml, encoding="utf-8")
    return shown


def test_every_preset_the_docs_show_composes(tmp_path, monkeypatch):
    from finetune.config.checks import validate

    shown = _write_shown_presets(tmp_path)
    assert len(shown) >= 5
    monkeypatch.setenv("FINETUNE_CONFIG_DIR", str(tmp_path))
    for where, group, name, _ in shown:
        cfg = compose_config(f"{group}={name}")
        validate(cfg)
        assert cfg[group]["_target_"], where


def test_the_configuration_reference_has_every_key_with_its_type_default_and_comment():
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(REPO / "docs"))
    from finetune.config.schemas import GROUP_SCHEMAS

    reference = hooks.configuration_reference()
    rows = {row.split(" | ")[0].lstrip("| "): row for row in reference.splitlines() if row.startswith("| ")}
    composed = compose_config()
    for group in GROUP_SCHEMAS:
        for key in _leaf_keys(composed[group], group):
            assert key in rows, f"{key} is missing from the reference"
            assert not rows[key].endswith("|  |"), f"{key} has no comment in its schema"
    for key in _leaf_keys(composed.trainer, "trainer"):
        assert key in rows and not rows[key].endswith("|  |"), key
    assert "| modernbert |" in reference or "| minilm |" in reference  # the presets are listed


def _leaf_keys(node, prefix: str) -> Iterator[str]:
    from omegaconf import DictConfig

    for key in node.keys():
        if key == "_target_" or str(key) not in _schema_keys(prefix):
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and key == "long_text":
            yield from _leaf_keys(child, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}"


@lru_cache(maxsize=None)
def _schema_keys(prefix: str) -> Tuple[str, ...]:
    """The keys a group's schema (or the trainer preset) declares: presets may add their own (base_model)."""
    import dataclasses

    from finetune.config.schemas import GROUP_SCHEMAS, LongTextFields

    if prefix == "trainer":
        return tuple(compose_config().trainer.keys())
    schema = LongTextFields if prefix == "task.long_text" else GROUP_SCHEMAS[prefix]
    return tuple(f.name for f in dataclasses.fields(schema))


@lru_cache(maxsize=None)
def _help(module: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", f"finetune.{module}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.trains
def test_every_flag_the_docs_show_is_one_the_command_has():
    failures: Dict[str, List[str]] = {}
    for where, tokens in shown_commands():
        found = command_module(tokens)
        if found is None:
            continue
        module, args = found
        for flag in (a.split("=", 1)[0] for a in args if a.startswith("--")):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", _help(module)):
                failures.setdefault(f"finetune.{module} {flag}", []).append(where)
    assert not failures, "\n".join(f"{flag}: shown at {', '.join(at)}" for flag, at in failures.items())


@pytest.mark.trains
def test_the_site_builds_without_a_warning(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    reference = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "task.max_length" in reference and "hardware.precision" in reference
    commands = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text(encoding="utf-8")
    assert "--min-confidence" in commands


def readme_block(heading: str) -> List[List[str]]:
    """The command lines of the first shell block under a README heading, as tokens."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = FENCE.search(section).group(2)
    lines = block.replace("\\\n", " ").splitlines()
    return [tokens for line in lines for _, tokens in _commands("README.md", line)]


@pytest.mark.trains
def test_the_quick_start_and_the_model_commands_run_as_written(tmp_path, tiny_models):
    """README's quick start on a file of the reader's, then each command of "Use the model" on its run, as the
    README writes them; only the model is the tiny one (and its training settings), and the run's folder is
    named. The server runs until stopped: tests/test_serve.py starts it."""
    write_csv(tmp_path / "tickets.csv", topic_rows(80, seed=41))
    write_csv(tmp_path / "held_out.csv", topic_rows(40, seed=42))
    write_csv(tmp_path / "new.csv", [{"text": row["text"]} for row in topic_rows(30, seed=43)])
    write_csv(tmp_path / "unlabeled.csv", [{"text": row["text"]} for row in topic_rows(60, seed=44)])
    # the tiny model's own settings only (its position table is short; a random body learns at a larger rate): the
    # schedule, the head and the validation are the sized defaults the reader gets
    tiny = [f"model.name_or_path={tiny_models['bert']}", "task.max_length=32", "trainer.learning_rate=2e-3"]
    runs = []
    for number, tokens in enumerate(readme_block("Quick start: your own file"), start=1):
        assert tokens[:2] == ["python", "run.py"], tokens
        runs.append(tmp_path / f"run{number}")
        result = run_py(*tokens[2:], *tiny, f"hydra.run.dir={runs[-1]}", cwd=tmp_path)
        assert result.returncode == 0, result.output[-3000:]
        metrics = read_json(runs[-1] / "metrics.json")
        assert (metrics["validation"] or metrics["test"])["accuracy"] > 0.5  # with test_file: every row trains
    assert "support" in (runs[-1] / "model" / "README.md").read_text(encoding="utf-8")  # task.title=support
    shown = {}
    for tokens in readme_block("Use the model"):
        module, args = command_module(tokens)
        if module == "serve":
            continue
        result = cli(module, *[str(runs[-1]) if a == "outputs/<run>" else a for a in args], cwd=tmp_path)
        assert result.returncode == 0, f"{' '.join(tokens)}\n{result.output[-3000:]}"
        shown[module, "--input" in args] = result.stdout
    assert json.loads(shown["predict", False])  # one text: JSON on stdout
    assert len((tmp_path / "predicted.csv").read_text(encoding="utf-8").splitlines()) == 31
    assert (runs[-1] / "export" / "model.onnx").is_file()
    assert "README.md" in shown["publish", False]  # --dry-run lists model/ with its card
    assert len((tmp_path / "suggestions.csv").read_text(encoding="utf-8").splitlines()) == 33
