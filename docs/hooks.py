"""MkDocs hook: pages generated at build time from the code and the README, so they cannot drift from them.

index.md: README.md.
reference/configuration.md: every key of the typed schemas (finetune/config/schemas.py) with its type, default
and comment, the trainer and callbacks groups' keys from their YAML, and each group's presets.
reference/commands.md: each command's own ``--help``.
"""

import ast
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("task", "model", "trainer", "hardware", "peft", "callbacks", "experiment", "hparams_search")
COMMANDS = {  # what the user types -> how the reference runs its --help
    "python run.py": [sys.executable, "run.py"],
    "python -m finetune.predict": [sys.executable, "-m", "finetune.predict"],
    "python -m finetune.export": [sys.executable, "-m", "finetune.export"],
    "python -m finetune.serve": [sys.executable, "-m", "finetune.serve"],
    "python -m finetune.compare": [sys.executable, "-m", "finetune.compare"],
    "python -m finetune.suggest": [sys.executable, "-m", "finetune.suggest"],
    "python -m finetune.simulate_labeling": [sys.executable, "-m", "finetune.simulate_labeling"],
    "python -m finetune.publish": [sys.executable, "-m", "finetune.publish"],
}


# --- the typed schemas ----------------------------------------------------------------------------------------


def _comments(source: str) -> Dict[int, str]:
    """Line number -> the comment on that line (tokenized: a ``#`` inside a string is not one)."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def _field_notes(cls: type) -> Dict[str, Tuple[str, str]]:
    """A dataclass's field -> (its annotation as written, its comments: the lines just above it, then its own)."""
    source = Path(sys.modules[cls.__module__].__file__).read_text(encoding="utf-8")
    comments, lines = _comments(source), source.splitlines()
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    notes = {}
    for statement in node.body:
        if not isinstance(statement, ast.AnnAssign):
            continue
        above, line = [], statement.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        own = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
        notes[statement.target.id] = (ast.unparse(statement.annotation), " ".join(above + own))
    return notes


def _value(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value or '""'


def _schema_rows(cls: type, prefix: str) -> Iterator[Tuple[str, str, str, str]]:
    """(key, type, default, comment) for each field of ``cls``, nested dataclasses flattened."""
    notes, instance = _field_notes(cls), cls()
    for item in dataclasses.fields(cls):
        if item.name.startswith("_"):
            continue
        default = getattr(instance, item.name)
        if dataclasses.is_dataclass(default):
            yield from _schema_rows(type(default), f"{prefix}{item.name}.")
            continue
        kind, note = notes[item.name]
        yield f"{prefix}{item.name}", f"`{kind}`", _value(default), note


# --- the YAML groups ------------------------------------------------------------------------------------------


def _yaml_rows(path: Path, prefix: str) -> Iterator[Tuple[str, str, str]]:
    """(key, value, comment) for each top-level key of a YAML file, with the comment lines just above it."""
    above: List[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z_]\w*):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if line.startswith("#"):
            above.append(line.lstrip("#").strip())
        elif match and match.group(1) not in ("defaults", "hydra", "_target_"):
            yield f"{prefix}{match.group(1)}", match.group(2), " ".join(above + [match.group(3) or ""]).strip()
            above = []
        else:
            above = []


def _presets(group: str) -> Iterator[Tuple[str, str]]:
    """(name, the first sentence of its opening comment) of each preset of a group."""
    for path in sorted((CONF / group).glob("*.yaml")):
        opening = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            if "@package" not in line:
                opening.append(line.lstrip("#").strip())
        yield path.stem, re.split(r"(?<=\.)\s", " ".join(opening) + " ", maxsplit=1)[0].strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: List[str], rows) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows]
    return out + [""]


def configuration_reference() -> str:
    """reference/configuration.md."""
    from finetune.config.schemas import GROUP_SCHEMAS

    out = [
        "# Configuration keys",
        "",
        "Every key a run reads, generated from the typed schemas and the presets. Set any of them on the",
        "command line (`task.max_length=256`) or in a preset of your own (see [Configuration]"
        "(../guides/configuration.md)). Defaults here are the schema's; a preset may set its own.",
        "",
        "## Top level",
        "",
        *_table(["key", "default", "what it does"], _yaml_rows(CONF / "config.yaml", "")),
    ]
    for group in GROUPS:
        out += [f"## {group}", ""]
        if group in GROUP_SCHEMAS:
            fields = GROUP_SCHEMAS[group].__mro__[1]  # <Group>Fields: the keys; <Group>Config adds _target_
            out += _table(["key", "type", "default", "what it does"], _schema_rows(fields, f"{group}."))
        elif group == "trainer":
            out += [
                "Any field of `transformers.TrainingArguments` (`trainer.<field>=<value>`). The default preset sets:",
                "",
                *_table(["key", "default", "what it does"], _yaml_rows(CONF / "trainer" / "default.yaml", "trainer.")),
            ]
        out += [f"Presets (`{group}=<name>`):", "", *_table(["name", "what it is"], _presets(group))]
    return "\n".join(out)


def commands_reference() -> str:
    """reference/commands.md: each command's --help, as the installed code prints it."""
    out = [
        "# Commands",
        "",
        "Each command's `--help`, as it prints it. Installed, each is also a console script: `finetune-train`",
        "(`python run.py`), `finetune-predict`, `finetune-export`, `finetune-serve`, `finetune-compare`,",
        "`finetune-suggest`, `finetune-simulate-labeling` and `finetune-publish`.",
        "",
    ]
    env = {**os.environ, "COLUMNS": "100", "HF_HUB_OFFLINE": "1"}
    for typed, argv in COMMANDS.items():
        shown = subprocess.run([*argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        out += [f"## `{typed}`", "", "```text", shown.stdout.rstrip(), "```", ""]
    return "\n".join(out)


def home_page() -> str:
    """index.md: the README, its links into docs/ made relative to the site."""
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")


def on_files(files, config):
    """Add the generated pages to the site (never written into docs/)."""
    from mkdocs.structure.files import File

    sys.path.insert(0, str(ROOT))
    for uri, content in (
        ("index.md", home_page()),
        ("reference/configuration.md", configuration_reference()),
        ("reference/commands.md", commands_reference()),
    ):
        files.append(File.generated(config, uri, content=content))
    return files
