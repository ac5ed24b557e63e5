"""FPHA (First-Person Hand Action Benchmark): 3D right-hand poses, 45 classes, official 1:1 split.

Layout:
  <root>/data_split_action_recognition.txt
      "Training <n>", n lines "Subject_k/<action>/<seq> <label>", "Test <m>", m such lines.
  <root>/Hand_pose_annotation_v1/Subject_k/<action>/<seq>/skeleton.txt
      one row per frame: "t x1 y1 z1 ... x21 y21 z21" (64 space-separated fields, world mm),
      t = the 0-based row index.

Only the sequences the split names are read: the three empty annotation files of the real data
lie outside the split and are ignored. Nodes: the 21 joints in README order, bones the 20-edge
tree rooted at the wrist (data README §2.3-2.4).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from gcnprune_jax.data import cache
from gcnprune_jax.data._text import check_regular_file, read_table, read_text
from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.errors import DataError

# Label = index in this tuple (the split file's label column; folder names, e.g. "enveloppe").
FPHA_CLASSES: tuple[str, ...] = (
    "open_juice_bottle", "close_juice_bottle", "pour_juice_bottle", "open_peanut_butter",
    "close_peanut_butter", "prick", "sprinkle", "scoop_spoon", "put_sugar", "stir",
    "open_milk", "close_milk", "pour_milk", "drink_mug", "put_tea_bag",
    "put_salt", "open_liquid_soap", "close_liquid_soap", "pour_liquid_soap", "wash_sponge",
    "flip_sponge", "scratch_sponge", "squeeze_sponge", "open_soda_can", "use_flash",
    "write", "tear_paper", "squeeze_paper", "open_letter", "take_letter_from_enveloppe",
    "read_letter", "flip_pages", "use_calculator", "light_candle", "charge_cell_phone",
    "unfold_glasses", "clean_glasses", "open_wallet", "give_coin", "receive_coin",
    "give_card", "pour_wine", "toast_wine", "handshake", "high_five",
)  # fmt: skip

# README joint order (T, I, M, R, P = thumb, index, middle, ring, pinky).
FPHA_JOINTS: tuple[str, ...] = (
    "Wrist", "TMCP", "IMCP", "MMCP", "RMCP", "PMCP",
    "TPIP", "TDIP", "TTIP", "IPIP", "IDIP", "ITIP", "MPIP", "MDIP", "MTIP",
    "RPIP", "RDIP", "RTIP", "PPIP", "PDIP", "PTIP",
)  # fmt: skip

# Parent of each joint (wrist = root, -1): wrist -> 5 MCPs -> PIP -> DIP -> TIP. 20 bones.
FPHA_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 0, 0,
    1, 6, 7, 2, 9, 10, 3, 12, 13, 4, 15, 16, 5, 18, 19,
)  # fmt: skip

SPLIT_FILE = "data_split_action_recognition.txt"
ANNOTATION_DIR = "Hand_pose_annotation_v1"

# Expected counts of the full real dataset (data README §3), checked by `check_fpha_counts`.
FPHA_SPLIT_SIZES: tuple[int, int] = (600, 575)
FPHA_T_RANGE: tuple[int, int] = (7, 1151)
FPHA_TOTAL_FRAMES = 105459
FPHA_SPLIT_FRAMES: tuple[int, int] = (52324, 53135)

_FILE_NAME = "skeleton.txt"
_N_FIELDS = 1 + len(FPHA_JOINTS) * 3  # frame index + 21 x xyz = 64
_SPLIT_NAMES = ("Training", "Test")
_HEADER = re.compile(r"(Training|Test)\s+(\d+)")
_ENTRY = re.compile(r"(Subject_\d+)/([^/\s]+)/(\d+)")
_SPLIT_FORMAT = (
    "the action-recognition split: 'Training <n>', n lines 'Subject_<k>/<action>/<seq> <label>', "
    "'Test <m>', m such lines"
)
_LAYOUT = f"<root>/{SPLIT_FILE} and <root>/{ANNOTATION_DIR}/Subject_<k>/<action>/<seq>/{_FILE_NAME}"


def fpha_edges() -> tuple[tuple[int, int], ...]:
    """The 20 undirected bones (parent, child) of the hand tree, ordered by child."""
    return tuple((parent, child) for child, parent in enumerate(FPHA_PARENTS) if parent >= 0)


def load_fpha(
    root: str | os.PathLike[str], *, cache_dir: cache.CacheDirArg = None
) -> SkeletonDataset:
    """Load the FPHA hand-pose sequences named by the action-recognition split under `root`.

    Args:
      root: the directory holding the split file and `Hand_pose_annotation_v1/`.
      cache_dir: where parsed arrays are cached; None = default, False = off (see `cache`).

    Returns:
      A `SkeletonDataset` named "fpha": sequences (T, 21, 3) float32 world coordinates in mm,
      labels from the split file, groups 0 = train, 1 = test, ids like
      "Subject_1/open_juice_bottle/2", all in split-file order (train then test).

    Raises:
      DataError: missing root/split/annotation file (or one that is a directory, a dangling
        link, a FIFO), a file that is not ASCII text with LF or CRLF line endings, a malformed
        split (header, counts, blank line, entry syntax, label not matching the action,
        duplicates) or skeleton file (field count, non-finite value, frame index != row index);
        messages name the file and line.
    """
    root_path = Path(root).expanduser().absolute()
    if not root_path.is_dir():
        raise DataError(
            f"FPHA data directory {root_path} does not exist or is not a directory; expected "
            f"the FPHA layout {_LAYOUT}. Pass --data-dir or set GCNPRUNE_DATA_DIR (which should "
            "contain sbu/ and fpha/)."
        )
    split_path = root_path / SPLIT_FILE
    entries = _read_split(split_path)
    annotation_dir = root_path / ANNOTATION_DIR
    if not annotation_dir.is_dir():
        problem = "not a directory" if annotation_dir.exists() else "directory not found"
        raise DataError(f"{annotation_dir}: {problem}; expected the FPHA layout {_LAYOUT}")
    files = []
    for entry, _, _, lineno in entries:
        path = annotation_dir / entry / _FILE_NAME
        check_regular_file(
            path,
            what=f"a {_FILE_NAME} of {_N_FIELDS} space-separated numbers per row",
            context=f" (named by {split_path}:{lineno})",
        )
        if path.stat().st_size == 0:
            raise DataError(
                f"{path}: file is empty; named by {split_path}:{lineno}, expected at least one "
                f"row of {_N_FIELDS} numbers"
            )
        files.append(path)
    ids = tuple(entry for entry, _, _, _ in entries)
    labels = np.array([label for _, label, _, _ in entries], dtype=np.int64)
    groups = np.array([group for _, _, group, _ in entries], dtype=np.int64)
    sequences = cache.load_or_parse(
        "fpha",
        root_path,
        [split_path, *files],
        ids=ids,
        labels=labels,
        groups=groups,
        parse=lambda: [_read_fpha_file(path) for path in files],
        cache_dir=cache_dir,
    )
    return SkeletonDataset(
        name="fpha",
        sequences=sequences,
        labels=labels,
        groups=groups,
        ids=ids,
        class_names=FPHA_CLASSES,
        joint_names=FPHA_JOINTS,
        edges=fpha_edges(),
        n_persons=1,
    )


def _read_split(path: Path) -> list[tuple[str, int, int, int]]:
    """Parse and validate the split file; returns (entry, label, group, 1-based line) per entry."""
    text = read_text(path, what=_SPLIT_FORMAT, kind="split file")
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected {_SPLIT_FORMAT}")
    lines = [line.strip() for line in text.rstrip().split("\n")]
    blank = next((i for i, line in enumerate(lines) if not line), None)
    if blank is not None:
        raise DataError(f"{path}:{blank + 1}: blank line; expected {_SPLIT_FORMAT}")

    # Header positions (0-based line index); exactly "Training" at the top and one "Test" later.
    headers = [(i, m) for i, line in enumerate(lines) if (m := _HEADER.fullmatch(line))]
    if not headers or headers[0][0] != 0 or headers[0][1].group(1) != "Training":
        raise DataError(
            f"{path}:1: expected the header 'Training <count>', found {_shorten(lines[0])!r}"
        )
    if len(headers) != 2 or headers[1][1].group(1) != "Test":
        found = ", ".join(f"line {i + 1}: {_shorten(lines[i])!r}" for i, _ in headers)
        raise DataError(
            f"{path}: expected exactly two headers, 'Training <count>' on line 1 and then "
            f"'Test <count>'; found {found}"
        )
    test_start = headers[1][0]
    sections = [(0, 1, test_start), (test_start, test_start + 1, len(lines))]

    entries: list[tuple[str, int, int, int]] = []
    seen: dict[str, tuple[int, int]] = {}
    for group, (header_idx, start, stop) in enumerate(sections):
        announced = int(headers[group][1].group(2))
        if stop - start != announced:
            raise DataError(
                f"{path}:{header_idx + 1}: header {lines[header_idx]!r} announces {announced} "
                f"entries, but {stop - start} follow (lines {start + 1}..{stop}); expected the "
                "announced number of entry lines"
            )
        for idx in range(start, stop):
            lineno = idx + 1
            entry, label = _parse_entry(path, lineno, lines[idx])
            if entry in seen:
                prev_line, prev_group = seen[entry]
                raise DataError(
                    f"{path}:{lineno}: duplicate entry {entry!r}; already listed on line "
                    f"{prev_line} ({_SPLIT_NAMES[prev_group]}); expected each sequence once "
                    "(train and test must not overlap)"
                )
            seen[entry] = (lineno, group)
            entries.append((entry, label, group, lineno))
    return entries


def _shorten(line: str, limit: int = 80) -> str:
    """`line` for quoting in a message, cut to `limit` characters."""
    return line if len(line) <= limit else line[:limit] + "..."


def _parse_entry(path: Path, lineno: int, line: str) -> tuple[str, int]:
    """One split line "Subject_k/<action>/<seq> <label>" -> (entry, label), checked."""
    where = f"{path}:{lineno}"
    fields = line.split()
    if len(fields) != 2 or not _ENTRY.fullmatch(fields[0]) or not fields[1].isdigit():
        raise DataError(
            f"{where}: expected 'Subject_<k>/<action>/<seq> <label>', found {_shorten(line)!r}"
        )
    entry, label = fields[0], int(fields[1])
    action = entry.split("/")[1]
    if action not in FPHA_CLASSES:
        raise DataError(f"{where}: unknown action {action!r}; expected one of the 45 FPHA actions")
    expected = FPHA_CLASSES.index(action)
    if label != expected:
        raise DataError(
            f"{where}: label {label} is inconsistent with action {action!r}; expected {expected}"
        )
    return entry, label


def _read_fpha_file(path: Path) -> np.ndarray:
    """Parse one skeleton.txt into (T, 21, 3) float32, checking the frame-index column."""
    table = read_table(
        path,
        n_fields=_N_FIELDS,
        delimiter=None,
        what=f"{_N_FIELDS} space-separated numbers per row (frame index, 21 joints x xyz)",
    )
    frame_index = table[:, 0]
    wrong = np.flatnonzero(frame_index != np.arange(len(table)))
    if wrong.size:
        row = int(wrong[0])
        raise DataError(
            f"{path}:{row + 1}: frame index is {frame_index[row]:g}; expected {row} "
            "(the 0-based row index)"
        )
    return table[:, 1:].reshape(len(table), len(FPHA_JOINTS), 3).astype(np.float32)


def check_fpha_counts(ds: SkeletonDataset, root: Path | None = None) -> None:
    """Check `ds` against the known counts of the full real FPHA dataset (data README §3).

    Args:
      ds: the loaded dataset.
      root: the directory it was loaded from; the messages then name the split file (sequence
        counts) or the annotation files (frame counts) that were counted.

    Raises:
      DataError: naming the first count that differs (train/test sizes, frame-count range, total
        and per-split frames) with expected and found values.
    """
    in_split = f" in {root / SPLIT_FILE}" if root is not None else ""
    in_files = (
        f" in the {_FILE_NAME} files under {root / ANNOTATION_DIR} named by {root / SPLIT_FILE}"
        if root is not None
        else ""
    )
    lengths = np.array([len(s) for s in ds.sequences])
    groups = np.asarray(ds.groups)
    checks = [
        (
            "(train, test) sequence counts",
            in_split,
            list(FPHA_SPLIT_SIZES),
            np.bincount(groups, minlength=2).tolist(),
        ),
        ("number of nodes", "", len(FPHA_JOINTS), ds.n_nodes),
    ]
    for what, where, expected, found in checks:
        if expected != found:
            raise DataError(f"FPHA {what}{where}: expected {expected}, found {found}")
    lo, hi = FPHA_T_RANGE
    bad = [(i, int(t)) for i, t in zip(ds.ids, lengths, strict=True) if not lo <= t <= hi]
    if bad:
        seq_id, t = bad[0]
        where = (
            f"{root / ANNOTATION_DIR / seq_id / _FILE_NAME}"
            if root is not None
            else f"FPHA sequence {seq_id}"
        )
        raise DataError(
            f"{where}: {t} frames; expected between {lo} and {hi} "
            f"({len(bad)} sequence(s) out of range)"
        )
    # After the per-file range: a file out of range is named, the totals only name the folder.
    checks = [
        ("total frames", FPHA_TOTAL_FRAMES, int(lengths.sum())),
        (
            "(train, test) frames",
            list(FPHA_SPLIT_FRAMES),
            [int(lengths[groups == g].sum()) for g in (0, 1)],
        ),
    ]
    for what, expected, found in checks:
        if expected != found:
            raise DataError(f"FPHA {what}{in_files}: expected {expected}, found {found}")
