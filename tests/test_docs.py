"""The commands and code the docs show, checked against the code and run (issue 30), so a doc cannot go stale.

Every ``bash`` and ``python`` block of README.md, docs/*.md and the model card is *run*, in document order, in one
scratch folder per document that holds the files the docs name (``photo.png``, ``mask.png``, ... : the bundled
example face and its mask; ``examples/``), with the bundled model. A block that cannot run here carries a marker on
the line before its fence, ``<!-- docs-test: skip KIND: why -->``, KIND one of :data:`SKIP_KINDS`; such a block is
still checked: every ``repaint ...`` line names a command that exists and only options that command takes (with a
valid value where the option has a fixed set of choices), every ``python`` block compiles and imports names that
exist. Two more markers:

- ``<!-- docs-test: server -->``: the block starts a server; it runs in the background until the document is done,
  and the test waits until the URL the block's comment names answers.
- ``<!-- docs-test: output -->`` before a ``text`` block: the output the block before it printed (stdout), line
  for line; ``...`` in a line stands for any text.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
import pytest
from PIL import Image

from repaint.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "src/repaint/weights/MODEL_CARD.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
MARK = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
CODE = ("bash", "python")
SKIP_KINDS = {
    "install": "changes the Python environment or the system (CI runs the README's set-up commands themselves)",
    "download": "fetches a model from the internet, which the tests cannot reach",
    "model": "needs a published checkpoint (hundreds of MB) that the tests cannot fetch",
    "data": "needs images or result folders that are not in the repository",
    "gpu": "needs one or more GPUs",
    "slow": "takes a minute or more on two CPU cores",
}
BLOCK_TIMEOUT = 900  # seconds; no block that runs takes more than about 30 s on two quiet cores (5 min under load)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    language: str
    code: str
    mark: str  # the text of the docs-test marker on the line before the fence, "" without one

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def skip(self) -> tuple[str, str] | None:
        if not self.mark.startswith("skip"):
            return None
        kind, _, why = self.mark.removeprefix("skip").strip().partition(":")
        return kind.strip(), why.strip()


def _read(doc: Path) -> list[Block]:
    text = doc.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.match(before.strip())
        blocks.append(Block(doc, text[:match.start()].count("\n") + 1, match.group(1), match.group(2),
                            mark.group(1) if mark else ""))
    return blocks


BLOCKS = [block for doc in DOCS for block in _read(doc)]


def _blocks(language: str) -> list[tuple[str, str]]:
    return [(b.where, b.code) for b in BLOCKS if b.language == language]


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


def test_every_marker_is_known_and_every_skip_says_why():
    for block in BLOCKS:
        if not block.mark:
            continue
        if block.skip:
            kind, why = block.skip
            assert kind in SKIP_KINDS, f"{block.where}: skip kind {kind!r} is not one of {', '.join(SKIP_KINDS)}"
            assert len(why) > 10, f"{block.where}: a skipped block says why it is not run"
            assert block.language in CODE, f"{block.where}: only bash and python blocks are run or skipped"
        elif block.mark == "output":
            assert block.language == "text", f"{block.where}: an output block is a ```text block"
        else:
            assert block.mark == "server" and block.language == "bash", f"{block.where}: unknown marker {block.mark!r}"


def test_no_command_hides_in_an_unmarked_block():
    """A fence without a language is layout, not something to type: a command there would escape every check."""
    for block in BLOCKS:
        if block.language in ("", "text"):
            for line in block.code.splitlines():
                words = [w for w in line.split() if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # VAR=value prefixes
                assert not words or words[0] not in ("repaint", "python", "python3", "pip", "torchrun", "curl"), \
                    f"{block.where}: `{line.strip()}` is a command in a block that is neither bash nor python"


# --- running the blocks ---------------------------------------------------------------------------------------

RUN = [b for b in BLOCKS if (b.language in CODE and not b.skip) or b.mark == "output"]
PHOTOS = ("photo.png", "photo.jpg", "face.png", "dog.png")   # the names the docs give a photo
MASKS = ("mask.png", "scratch.png")                          # ... and a mask


class Document:
    """One reader working through one document: a scratch folder, the servers it started, the last output."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.copytree(ROOT / "examples", folder / "examples")
        face = Image.open(ROOT / "examples/face.png").convert("RGB")
        for name in PHOTOS:
            face.save(folder / name)
        for name in MASKS:
            shutil.copy(ROOT / "examples/face_mask.png", folder / name)
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "REPAINT_HOME": str(folder / ".cache"), "PYTHONUNBUFFERED": "1"}
        self.servers: list[subprocess.Popen] = []
        self.output = ""

    def run(self, block: Block) -> None:
        if block.language == "python":
            script = self.folder / "_block.py"
            script.write_text(block.code)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
        done = subprocess.run(command, cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT)
        assert done.returncode == 0, (f"{block.where} failed (exit {done.returncode}):\n{block.code}\n"
                                      f"--- stdout:\n{done.stdout[-2000:]}\n--- stderr:\n{done.stderr[-3000:]}")
        self.output = done.stdout

    def serve(self, block: Block) -> None:
        url = re.search(r"https?://[\w.:]+", block.code)
        assert url, f"{block.where}: a server block names the URL it serves in a comment"
        log = open(self.folder / f"server_{block.line}.log", "w")
        server = subprocess.Popen(["bash", "-c", block.code], cwd=self.folder, env=self.env, stdout=log, stderr=log,
                                  start_new_session=True)
        self.servers.append(server)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, (f"{block.where}: the server stopped (exit {server.returncode}):\n"
                                           + (self.folder / f"server_{block.line}.log").read_text()[-3000:])
            try:
                httpx.get(url.group(0), timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise AssertionError(f"{block.where}: {url.group(0)} did not answer within 120 s")

    def close(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)


def matches(expected: str, printed: str) -> bool:
    """Whether ``printed`` is ``expected`` line for line (trailing spaces aside), ``...`` standing for any text."""
    want, got = expected.rstrip("\n").splitlines(), printed.rstrip("\n").splitlines()
    if len(want) != len(got):
        return False
    return all(re.fullmatch(".*".join(map(re.escape, w.rstrip().split("..."))), g.rstrip()) for w, g in zip(want, got))


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    opened: dict[Path, Document] = {}

    def get(doc: Path) -> Document:
        if doc not in opened:
            opened[doc] = Document(tmp_path_factory.mktemp(doc.stem))
        return opened[doc]

    yield get
    for document in opened.values():
        document.close()


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_every_block_the_docs_do_not_mark_runs_as_written(block, documents):
    document = documents(block.doc)
    if block.mark == "output":
        assert matches(block.code, document.output), \
            f"{block.where}: the docs show\n{block.code}\nbut the block before it printed\n{document.output}"
    elif block.mark == "server":
        document.serve(block)
    else:
        document.run(block)


def test_the_docs_keep_running_their_examples():
    """A guard against marking blocks skipped one by one until nothing runs: 14 ran when the markers came in."""
    assert sum(1 for b in BLOCKS if b.language in CODE and not b.skip) >= 14


def test_matching_allows_ellipses_but_not_other_differences():
    assert matches("network calls: 2410\nplot: ...\n", "network calls: 2410\nplot: a/b.png")
    assert not matches("network calls: 2410\n", "network calls: 2411")
    assert not matches("a\nb", "a")
