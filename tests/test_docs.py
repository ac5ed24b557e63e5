"""The documentation is tested: its runnable examples run, docs/cli.md matches the parser, the
README keeps its size and the exact test command, and relative links resolve.

Runnable blocks. A fenced ```bash or ```python block of README.md or docs/*.md is runnable when
the line immediately before its opening fence is `<!-- runnable -->`. Each runnable block runs
on its own, in a fresh temporary working directory:
- python: the block is written to a file and run with this interpreter, the repository first on
  PYTHONPATH;
- bash: `bash -euo pipefail` on the block, with this interpreter's bin directory (hence
  `gcnprune` and `python`) first on PATH; lines starting with `pip install` are dropped.
Short settings: before a block runs, every `--epochs N` (bash) and `epochs=N` (python) in it
is replaced by 10 epochs (`SHORT_EPOCHS`), so the examples show real settings and the test
trains briefly; nothing else is changed. Blocks run two at a time (`WORKERS`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
SHORT_EPOCHS = 10
WORKERS = 2
TIMEOUT_S = 300
README_MAX_LINES = 260
TEST_COMMAND = "pip install '.[test]' && python -m pytest -q"


class Block(NamedTuple):
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def runnable_blocks(path: Path) -> list[Block]:
    """The runnable ```bash / ```python blocks of one Markdown file."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence and i > 0 and lines[i - 1].strip() == MARKER:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            language = fence.group(1)
            if language not in ("bash", "python"):
                raise ValueError(f"{path}:{i + 1}: runnable blocks are bash or python")
            blocks.append(Block(path, i + 1, language, "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        i += 1
    return blocks


def shortened(block: Block) -> str:
    """The block's code with the short settings of the module docstring."""
    if block.language == "bash":
        code = "".join(
            line
            for line in block.code.splitlines(keepends=True)
            if not line.lstrip().startswith("pip install")
        )
        return re.sub(r"--epochs[ =]\d+", f"--epochs {SHORT_EPOCHS}", code)
    return re.sub(r"\bepochs=\d+", f"epochs={SHORT_EPOCHS}", block.code)


def run_block(block: Block) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # blocks run side by side: none shares the worker's compilation cache (conftest.py)
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="docblock_") as work:
        if block.language == "python":
            script = Path(work) / "block.py"
            command = [sys.executable, str(script)]
        else:
            script = Path(work) / "block.sh"
            command = ["bash", "-euo", "pipefail", str(script)]
        script.write_text(shortened(block))
        return subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )


BLOCKS = [block for path in doc_files() for block in runnable_blocks(path)]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, object]:
    """Every runnable block run once, WORKERS at a time: {block name: process or exception}."""

    def attempt(block: Block) -> object:
        try:
            return run_block(block)
        except Exception as err:  # a timeout, reported by the block's own test
            return err

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(attempt, BLOCKS))
    return {block.name: result for block, result in zip(BLOCKS, results, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_runnable_block(block: Block, outcomes: dict[str, object]) -> None:
    outcome = outcomes[block.name]
    if isinstance(outcome, Exception):
        pytest.fail(f"{block.name} did not finish: {outcome!r}")
    assert isinstance(outcome, subprocess.CompletedProcess)
    assert outcome.returncode == 0, (
        f"{block.name} ({block.language}) exited with {outcome.returncode}\n"
        f"--- code ---\n{shortened(block)}--- stdout ---\n{outcome.stdout[-3000:]}\n"
        f"--- stderr ---\n{outcome.stderr[-3000:]}"
    )


def test_readme_has_runnable_examples() -> None:
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert sum(b.language == "python" for b in readme) >= 3
    assert any("gcnprune export" in b.code and "gcnprune bench" in b.code for b in readme)


def test_shortened_settings() -> None:
    bash = Block(ROOT / "README.md", 1, "bash", "pip install .\ngcnprune prune --epochs 200\n")
    assert shortened(bash) == f"gcnprune prune --epochs {SHORT_EPOCHS}\n"
    python = Block(ROOT / "README.md", 1, "python", "cfg(epochs=300, chunk_epochs=50)\n")
    assert shortened(python) == f"cfg(epochs={SHORT_EPOCHS}, chunk_epochs=50)\n"


def test_cli_reference_matches_parser() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_cli
    finally:
        sys.path.remove(str(ROOT / "docs"))
    expected = gen_cli.render()
    assert (ROOT / "docs" / "cli.md").read_text() == expected, (
        "docs/cli.md differs from the parser in gcnprune_jax/cli.py: run python docs/gen_cli.py"
    )


def test_readme_size_and_test_command() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert TEST_COMMAND in text


def test_relative_links_resolve() -> None:
    missing = []
    for path in doc_files():
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_nothing_cites_the_unpublished_spec() -> None:
    """Docs, code and --help cite docs/methods.md sections, never "SPEC §N"."""
    code = sorted((ROOT / "gcnprune_jax").rglob("*.py"))
    citing = [p.name for p in [*doc_files(), *code] if "SPEC §" in p.read_text()]
    assert not citing, citing


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_code_links_to_methods_sections_resolve() -> None:
    methods = (ROOT / "docs" / "methods.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", methods, flags=re.M)}
    used = set()
    for path in (ROOT / "gcnprune_jax").rglob("*.py"):
        used |= set(re.findall(r"docs/methods\.md#([\w-]+)", path.read_text()))
    assert used, "the code cites no section of docs/methods.md"
    assert not used - anchors, sorted(used - anchors)
