"""The commands and code the docs show, checked against the code (issue 30), so a renamed option or module fails here.

Every ``repaint ...`` line of a ``bash`` block in README.md, docs/*.md and the model card names a command that
exists and only options that command takes (with a valid value where the option has a fixed set of choices); every
``python`` block compiles, and every name it imports from ``repaint`` exists. Running the blocks is left to the
tests of each feature: most need a real model, a GPU or minutes.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import click
import pytest

from repaint.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "src/repaint/weights/MODEL_CARD.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in FENCE.finditer(doc.read_text()):
            if match.group(1) == language:
                line = doc.read_text()[:match.start()].count("\n") + 1
                found.append((f"{doc.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def _commands(block: str) -> list[list[str]]:
    """The ``repaint`` invocations of a shell block, as argument lists (continuations joined, comments dropped,
    ``&&`` / ``;`` chains and ``torchrun ... -m repaint`` launchers split off)."""
    text = block.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        parts, current = [], []
        for word in words:
            if word in ("&&", ";", "||", "|"):
                parts.append(current)
                current = []
            else:
                current.append(word)
        parts.append(current)
        for part in parts:
            if "repaint" in part:
                start = part.index("repaint")
                if start == 0 or part[start - 1] == "-m":
                    commands.append(part[start + 1:])
    return commands


SHELL = [(where, words) for where, block in _blocks("bash") for words in _commands(block)]


def _check(command: click.Command, words: list[str], path: str) -> None:
    if isinstance(command, click.Group):
        assert words, f"`{path}` needs a subcommand"
        if words[0] in ("-h", "--help", "--version"):
            return
        sub = command.get_command(click.Context(command), words[0])
        assert sub is not None, f"`{path} {words[0]}`: no such command"
        _check(sub, words[1:], f"{path} {words[0]}")
        return
    options = {name: param for param in command.params if isinstance(param, click.Option)
               for name in (*param.opts, *param.secondary_opts)}
    options.update({"-h": None, "--help": None})
    for i, word in enumerate(words):
        if not word.startswith("-") or word == "-":
            continue
        name, _, inline = word.partition("=")
        assert name in options, f"`{path}`: no option {name} (options: {', '.join(sorted(options))})"
        param = options[name]
        if param is not None and isinstance(param.type, click.Choice) and not param.is_flag:
            value = inline or (words[i + 1] if i + 1 < len(words) else "")
            assert value in param.type.choices, f"`{path} {name} {value}`: not one of {param.type.choices}"


@pytest.mark.parametrize("where, words", SHELL, ids=[f"{w}:{' '.join(c[:2])}" for w, c in SHELL])
def test_every_repaint_command_in_the_docs_exists_with_its_options(where, words):
    _check(cli, words, "repaint")


PYTHON = _blocks("python")


@pytest.mark.parametrize("where, code", PYTHON, ids=[w for w, _ in PYTHON])
def test_every_python_block_compiles_and_imports_names_that_exist(where, code):
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "repaint":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{where}: `from {node.module} import {alias.name}`: no such name"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "repaint":
                    importlib.import_module(alias.name)


def test_the_docs_hold_commands_to_check():
    assert len(SHELL) > 30 and len(PYTHON) >= 5


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


REFERENCES = sorted({(str(doc.relative_to(ROOT)), ref) for doc in DOCS
                     for ref in re.findall(r"`(repaint(?:\.\w+)+)", doc.read_text())})


@pytest.mark.parametrize("where, reference", REFERENCES, ids=[f"{w}:{r}" for w, r in REFERENCES])
def test_every_dotted_name_the_prose_gives_exists(where, reference):
    assert _resolves(reference.rstrip(".")), f"{where}: `{reference}` names nothing in the package"
