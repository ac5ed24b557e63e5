"""SBU Kinect Interaction v2.0 (clean): two-person interactions, 8 classes, 5 official folds.

Layout: `<root>/<set>/<class>/<seq>/skeleton_pos.txt`, e.g. `s01s02/01/001/skeleton_pos.txt`.
Each file has one CRLF-terminated row per frame of 91 comma-separated numbers: a raw recording
frame number (not 1..T; we use the row position as time), then person A's 15 joints and person
B's 15 joints as x, y, z (normalised: x, y in about [0, 1], z in about [0, 7.8]).

Nodes: 30 = A's joints 0..14 then B's 15..29. The graph is the OpenNI/NiTE kinematic tree rooted
at TORSO (data README §1.6, "primary tree") per person, with no inter-person edges.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from gcnprune_jax.data import cache
from gcnprune_jax.data._text import check_regular_file, read_table
from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.errors import DataError

# The 21 two-actor sets sAAsBB, in the dataset README's order (Set01..Set21).
SBU_SETS: tuple[str, ...] = (
    "s01s02", "s01s03", "s01s07", "s02s01", "s02s03", "s02s06", "s02s07",
    "s03s02", "s03s04", "s03s05", "s03s06", "s04s02", "s04s03", "s04s06",
    "s05s02", "s05s03", "s06s02", "s06s03", "s06s04", "s07s01", "s07s03",
)  # fmt: skip

# The official 5-fold cross-validation of Yun et al. 2012; fold k here is their fold k + 1.
SBU_FOLDS: tuple[tuple[str, ...], ...] = (
    ("s01s02", "s03s04", "s05s02", "s06s04"),
    ("s02s03", "s02s07", "s03s05", "s05s03"),
    ("s01s03", "s01s07", "s07s01", "s07s03"),
    ("s02s01", "s02s06", "s03s02", "s03s06"),
    ("s04s02", "s04s03", "s04s06", "s06s02", "s06s03"),
)

# Label = int(class folder) - 1.
SBU_CLASSES: tuple[str, ...] = (
    "approaching", "departing", "kicking", "pushing",
    "shaking_hands", "hugging", "exchanging_objects", "punching",
)  # fmt: skip

SBU_JOINTS: tuple[str, ...] = (
    "HEAD", "NECK", "TORSO",
    "LEFT_SHOULDER", "LEFT_ELBOW", "LEFT_HAND",
    "RIGHT_SHOULDER", "RIGHT_ELBOW", "RIGHT_HAND",
    "LEFT_HIP", "LEFT_KNEE", "LEFT_FOOT",
    "RIGHT_HIP", "RIGHT_KNEE", "RIGHT_FOOT",
)  # fmt: skip

# Parent of each of a person's 15 joints (root TORSO = 2 has -1): the OpenNI/NiTE tree with the
# shoulders hanging on the neck. 14 bones per person.
SBU_PARENTS: tuple[int, ...] = (1, 2, -1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13)

SBU_PERSONS: tuple[str, ...] = ("A", "B")

# Expected counts of the full real dataset (data README §3), checked by `check_sbu_counts`.
# SBU's README: X = 1280 - 2560 x, Y = 960 - 1920 y, Z = 1280 z (mm). The normalized space
# is anisotropic; the scales below map it back to millimetres (offsets and signs aside).
SBU_MM_PER_UNIT: tuple[float, float, float] = (2560.0, 1920.0, 1280.0)

SBU_N_SEQUENCES = 282
SBU_LABEL_COUNTS: tuple[int, ...] = (42, 43, 40, 41, 18, 21, 39, 38)
SBU_FOLD_SIZES: tuple[int, ...] = (55, 52, 56, 54, 65)
SBU_T_RANGE: tuple[int, int] = (10, 46)
SBU_TOTAL_FRAMES = 6822

_FILE_NAME = "skeleton_pos.txt"
_N_FIELDS = 1 + len(SBU_PERSONS) * len(SBU_JOINTS) * 3  # frame number + 2 x 15 x xyz = 91
_CLASS_DIR = re.compile(r"0[1-8]")
_SEQ_DIR = re.compile(r"\d{3}")
# Names that can only mean a layout folder: such an entry that is not a directory is an error,
# while other plain files (README, checksums) are ignored.
_SET_LIKE = re.compile(r"s\d+s\d+", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
_LAYOUT = "<root>/<set>/<class>/<seq>/skeleton_pos.txt (e.g. s01s02/01/001/skeleton_pos.txt)"
_FOLD_OF_SET = {s: k for k, fold in enumerate(SBU_FOLDS) for s in fold}


def sbu_edges() -> tuple[tuple[int, int], ...]:
    """The 28 undirected bones (parent, child) over the 30 nodes: A's tree, then B's (+15)."""
    v = len(SBU_JOINTS)
    return tuple(
        (p * v + parent, p * v + child)
        for p in range(len(SBU_PERSONS))
        for child, parent in enumerate(SBU_PARENTS)
        if parent >= 0
    )


def load_sbu(
    root: str | os.PathLike[str], *, cache_dir: cache.CacheDirArg = None
) -> SkeletonDataset:
    """Load the SBU skeleton files under `root` (the full dataset or any subset of its sets).

    Args:
      root: the directory holding the set folders (`s01s02`, ...). Plain files there (README,
        checksums) and hidden entries anywhere are ignored.
      cache_dir: where parsed arrays are cached; None = default, False = off (see `cache`).

    Returns:
      A `SkeletonDataset` named "sbu": sequences (T, 30, 3) float32 in the normalised units of the
      files, labels = class folder - 1, groups = official fold 0..4, ids like "s01s02/01/001",
      ordered by set (README order), class, sequence. `n_persons` = 2.

    Raises:
      DataError: missing root, unknown set/class/sequence folder, a file or broken link named
        like one of those folders, a skeleton path that is not a readable regular file (missing,
        a directory, a dangling link, a FIFO), a file that is not ASCII text with LF or CRLF line
        endings, a malformed row, or frame numbers that are not consecutive (message names the
        file, line and what was expected).
    """
    root_path = Path(root).expanduser().absolute()
    entries = _scan_layout(root_path)
    files = [path for path, _, _ in entries]
    ids = tuple(path.parent.relative_to(root_path).as_posix() for path in files)
    labels = np.array([label for _, label, _ in entries], dtype=np.int64)
    groups = np.array([fold for _, _, fold in entries], dtype=np.int64)
    sequences = cache.load_or_parse(
        "sbu",
        root_path,
        files,
        ids=ids,
        labels=labels,
        groups=groups,
        parse=lambda: [_read_sbu_file(path) for path in files],
        cache_dir=cache_dir,
    )
    return SkeletonDataset(
        name="sbu",
        sequences=sequences,
        labels=labels,
        groups=groups,
        ids=ids,
        class_names=SBU_CLASSES,
        joint_names=tuple(f"{p}/{j}" for p in SBU_PERSONS for j in SBU_JOINTS),
        edges=sbu_edges(),
        n_persons=len(SBU_PERSONS),
    )


def _subdirs(directory: Path, layout_name: re.Pattern[str], expected: str) -> list[Path]:
    """Non-hidden subdirectories, sorted. Plain files are not part of the layout and are skipped,
    unless named like a layout folder (`layout_name`): a file, dangling symlink or FIFO standing
    where a set, class or sequence folder belongs is an error, not a folder to skip silently."""
    subdirs = []
    for p in sorted(directory.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            subdirs.append(p)
        elif layout_name.fullmatch(p.name):
            if p.is_symlink() and not p.exists():
                problem = f"dangling symbolic link to {os.readlink(p)}"
            else:
                problem = "a file" if p.is_file() else "not a directory"
            raise DataError(f"{p}: {problem}; expected {expected} (layout {_LAYOUT})")
    return subdirs


def _scan_layout(root: Path) -> list[tuple[Path, int, int]]:
    """Walk the set/class/sequence folders; returns (skeleton file, label, fold) per sequence."""
    if not root.is_dir():
        raise DataError(
            f"SBU data directory {root} does not exist or is not a directory; expected the SBU "
            f"Kinect Interaction layout {_LAYOUT}. Pass --data-dir or set GCNPRUNE_DATA_DIR "
            "(which should contain sbu/ and fpha/)."
        )
    set_dirs = _subdirs(root, _SET_LIKE, "a set folder")
    if not set_dirs:
        raise DataError(
            f"SBU data directory {root} holds no set folders; expected {_LAYOUT} with set "
            f"folders among {', '.join(SBU_SETS)}"
        )
    unknown = [d.name for d in set_dirs if d.name not in _FOLD_OF_SET]
    if unknown:
        raise DataError(
            f"{root}: unknown set folder(s) {', '.join(unknown)}; expected only the 21 SBU sets "
            f"({', '.join(SBU_SETS)}) in the layout {_LAYOUT}"
        )
    by_name = {d.name: d for d in set_dirs}
    entries = []
    for set_name in SBU_SETS:
        if set_name not in by_name:
            continue
        set_dir = by_name[set_name]
        class_dirs = _subdirs(set_dir, _DIGITS, "a class folder 01..08")
        if not class_dirs:
            raise DataError(f"{set_dir}: set folder holds no class folders; expected 01..08")
        for class_dir in class_dirs:
            if not _CLASS_DIR.fullmatch(class_dir.name):
                raise DataError(
                    f"{class_dir}: unknown class folder {class_dir.name!r}; expected 01..08"
                )
            seq_dirs = _subdirs(class_dir, _DIGITS, "a sequence folder 001, 002, ...")
            if not seq_dirs:
                raise DataError(
                    f"{class_dir}: class folder holds no sequence folders; expected 001, 002, ..."
                )
            for seq_dir in seq_dirs:
                if not _SEQ_DIR.fullmatch(seq_dir.name):
                    raise DataError(
                        f"{seq_dir}: unexpected directory {seq_dir.name!r}; expected sequence "
                        "folders named by three digits (001, 002, ...)"
                    )
                path = seq_dir / _FILE_NAME
                check_regular_file(path, what=f"a {_FILE_NAME} file in every sequence folder")
                entries.append((path, int(class_dir.name) - 1, _FOLD_OF_SET[set_name]))
    return entries


def _read_sbu_file(path: Path) -> np.ndarray:
    """Parse one skeleton_pos.txt into (T, 30, 3) float32 (the frame-number column is dropped).

    The raw frame numbers may start anywhere but must be consecutive integers (true of all 282
    real files): a repeated, dropped or reordered row shows there.
    """
    table = read_table(
        path,
        n_fields=_N_FIELDS,
        delimiter=",",
        what=f"{_N_FIELDS} comma-separated numbers per row (frame#, 2 persons x 15 joints x xyz)",
    )
    frame = table[:, 0]
    bad = (frame != np.floor(frame)) | np.r_[False, np.diff(frame) != 1]
    if bad.any():
        row = int(np.argmax(bad))
        if frame[row] != np.floor(frame[row]):
            expected = "an integer"
        else:
            expected = f"{frame[row - 1] + 1:g}, one more than on line {row}"
        raise DataError(
            f"{path}:{row + 1}: frame number is {frame[row]:g}; expected {expected} (frame "
            "numbers are consecutive within a file)"
        )
    return (
        table[:, 1:].reshape(len(table), len(SBU_PERSONS) * len(SBU_JOINTS), 3).astype(np.float32)
    )


def check_sbu_counts(ds: SkeletonDataset, root: Path | None = None) -> None:
    """Check `ds` against the known counts of the full real SBU dataset (data README §3).

    Args:
      ds: the loaded dataset.
      root: the directory it was loaded from, named in the messages (what was counted where).

    Raises:
      DataError: naming the first count that differs (sequences, nodes, per-label counts, fold
        sizes, frame-count range, total frames) with expected and found values, and the folder
        (or, for a sequence's length, the file) counted.
    """
    under = f" under {root}" if root is not None else ""
    lengths = np.array([len(s) for s in ds.sequences])
    found_labels = np.bincount(ds.labels, minlength=len(SBU_CLASSES)).tolist()
    found_folds = np.bincount(ds.groups, minlength=len(SBU_FOLDS)).tolist()
    checks = [
        (f"number of sequences ({_FILE_NAME} files){under}", SBU_N_SEQUENCES, len(ds), None),
        ("number of nodes", 2 * len(SBU_JOINTS), ds.n_nodes, None),
        (
            f"per-label sequence counts (class folders 01..08){under}",
            list(SBU_LABEL_COUNTS),
            found_labels,
            [f"class folder {k + 1:02d}" for k in range(len(SBU_CLASSES))],
        ),
        (
            f"fold sizes (sequences in each fold's set folders){under}",
            list(SBU_FOLD_SIZES),
            found_folds,
            [f"fold {k + 1} ({', '.join(sets)})" for k, sets in enumerate(SBU_FOLDS)],
        ),
    ]
    for what, expected, found, names in checks:
        if expected != found:
            detail = ""
            if names is not None:
                diffs = [
                    f"{name}: {e} vs {f}"
                    for name, e, f in zip(names, expected, found, strict=True)
                    if e != f
                ]
                detail = f" (expected vs found: {'; '.join(diffs)})"
            raise DataError(f"SBU {what}: expected {expected}, found {found}{detail}")
    lo, hi = SBU_T_RANGE
    bad = [(i, int(t)) for i, t in zip(ds.ids, lengths, strict=True) if not lo <= t <= hi]
    if bad:
        seq_id, t = bad[0]
        where = f"{root / seq_id / _FILE_NAME}" if root is not None else f"SBU sequence {seq_id}"
        raise DataError(
            f"{where}: {t} frames; expected between {lo} and {hi} "
            f"({len(bad)} sequence(s) out of range)"
        )
    # After the per-file range: a file out of range is named, while the total can only name
    # the whole directory.
    if int(lengths.sum()) != SBU_TOTAL_FRAMES:
        raise DataError(
            f"SBU total frames{under}: expected {SBU_TOTAL_FRAMES}, found {int(lengths.sum())} "
            f"(rows of the {len(ds)} {_FILE_NAME} files)"
        )
