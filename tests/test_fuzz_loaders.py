"""Fuzzed loader suite: seeded corrupted SBU and FPHA fixtures, each run through the CLI.

A generator derives every variant from the small, valid fixture trees of test_data_loaders.py (no
real data: its licence forbids copies) and corrupts them in the datasets' own on-disk formats:
truncated lines, extra and missing fields, non-numeric and non-finite values, empty and binary
files, wrong encodings and line endings, missing and extra folders, split files naming missing
files, duplicate entries, unreadable files, a stale cache. Each variant runs
`gcnprune prune --dataset sbu|fpha --data-dir <fixture> --method magnitude --rate 0.5 --epochs 1`
in-process and must exit with status 2, print no traceback, and name the offending file (as
`path:LINE` where a line is at fault) and what was expected.

The random choices (which file, line, field and token) come from `random.Random` seeded with
`SEED` and the variant's name, so every variant is reproducible on its own. The loaders check the
real datasets' known counts; the tests set those counts to the fixture's own, so that the good
fixture is accepted and only the corruption can fail. Training never starts: a good load ends in
a sentinel exception, which a test reports as "accepted silently".
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_data_loaders import (
    FPHA_TEST,
    FPHA_TRAIN,
    fpha_path,
    make_fpha_tree,
    make_sbu_tree,
    write_fpha_file,
    write_sbu_file,
    write_split,
)

from gcnprune_jax import cli, runner
from gcnprune_jax.data import cache, fpha, sbu

SEED = 26

# Frame-count range the tests give both loaders: the fixtures have 3..8 frames per sequence.
T_RANGE = (2, 10)


class Accepted(Exception):
    """Raised instead of training once the dataset has loaded: the variant was accepted."""


# ---------------------------------------------------------------------------------------------
# Fixture trees


@dataclasses.dataclass
class Fixture:
    """A valid fixture tree of one dataset, and how to run the CLI on it."""

    dataset: str  # "sbu" or "fpha"
    root: Path
    frames: dict[str, np.ndarray]  # sequence id -> (T, V, 3) of the good tree
    run: Callable[[], tuple[object, str]]  # -> (exit status or outcome, stderr)

    @property
    def delimiter(self) -> str:
        return "," if self.dataset == "sbu" else " "

    @property
    def n_fields(self) -> int:
        return 91 if self.dataset == "sbu" else 64

    @property
    def split(self) -> Path:
        return self.root / fpha.SPLIT_FILE

    @property
    def annotations(self) -> Path:
        return self.root / fpha.ANNOTATION_DIR

    def file(self, seq_id: str) -> Path:
        if self.dataset == "sbu":
            return self.root / seq_id / "skeleton_pos.txt"
        return fpha_path(self.root, seq_id)

    def ids(self) -> list[str]:
        return sorted(self.frames)


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the error message must contain.

    path: the offending file or folder. line: its 1-based line, ANY_LINE for "some line" (binary
    content, where the first bad byte decides), or None where no line is at fault. also: further
    substrings the message must contain.
    """

    path: Path
    line: int | None = None
    also: tuple[str, ...] = ()


ANY_LINE = -1


def _patch_counts(monkeypatch, fx: Fixture) -> None:
    """Make the known-count checks expect this fixture's counts instead of the real dataset's."""
    lengths = {seq_id: len(f) for seq_id, f in fx.frames.items()}
    if fx.dataset == "sbu":
        labels = [int(seq_id.split("/")[1]) - 1 for seq_id in lengths]
        folds = [sbu._FOLD_OF_SET[seq_id.split("/")[0]] for seq_id in lengths]
        monkeypatch.setattr(sbu, "SBU_N_SEQUENCES", len(lengths))
        monkeypatch.setattr(sbu, "SBU_LABEL_COUNTS", tuple(np.bincount(labels, minlength=8)))
        monkeypatch.setattr(sbu, "SBU_FOLD_SIZES", tuple(np.bincount(folds, minlength=5)))
        monkeypatch.setattr(sbu, "SBU_T_RANGE", T_RANGE)
        monkeypatch.setattr(sbu, "SBU_TOTAL_FRAMES", sum(lengths.values()))
    else:
        train = [e for e, _ in FPHA_TRAIN]
        split_frames = (
            sum(t for e, t in lengths.items() if e in train),
            sum(t for e, t in lengths.items() if e not in train),
        )
        monkeypatch.setattr(fpha, "FPHA_SPLIT_SIZES", (len(FPHA_TRAIN), len(FPHA_TEST)))
        monkeypatch.setattr(fpha, "FPHA_T_RANGE", T_RANGE)
        monkeypatch.setattr(fpha, "FPHA_TOTAL_FRAMES", sum(lengths.values()))
        monkeypatch.setattr(fpha, "FPHA_SPLIT_FRAMES", split_frames)


def _run_cli(dataset: str, root: Path, out: Path, capsys) -> tuple[object, str]:
    """Run `gcnprune prune` in-process; returns (exit status or outcome, stderr)."""
    argv = ["prune", "--dataset", dataset, "--data-dir", str(root), "--method", "magnitude"]
    argv += ["--rate", "0.5", "--epochs", "1", "--out", str(out)]
    capsys.readouterr()
    try:
        status: object = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    except Accepted:
        status = "accepted"
    except Exception:
        status = "traceback"
        print(traceback.format_exc(), file=sys.stderr)
    return status, capsys.readouterr().err


@pytest.fixture
def build(tmp_path, monkeypatch, capsys):
    """build(dataset) -> a fresh valid Fixture in its own temporary directory (and cache)."""
    # A cache private to this test: a variant must never meet an entry of an earlier good load,
    # except where a variant does that on purpose (the stale-cache family).
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("GCNPRUNE_DATA_DIR", raising=False)
    real_load = runner.load_dataset

    def load_then_stop(*args, **kwargs):
        real_load(*args, **kwargs)
        raise Accepted

    monkeypatch.setattr(runner, "load_dataset", load_then_stop)

    def _build(dataset: str) -> Fixture:
        root = tmp_path / "data" / dataset
        frames = make_sbu_tree(root) if dataset == "sbu" else make_fpha_tree(root)
        out = tmp_path / "out"
        fx = Fixture(dataset, root, frames, lambda: _run_cli(dataset, root, out, capsys))
        _patch_counts(monkeypatch, fx)
        return fx

    return _build


# ---------------------------------------------------------------------------------------------
# Helpers that rewrite one file


def _read_lines(path: Path) -> tuple[list[str], str]:
    """The lines of a good fixture file (without their endings) and its line ending."""
    raw = path.read_bytes().decode("ascii")
    newline = "\r\n" if "\r\n" in raw else "\n"
    assert raw.endswith(newline)
    return raw[: -len(newline)].split(newline), newline


def _write_lines(path: Path, lines: list[str], newline: str, *, final: bool = True) -> None:
    path.write_bytes((newline.join(lines) + (newline if final else "")).encode("latin-1"))


def _pick(fx: Fixture, rng: random.Random) -> tuple[Path, list[str], str]:
    """A random sequence file of the fixture: (path, lines, line ending)."""
    path = fx.file(rng.choice(fx.ids()))
    return (path, *_read_lines(path))


def _number(rng: random.Random) -> str:
    return repr(round(rng.uniform(-1.0, 2.0), rng.randint(1, 6)))


def _rmtree_up(path: Path, stop: Path) -> None:
    """Remove `path`, then every parent folder left empty below `stop` (keeps the layout legal)."""
    shutil.rmtree(path)
    parent = path.parent
    while parent != stop and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _valid_rows(fx: Fixture, rng: random.Random, n: int, first: int = 0) -> list[str]:
    """`n` well-formed rows numbered from `first` (SBU: raw frame number; FPHA: row index)."""
    rows = []
    for t in range(first, first + n):
        values = [_number(rng) for _ in range(fx.n_fields - 1)]
        head = str(t) if fx.dataset == "sbu" else f"{t:04d}"
        rows.append(fx.delimiter.join([head, *values]))
    return rows


# ---------------------------------------------------------------------------------------------
# The variant generator: family functions registered per dataset


Mutation = Callable[[Fixture, random.Random], Expect]
VARIANTS: dict[str, tuple[str, Mutation]] = {}
FAMILIES: dict[str, str] = {}  # family -> group title, for docs/reliability.md


def family(group: str, *datasets: str, repeat: int = 1):
    """Register a family: one variant per dataset and repetition (each with its own seed)."""

    def register(fn: Mutation) -> Mutation:
        name = fn.__name__.strip("_").replace("_", "-")
        FAMILIES[name] = group
        for dataset in datasets or ("sbu", "fpha"):
            for k in range(1, repeat + 1):
                suffix = f"-{k}" if repeat > 1 else ""
                VARIANTS[f"{dataset}-{name}{suffix}"] = (dataset, fn)
        return fn

    return register


ROWS = "malformed rows"
VALUES = "non-numeric and non-finite values"
BYTES = "empty, binary and wrongly encoded files, line endings"
FILES = "unreadable files"
LAYOUT = "missing, extra and misplaced folders"
SPLIT = "FPHA split file"
COUNTS = "counts that do not match (rows or sequences removed or added)"
CACHE = "stale cache"


# Malformed rows ------------------------------------------------------------------------------


@family(ROWS, repeat=2)
def truncated_line(fx: Fixture, rng: random.Random) -> Expect:
    """A line cut short mid-row (at least one separator lost); later lines intact."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    cut = rng.randint(1, lines[k].rindex(fx.delimiter))
    lines[k] = lines[k][:cut]
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, (f"expected {fx.n_fields}",))


@family(ROWS)
def truncated_file(fx: Fixture, rng: random.Random) -> Expect:
    """The file ends in the middle of its last row, without a line ending."""
    path, lines, nl = _pick(fx, rng)
    lines[-1] = lines[-1][: rng.randint(1, lines[-1].rindex(fx.delimiter))]
    _write_lines(path, lines, nl, final=False)
    return Expect(path, len(lines), (f"expected {fx.n_fields}",))


@family(ROWS, repeat=2)
def missing_field(fx: Fixture, rng: random.Random) -> Expect:
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    fields = lines[k].split(fx.delimiter)
    del fields[rng.randrange(1, len(fields))]
    lines[k] = fx.delimiter.join(fields)
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, (f"expected {fx.n_fields}", f"found {fx.n_fields - 1}"))


@family(ROWS, repeat=2)
def extra_field(fx: Fixture, rng: random.Random) -> Expect:
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    fields = lines[k].split(fx.delimiter)
    fields.insert(rng.randint(1, len(fields)), _number(rng))
    lines[k] = fx.delimiter.join(fields)
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, (f"expected {fx.n_fields}", f"found {fx.n_fields + 1}"))


@family(ROWS, "sbu")
def trailing_separator(fx: Fixture, rng: random.Random) -> Expect:
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    lines[k] += ","
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, ("expected 91", "found 92"))


@family(ROWS)
def wrong_separator(fx: Fixture, rng: random.Random) -> Expect:
    """One row separated by another character (semicolons, bars, spaces or tabs for SBU's commas;
    commas for FPHA's spaces; FPHA takes any run of spaces and tabs)."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    other = [";", "|", " ", "\t"] if fx.dataset == "sbu" else [",", ";", "|"]
    lines[k] = lines[k].replace(fx.delimiter, rng.choice(other))
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, ("expected",))


@family(ROWS)
def blank_line(fx: Fixture, rng: random.Random) -> Expect:
    """An empty or whitespace-only line before some row (also as the first line)."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    lines.insert(k, rng.choice(["", "  ", "\t"]))
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, ("blank line",))


@family(ROWS)
def duplicate_row(fx: Fixture, rng: random.Random) -> Expect:
    """A row repeated right after itself: its frame number repeats."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    lines.insert(k + 1, lines[k])
    _write_lines(path, lines, nl)
    return Expect(path, k + 2, ("frame",))


@family(ROWS)
def swapped_rows(fx: Fixture, rng: random.Random) -> Expect:
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines) - 1)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]
    _write_lines(path, lines, nl)
    # FPHA's frame index must equal the row index; SBU's raw frame numbers must be consecutive,
    # starting anywhere, so swapping the first two rows shows on the second.
    line = k + 2 if fx.dataset == "sbu" and k == 0 else k + 1
    return Expect(path, line, ("frame",))


@family(ROWS, repeat=2)
def wrong_frame_number(fx: Fixture, rng: random.Random) -> Expect:
    """A frame number that skips, goes back, or is not an integer."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(1, len(lines))
    fields = lines[k].split(fx.delimiter)
    value = int(fields[0]) + rng.choice([-1, 2, 7, 1000])
    fields[0] = rng.choice([str(value), f"{int(fields[0])}.5"])
    if fx.dataset == "fpha" and "." not in fields[0]:
        fields[0] = f"{value:04d}"
    lines[k] = fx.delimiter.join(fields)
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, ("frame",))


# Values ----------------------------------------------------------------------------------------

NON_NUMERIC = ["abc", "1.2.3", "--1", "0x1A", "1_000", "e5", "1e", "N/A", "#", "1.5f", "TRUE"]
NON_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "+INF", "1e39", "-3.5e38", "1e400"]


def _replace_field(fx: Fixture, rng: random.Random, tokens: list[str]) -> Expect:
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    fields = lines[k].split(fx.delimiter)
    col = rng.randrange(len(fields))
    fields[col] = rng.choice(tokens)
    lines[k] = fx.delimiter.join(fields)
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, (f"field {col + 1}", "expected"))


@family(VALUES, repeat=3)
def non_numeric(fx: Fixture, rng: random.Random) -> Expect:
    return _replace_field(fx, rng, NON_NUMERIC)


@family(VALUES, repeat=3)
def non_finite(fx: Fixture, rng: random.Random) -> Expect:
    return _replace_field(fx, rng, NON_FINITE)


@family(VALUES, "sbu")
def empty_field(fx: Fixture, rng: random.Random) -> Expect:
    return _replace_field(fx, rng, [""])


@family(VALUES, "fpha")
def decimal_comma(fx: Fixture, rng: random.Random) -> Expect:
    return _replace_field(fx, rng, ["1,5", "-0,25"])


# Bytes: empty, binary, encodings, line endings -------------------------------------------------


@family(BYTES)
def empty_file(fx: Fixture, rng: random.Random) -> Expect:
    path, _, _ = _pick(fx, rng)
    path.write_bytes(b"")
    return Expect(path, None, ("empty",))


@family(BYTES)
def whitespace_file(fx: Fixture, rng: random.Random) -> Expect:
    path, _, _ = _pick(fx, rng)
    path.write_bytes(rng.choice([b"\n", b"\r\n\r\n", b"   \n\t\n"]))
    return Expect(path, None, ("empty",))


@family(BYTES)
def binary_file(fx: Fixture, rng: random.Random) -> Expect:
    """Binary content under the skeleton file's name (a PNG or gzip header, then random bytes)."""
    path, _, _ = _pick(fx, rng)
    header = rng.choice([b"\x89PNG\r\n\x1a\n", b"\x1f\x8b\x08\x00"])
    path.write_bytes(header + rng.randbytes(rng.randint(16, 400)))
    return Expect(path, ANY_LINE)


@family(BYTES)
def binary_ascii_file(fx: Fixture, rng: random.Random) -> Expect:
    """Binary content made only of ASCII bytes, NULs among them (e.g. an ELF header)."""
    path, _, _ = _pick(fx, rng)
    body = bytes(rng.randrange(128) for _ in range(rng.randint(16, 200)))
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + body)
    return Expect(path, 1)


@family(BYTES)
def utf16_bom(fx: Fixture, rng: random.Random) -> Expect:
    path, lines, nl = _pick(fx, rng)
    path.write_bytes((nl.join(lines) + nl).encode(rng.choice(["utf-16", "utf-16-be"])))
    if not path.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff")):  # utf-16-be has no BOM
        path.write_bytes(b"\xfe\xff" + path.read_bytes())
    return Expect(path, 1)


@family(BYTES)
def utf16_no_bom(fx: Fixture, rng: random.Random) -> Expect:
    """UTF-16-LE without a byte-order mark: all bytes ASCII, every other one NUL."""
    path, lines, nl = _pick(fx, rng)
    path.write_bytes((nl.join(lines) + nl).encode("utf-16-le"))
    return Expect(path, 1)


@family(BYTES)
def utf8_bom(fx: Fixture, rng: random.Random) -> Expect:
    path, _, _ = _pick(fx, rng)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return Expect(path, 1)


@family(BYTES, repeat=2)
def latin1_byte(fx: Fixture, rng: random.Random) -> Expect:
    """A latin-1 (or UTF-8) character inside a value: a degree sign, a minus sign, an accent."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    fields = lines[k].split(fx.delimiter)
    col = rng.randrange(1, len(fields))
    fields[col] += rng.choice(["\xb0", "\xe9", "\xa0"])
    lines[k] = fx.delimiter.join(fields)
    data = (nl.join(lines) + nl).encode(rng.choice(["latin-1", "utf-8"]))
    path.write_bytes(data)
    return Expect(path, k + 1)


@family(BYTES)
def cr_line_endings(fx: Fixture, rng: random.Random) -> Expect:
    """Classic Mac line endings: CR alone, so the whole file is one line."""
    path, lines, _ = _pick(fx, rng)
    _write_lines(path, lines, "\r")
    return Expect(path, 1, ("carriage return",))


@family(BYTES)
def double_cr(fx: Fixture, rng: random.Random) -> Expect:
    """One line ending in CR CR LF (a CRLF file converted once more)."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    lines[k] += "\r" if nl == "\r\n" else "\r\r"
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, ("carriage return",))


@family(BYTES)
def lone_cr(fx: Fixture, rng: random.Random) -> Expect:
    """A CR inside a row (not followed by LF)."""
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    pos = rng.randrange(1, len(lines[k]) - 1)
    lines[k] = lines[k][:pos] + "\r" + lines[k][pos:]
    _write_lines(path, lines, nl)
    return Expect(path, k + 1, ("carriage return",))


# Unreadable files --------------------------------------------------------------------------------
# Tests run as root, so chmod 000 would not stop a read: a directory, a dangling symlink, a
# symlink loop or a FIFO stands where the file is expected instead.


@family(FILES)
def file_is_directory(fx: Fixture, rng: random.Random) -> Expect:
    path, _, _ = _pick(fx, rng)
    path.unlink()
    path.mkdir()
    (path / "skeleton.txt").write_text("0\n")
    return Expect(path, None, ("directory",))


@family(FILES)
def dangling_symlink(fx: Fixture, rng: random.Random) -> Expect:
    path, _, _ = _pick(fx, rng)
    path.unlink()
    path.symlink_to(path.parent / "moved-away" / path.name)
    return Expect(path, None, ("expected",))


@family(FILES)
def symlink_loop(fx: Fixture, rng: random.Random) -> Expect:
    path, _, _ = _pick(fx, rng)
    path.unlink()
    path.symlink_to(path.name)
    return Expect(path, None, ("expected",))


@family(FILES)
def fifo(fx: Fixture, rng: random.Random) -> Expect:
    """A named pipe: reading it would block forever, so it must be refused unread."""
    path, _, _ = _pick(fx, rng)
    path.unlink()
    os.mkfifo(path)
    return Expect(path, None, ("expected",))


@family(FILES)
def data_dir_missing(fx: Fixture, rng: random.Random) -> Expect:
    shutil.rmtree(fx.root)
    return Expect(fx.root, None, ("--data-dir",))


@family(FILES)
def data_dir_is_file(fx: Fixture, rng: random.Random) -> Expect:
    shutil.rmtree(fx.root)
    fx.root.write_bytes(rng.randbytes(64))
    return Expect(fx.root, None, ("not a directory",))


# Layout (SBU folders) ----------------------------------------------------------------------------


def _sbu_seq_dirs(fx: Fixture) -> list[Path]:
    return [fx.root / seq_id for seq_id in fx.ids()]


@family(LAYOUT, "sbu")
def unknown_set_folder(fx: Fixture, rng: random.Random) -> Expect:
    name = rng.choice(["s99s98", "S01S02", "s01s02_copy", "s1s2"])
    write_sbu_file(fx.root / name / "01" / "001" / "skeleton_pos.txt", np.zeros((4, 30, 3)))
    return Expect(fx.root, None, (name,))


@family(LAYOUT, "sbu")
def unknown_class_folder(fx: Fixture, rng: random.Random) -> Expect:
    set_dir = rng.choice(_sbu_seq_dirs(fx)).parent.parent
    name = rng.choice(["09", "00", "1", "01_old"])
    (set_dir / name / "001").mkdir(parents=True)
    return Expect(set_dir / name, None, (repr(name),))


@family(LAYOUT, "sbu")
def unknown_sequence_folder(fx: Fixture, rng: random.Random) -> Expect:
    class_dir = rng.choice(_sbu_seq_dirs(fx)).parent
    name = rng.choice(["01a", "4", "0001", "new", "001 (copy)"])
    (class_dir / name).mkdir()
    return Expect(class_dir / name, None, (repr(name),))


@family(LAYOUT, "sbu")
def empty_sequence_folder(fx: Fixture, rng: random.Random) -> Expect:
    """An extra sequence folder without its skeleton_pos.txt."""
    class_dir = rng.choice(_sbu_seq_dirs(fx)).parent
    new = class_dir / f"{len(list(class_dir.iterdir())) + 1:03d}"
    new.mkdir()
    return Expect(new / "skeleton_pos.txt", None, ("not found",))


@family(LAYOUT, "sbu")
def empty_class_folder(fx: Fixture, rng: random.Random) -> Expect:
    set_dir = rng.choice(_sbu_seq_dirs(fx)).parent.parent
    new = set_dir / rng.choice([c for c in ("02", "04", "06", "07") if not (set_dir / c).exists()])
    new.mkdir()
    return Expect(new, None, ("no sequence folders",))


@family(LAYOUT, "sbu")
def empty_set_folder(fx: Fixture, rng: random.Random) -> Expect:
    new = fx.root / rng.choice(["s04s02", "s07s03", "s03s06"])
    new.mkdir()
    return Expect(new, None, ("no class folders",))


@family(LAYOUT, "sbu")
def sequence_folder_is_file(fx: Fixture, rng: random.Random) -> Expect:
    """A plain file where a sequence folder should be (e.g. an unpacked-zip mishap)."""
    seq_dir = rng.choice(_sbu_seq_dirs(fx))
    text = (seq_dir / "skeleton_pos.txt").read_bytes()
    shutil.rmtree(seq_dir)
    seq_dir.write_bytes(text)
    return Expect(seq_dir, None, ("expected",))


@family(LAYOUT, "sbu")
def class_folder_is_file(fx: Fixture, rng: random.Random) -> Expect:
    class_dir = rng.choice(_sbu_seq_dirs(fx)).parent
    shutil.rmtree(class_dir)
    class_dir.write_bytes(b"")
    return Expect(class_dir, None, ("expected",))


@family(LAYOUT, "sbu")
def set_folder_is_symlink(fx: Fixture, rng: random.Random) -> Expect:
    """A set folder that is a dangling symbolic link (its target moved away)."""
    set_dir = rng.choice(_sbu_seq_dirs(fx)).parent.parent
    shutil.rmtree(set_dir)
    set_dir.symlink_to(fx.root.parent / "elsewhere" / set_dir.name)
    return Expect(set_dir, None, ("expected",))


# Counts: rows or sequences removed or added, files still well formed ------------------------------


@family(COUNTS)
def dropped_rows(fx: Fixture, rng: random.Random) -> Expect:
    """A valid file that lost its last row: only the total frame count shows it."""
    path, lines, nl = _pick(fx, rng)
    _write_lines(path, lines[:-1], nl)
    counted = fx.root if fx.dataset == "sbu" else fx.annotations
    return Expect(counted, None, ("total frames", "expected"))


@family(COUNTS)
def too_short(fx: Fixture, rng: random.Random) -> Expect:
    """A sequence of a single frame: below the dataset's frame-count range."""
    path, lines, nl = _pick(fx, rng)
    _write_lines(path, lines[:1], nl)
    return Expect(path, None, ("1 frames", f"expected between {T_RANGE[0]} and {T_RANGE[1]}"))


@family(COUNTS)
def too_long(fx: Fixture, rng: random.Random) -> Expect:
    path, lines, nl = _pick(fx, rng)
    first = int(lines[-1].split(fx.delimiter)[0]) + 1
    n = T_RANGE[1] + 1 + rng.randrange(5) - len(lines)
    _write_lines(path, lines + _valid_rows(fx, rng, n, first), nl)
    return Expect(path, None, (f"expected between {T_RANGE[0]} and {T_RANGE[1]}",))


@family(COUNTS, "sbu")
def missing_sequence_folder(fx: Fixture, rng: random.Random) -> Expect:
    _rmtree_up(rng.choice(_sbu_seq_dirs(fx)), fx.root)
    return Expect(fx.root, None, ("sequences", f"expected {len(fx.frames)}"))


@family(COUNTS, "sbu")
def missing_class_folder(fx: Fixture, rng: random.Random) -> Expect:
    _rmtree_up(rng.choice(_sbu_seq_dirs(fx)).parent, fx.root)
    return Expect(fx.root, None, ("sequences", f"expected {len(fx.frames)}"))


@family(COUNTS, "sbu")
def missing_set_folder(fx: Fixture, rng: random.Random) -> Expect:
    shutil.rmtree(rng.choice(_sbu_seq_dirs(fx)).parent.parent)
    return Expect(fx.root, None, ("sequences", f"expected {len(fx.frames)}"))


@family(COUNTS, "sbu")
def extra_sequence_folder(fx: Fixture, rng: random.Random) -> Expect:
    """A well-formed extra sequence in a new folder (of an existing or a new class or set)."""
    set_name = rng.choice(["s01s02", "s02s03", "s06s02", "s04s02"])
    seq_id = f"{set_name}/{rng.choice(['01', '05', '08'])}/{rng.choice(['003', '004', '009'])}"
    write_sbu_file(fx.root / seq_id / "skeleton_pos.txt", np.full((5, 30, 3), 0.5))
    return Expect(fx.root, None, ("sequences", f"found {len(fx.frames) + 1}"))


@family(COUNTS, "sbu")
def duplicate_sequence(fx: Fixture, rng: random.Random) -> Expect:
    """A sequence folder copied under the next free number of its class."""
    seq_dir = rng.choice(_sbu_seq_dirs(fx))
    copy = seq_dir.parent / f"{len(list(seq_dir.parent.iterdir())) + 1:03d}"
    shutil.copytree(seq_dir, copy)
    return Expect(fx.root, None, ("sequences", f"found {len(fx.frames) + 1}"))


@family(COUNTS, "fpha")
def split_entry_removed(fx: Fixture, rng: random.Random) -> Expect:
    """One entry less, with the header count adjusted: a consistent but short split."""
    train, test = list(FPHA_TRAIN), list(FPHA_TEST)
    rng.choice([train, test]).pop(rng.randrange(2))
    write_split(fx.root, train, test)
    return Expect(fx.split, None, ("sequence counts", "expected"))


@family(COUNTS, "fpha")
def split_entry_added(fx: Fixture, rng: random.Random) -> Expect:
    """One valid extra entry (its file exists), with the header count adjusted."""
    train, test = list(FPHA_TRAIN), list(FPHA_TEST)
    entry = (f"Subject_{rng.randint(1, 6)}/give_card/{rng.randint(1, 9)}", 40)
    rng.choice([train, test]).append(entry)
    write_split(fx.root, train, test)
    write_fpha_file(fpha_path(fx.root, entry[0]), np.full((5, 21, 3), 100.0))
    return Expect(fx.split, None, ("sequence counts", "expected"))


# FPHA split file ---------------------------------------------------------------------------------


def _split_lines(fx: Fixture) -> list[str]:
    return fx.split.read_text().splitlines()


def _write_split_lines(fx: Fixture, lines: list[str]) -> None:
    fx.split.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _entry_line(fx: Fixture, rng: random.Random) -> int:
    """0-based index of a random entry line (not a header)."""
    return rng.choice([i for i, line in enumerate(_split_lines(fx)) if "/" in line])


@family(SPLIT, "fpha")
def split_missing(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.unlink()
    return Expect(fx.split, None, ("not found", "expected"))


@family(SPLIT, "fpha")
def split_empty(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.write_bytes(rng.choice([b"", b"\n", b"\n\n  \n"]))
    return Expect(fx.split, None, ("expected",))


@family(SPLIT, "fpha")
def split_binary(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.write_bytes(b"PK\x03\x04" + rng.randbytes(300))
    return Expect(fx.split, ANY_LINE)


@family(SPLIT, "fpha")
def split_utf16(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.write_bytes(fx.split.read_text().encode(rng.choice(["utf-16", "utf-16-le"])))
    return Expect(fx.split, 1)


@family(SPLIT, "fpha")
def split_latin1(fx: Fixture, rng: random.Random) -> Expect:
    lines = _split_lines(fx)
    i = _entry_line(fx, rng)
    lines[i] = lines[i].replace("_", "\xe9", 1)
    _write_split_lines(fx, lines)
    return Expect(fx.split, i + 1)


@family(SPLIT, "fpha")
def split_cr_line_endings(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.write_bytes(fx.split.read_bytes().replace(b"\n", b"\r"))
    return Expect(fx.split, 1, ("carriage return",))


@family(SPLIT, "fpha")
def split_is_directory(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.unlink()
    fx.split.mkdir()
    return Expect(fx.split, None, ("directory",))


@family(SPLIT, "fpha")
def split_dangling_symlink(fx: Fixture, rng: random.Random) -> Expect:
    fx.split.unlink()
    fx.split.symlink_to(fx.root / "old" / fpha.SPLIT_FILE)
    return Expect(fx.split, None, ("expected",))


@family(SPLIT, "fpha")
def split_names_missing_file(fx: Fixture, rng: random.Random) -> Expect:
    """The split names a sequence whose skeleton.txt (or whole folder) is not there."""
    i = _entry_line(fx, rng)
    entry = _split_lines(fx)[i].split()[0]
    path = fpha_path(fx.root, entry)
    if rng.random() < 0.5:
        path.unlink()
    else:
        shutil.rmtree(path.parent)
    return Expect(path, None, (f"{fx.split}:{i + 1}",))


@family(SPLIT, "fpha")
def split_names_missing_subject(fx: Fixture, rng: random.Random) -> Expect:
    lines = _split_lines(fx)
    i = _entry_line(fx, rng)
    entry, label = lines[i].split()
    entry = entry.replace(entry.split("/")[0], rng.choice(["Subject_7", "Subject_0"]))
    lines[i] = f"{entry} {label}"
    _write_split_lines(fx, lines)
    return Expect(fpha_path(fx.root, entry), None, (f"{fx.split}:{i + 1}",))


@family(SPLIT, "fpha")
def split_duplicate_entry(fx: Fixture, rng: random.Random) -> Expect:
    """An entry listed twice in the same section (header count adjusted)."""
    train, test = list(FPHA_TRAIN), list(FPHA_TEST)
    train.append(train[rng.randrange(len(train))])
    write_split(fx.root, train, test)
    return Expect(fx.split, len(train) + 1, ("duplicate entry",))


@family(SPLIT, "fpha")
def split_train_test_overlap(fx: Fixture, rng: random.Random) -> Expect:
    train, test = list(FPHA_TRAIN), list(FPHA_TEST)
    test.append(rng.choice(train))
    write_split(fx.root, train, test)
    return Expect(fx.split, len(train) + len(test) + 2, ("duplicate entry",))


@family(SPLIT, "fpha")
def split_header_count(fx: Fixture, rng: random.Random) -> Expect:
    n_train, n_test = len(FPHA_TRAIN), len(FPHA_TEST)
    if rng.random() < 0.5:
        header, line = (f"Training {n_train + rng.choice([-1, 1, 600])}", f"Test {n_test}"), 1
    else:
        header, line = (f"Training {n_train}", f"Test {n_test + rng.choice([-1, 1])}"), n_train + 2
    write_split(fx.root, FPHA_TRAIN, FPHA_TEST, header)
    return Expect(fx.split, line, ("announces",))


@family(SPLIT, "fpha")
def split_missing_header(fx: Fixture, rng: random.Random) -> Expect:
    lines = _split_lines(fx)
    i = rng.choice([i for i, line in enumerate(lines) if "/" not in line])
    del lines[i]
    _write_split_lines(fx, lines)
    return Expect(fx.split, 1 if i == 0 else None, ("expected",))


@family(SPLIT, "fpha", repeat=2)
def split_bad_entry(fx: Fixture, rng: random.Random) -> Expect:
    """An entry line with an extra or missing field, a non-numeric label or a bad path."""
    lines = _split_lines(fx)
    i = _entry_line(fx, rng)
    entry, label = lines[i].split()
    lines[i] = rng.choice(
        [
            f"{entry} {label} {label}",
            entry,
            f"{entry} label{label}",
            f"{entry} -{label}",
            f"{entry} {label}.0",
            f"{entry.rsplit('/', 1)[0]} {label}",
            f"{entry}/skeleton.txt {label}",
            f"{entry},{label}",
        ]
    )
    _write_split_lines(fx, lines)
    return Expect(fx.split, i + 1, ("expected",))


@family(SPLIT, "fpha")
def split_label_mismatch(fx: Fixture, rng: random.Random) -> Expect:
    lines = _split_lines(fx)
    i = _entry_line(fx, rng)
    entry, label = lines[i].split()
    lines[i] = f"{entry} {(int(label) + rng.randint(1, 44)) % 45}"
    _write_split_lines(fx, lines)
    return Expect(fx.split, i + 1, ("inconsistent",))


@family(SPLIT, "fpha")
def split_unknown_action(fx: Fixture, rng: random.Random) -> Expect:
    lines = _split_lines(fx)
    i = _entry_line(fx, rng)
    entry, label = lines[i].split()
    subject, action, seq = entry.split("/")
    wrong = rng.choice([action.upper(), action + "s", action.replace("_", "-"), "dance"])
    lines[i] = f"{subject}/{wrong}/{seq} {label}"
    _write_split_lines(fx, lines)
    return Expect(fx.split, i + 1, ("unknown action",))


@family(SPLIT, "fpha")
def split_blank_line(fx: Fixture, rng: random.Random) -> Expect:
    lines = _split_lines(fx)
    i = rng.randrange(1, len(lines))
    lines.insert(i, rng.choice(["", "   "]))
    _write_split_lines(fx, lines)
    return Expect(fx.split, i + 1, ("blank line",))


@family(SPLIT, "fpha")
def annotation_dir_missing(fx: Fixture, rng: random.Random) -> Expect:
    shutil.rmtree(fx.annotations)
    return Expect(fx.annotations, None, ("expected",))


@family(SPLIT, "fpha")
def annotation_dir_is_file(fx: Fixture, rng: random.Random) -> Expect:
    shutil.rmtree(fx.annotations)
    fx.annotations.write_bytes(b"")
    return Expect(fx.annotations, None, ("expected",))


# Stale cache -------------------------------------------------------------------------------------


@family(CACHE)
def stale_cache(fx: Fixture, rng: random.Random) -> Expect:
    """A good load is cached; then one file is replaced (new inode, as rsync or an editor does)
    by a corrupt one of the same size, its modification time restored."""
    assert fx.run()[0] == "accepted"
    assert list(Path(os.environ[cache.CACHE_ENV]).glob(f"{fx.dataset}-*.json")), "nothing cached"
    path, lines, nl = _pick(fx, rng)
    k = rng.randrange(len(lines))
    fields = lines[k].split(fx.delimiter)
    col = rng.randrange(1, len(fields))
    fields[col] = "x" * len(fields[col])
    lines[k] = fx.delimiter.join(fields)
    st = path.stat()
    tmp = path.with_name(path.name + ".tmp")
    _write_lines(tmp, lines, nl)
    os.replace(tmp, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    return Expect(path, k + 1, (f"field {col + 1}",))


# ---------------------------------------------------------------------------------------------
# The tests


def _check_message(err: str, expect: Expect) -> None:
    path = re.escape(str(expect.path))
    if expect.line is None:
        # The path itself, not a longer one that merely starts with it (e.g. "001" in "0011").
        assert re.search(path + r"(?![\w.-])", err), f"message does not name {expect.path}"
    elif expect.line == ANY_LINE:
        assert re.search(path + r":\d+:", err), f"message does not name {expect.path}:LINE"
    else:
        where = f"{expect.path}:{expect.line}:"
        assert where in err, f"message does not name {where}"
    assert "expected" in err.lower(), "message does not say what was expected"
    for part in expect.also:
        assert part in err, f"message lacks {part!r}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_corrupted_fixture_exits_2_naming_the_file(name, build):
    dataset, mutate = VARIANTS[name]
    fx = build(dataset)
    expect = mutate(fx, random.Random(f"{SEED}/{name}"))
    status, err = fx.run()
    assert status != "accepted", f"{name}: the corrupted fixture was accepted silently"
    assert "Traceback" not in err, f"{name}: traceback\n{err}"
    assert status == 2, f"{name}: exit status {status}\n{err}"
    assert err.startswith("gcnprune: error: "), err
    try:
        _check_message(err, expect)
    except AssertionError as exc:
        raise AssertionError(f"{name}: {exc}\n{err}") from None
    assert not (fx.root.parent.parent / "out").exists(), "an error left an --out directory"


@pytest.mark.parametrize("dataset", ["sbu", "fpha"])
def test_good_fixture_is_accepted(dataset, build):
    # Without this, a variant could "fail" for a reason other than its corruption.
    fx = build(dataset)
    status, err = fx.run()
    assert status == "accepted", err
    # ... and a second run is served from the cache, which the corruptions must get past.
    assert len(list(Path(os.environ[cache.CACHE_ENV]).glob(f"{dataset}-*.npz"))) == 1
    assert fx.run()[0] == "accepted"


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.parent.rglob("*")):
        h.update(str(p.relative_to(root.parent)).encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generator_is_seeded_and_large_enough(build, tmp_path):
    assert len(VARIANTS) >= 50
    assert {d for d, _ in VARIANTS.values()} == {"sbu", "fpha"}
    # The same variant built twice gives the same bytes; another seed gives other bytes.
    for name in ["sbu-truncated-line-1", "fpha-non-finite-2", "sbu-binary-file", "fpha-fifo"]:
        dataset, mutate = VARIANTS[name]
        digests = []
        for seed in (f"{SEED}/{name}", f"{SEED}/{name}", f"{SEED + 1}/{name}"):
            fx = build(dataset)
            mutate(fx, random.Random(seed))
            digests.append(_tree_digest(fx.root))
            shutil.rmtree(fx.root)
        assert digests[0] == digests[1], name
        if name != "fpha-fifo":
            assert digests[0] != digests[2], name
