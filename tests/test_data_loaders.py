"""Loader contracts on small fixture trees written here in the datasets' own formats.

No real data is involved (its licence forbids copies); see test_data_real.py for that.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from gcnprune_jax.data import (
    SkeletonDataset,
    cache,
    check_fpha_counts,
    check_sbu_counts,
    fpha,
    load_dataset,
    load_fpha,
    load_sbu,
    sbu,
)
from gcnprune_jax.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------
# Fixture writers


def _fmt(value: float) -> str:
    # repr round-trips exactly, so the expected float32 arrays are bit-exact.
    return repr(float(value))


def write_sbu_file(path: Path, frames: np.ndarray, first_frame: int = 101, newline: str = "\r\n"):
    """Write (T, 30, 3) frames as an SBU skeleton_pos.txt (raw frame numbers, CRLF by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        ",".join([str(first_frame + t), *(_fmt(v) for v in frame.ravel())])
        for t, frame in enumerate(frames)
    ]
    path.write_bytes((newline.join(rows) + newline).encode())


# set -> class folder -> number of sequences. Sets from folds 0, 1 and 4; class 05 is absent from
# s02s03, as in the real data.
SBU_LAYOUT = {"s06s02": {"05": 1}, "s01s02": {"01": 2, "03": 1}, "s02s03": {"01": 1, "08": 2}}


def make_sbu_tree(root: Path, layout: dict[str, dict[str, int]] | None = None, seed: int = 0):
    """Write an SBU tree; returns {id: (T, 30, 3) float32} in the loader's expected order."""
    rng = np.random.default_rng(seed)
    expected = {}
    layout = SBU_LAYOUT if layout is None else layout
    for set_name in sorted(layout, key=sbu.SBU_SETS.index):
        for cls in sorted(layout[set_name]):
            for k in range(1, layout[set_name][cls] + 1):
                seq_id = f"{set_name}/{cls}/{k:03d}"
                frames = rng.uniform(-0.1, 1.3, size=(int(rng.integers(3, 8)), 30, 3))
                write_sbu_file(root / seq_id / "skeleton_pos.txt", frames, first_frame=100 * k)
                expected[seq_id] = frames.astype(np.float32)
    # Plain files at the root and hidden entries are not part of the layout.
    (root / "PROVENANCE.md").write_text("fixture\n")
    (root / "s01s02" / ".DS_Store").write_bytes(b"\x00\x01")
    return expected


def write_fpha_file(path: Path, frames: np.ndarray, newline: str = "\n"):
    """Write (T, 21, 3) frames as an FPHA skeleton.txt (zero-padded 0-based frame index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        " ".join([f"{t:04d}", *(_fmt(v) for v in frame.ravel())]) for t, frame in enumerate(frames)
    ]
    path.write_bytes((newline.join(rows) + newline).encode())


FPHA_TRAIN = [
    ("Subject_1/open_juice_bottle/2", 0),
    ("Subject_1/prick/2", 5),
    ("Subject_2/high_five/4", 44),
]
FPHA_TEST = [("Subject_1/open_juice_bottle/1", 0), ("Subject_3/use_flash/6", 24)]
CRLF_ENTRY = "Subject_3/use_flash/6"
EMPTY_OUTSIDE_SPLIT = "Subject_2/close_milk/4"


def write_split(root: Path, train, test, header=None):
    header = header or (f"Training {len(train)}", f"Test {len(test)}")
    lines = [header[0], *(f"{e} {lab}" for e, lab in train)]
    lines += [header[1], *(f"{e} {lab}" for e, lab in test)]
    (root / fpha.SPLIT_FILE).write_text("\n".join(lines) + "\n")


def make_fpha_tree(root: Path, seed: int = 0):
    """Write an FPHA tree; returns {id: (T, 21, 3) float32} in split order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_split(root, FPHA_TRAIN, FPHA_TEST)
    expected = {}
    for entry, _ in FPHA_TRAIN + FPHA_TEST:
        frames = rng.uniform(-300, 800, size=(int(rng.integers(3, 9)), 21, 3))
        newline = "\r\n" if entry == CRLF_ENTRY else "\n"
        write_fpha_file(fpha_path(root, entry), frames, newline=newline)
        expected[entry] = frames.astype(np.float32)
    empty = fpha_path(root, EMPTY_OUTSIDE_SPLIT)
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    return expected


def fpha_path(root: Path, entry: str) -> Path:
    return root / fpha.ANNOTATION_DIR / entry / "skeleton.txt"


def replace_line(path: Path, lineno: int, new: str) -> None:
    """Replace 1-based line `lineno` of `path`, keeping the file's line endings."""
    raw = path.read_bytes().decode()
    newline = "\r\n" if "\r\n" in raw else "\n"
    lines = raw.split(newline)
    lines[lineno - 1] = new
    path.write_bytes(newline.join(lines).encode())


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # The default cache location must never be the user's home during tests.
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "default-cache"))
    monkeypatch.delenv("GCNPRUNE_DATA_DIR", raising=False)


@pytest.fixture
def sbu_root(tmp_path):
    root = tmp_path / "sbu"
    return root, make_sbu_tree(root)


@pytest.fixture
def fpha_root(tmp_path):
    root = tmp_path / "fpha"
    return root, make_fpha_tree(root)


def _count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def wrapper(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def _forbid(monkeypatch, module, name):
    def fail(path):
        raise AssertionError(f"re-parsed {path} despite a valid cache entry")

    monkeypatch.setattr(module, name, fail)


# ---------------------------------------------------------------------------------------------
# SBU


def test_sbu_constants_are_consistent():
    assert len(sbu.SBU_SETS) == 21 and len(set(sbu.SBU_SETS)) == 21
    fold_sets = [s for fold in sbu.SBU_FOLDS for s in fold]
    assert sorted(fold_sets) == sorted(sbu.SBU_SETS)  # disjoint and covering
    assert [len(f) for f in sbu.SBU_FOLDS] == [4, 4, 4, 4, 5]
    assert len(sbu.SBU_CLASSES) == 8 and len(sbu.SBU_JOINTS) == 15
    assert sbu.SBU_PARENTS.count(-1) == 1 and sbu.SBU_PARENTS[2] == -1  # rooted at TORSO
    edges = sbu.sbu_edges()
    assert len(edges) == 28 and len(set(edges)) == 28
    assert all(i // 15 == j // 15 for i, j in edges)  # no inter-person edges
    assert (1, 3) in edges and (1, 6) in edges and (16, 18) in edges  # shoulders on the neck


def test_sbu_parses_fixture(sbu_root):
    root, expected = sbu_root
    ds = load_sbu(root, cache_dir=False)
    assert isinstance(ds, SkeletonDataset)
    assert ds.name == "sbu" and len(ds) == 7 and ds.n_persons == 2 and ds.n_nodes == 30
    assert ds.ids == tuple(expected)
    assert ds.ids[0] == "s01s02/01/001" and ds.ids[-1] == "s06s02/05/001"
    for seq, (seq_id, want) in zip(ds.sequences, expected.items(), strict=True):
        assert seq.dtype == np.float32 and seq.shape == want.shape, seq_id
        np.testing.assert_array_equal(seq, want)
    np.testing.assert_array_equal(ds.labels, [0, 0, 2, 0, 7, 7, 4])
    np.testing.assert_array_equal(ds.groups, [0, 0, 0, 1, 1, 1, 4])
    assert ds.labels.dtype == np.int64 and ds.groups.dtype == np.int64
    assert ds.joint_names[0] == "A/HEAD" and ds.joint_names[15] == "B/HEAD"
    assert ds.joint_names[29] == "B/RIGHT_FOOT"
    assert ds.class_names[4] == "shaking_hands" and ds.n_classes == 8
    assert len(ds.edges) == 28 and (2, 1) in ds.edges and (17, 16) in ds.edges


def test_sbu_fixture_files_are_crlf_and_lf_parses_the_same(sbu_root, tmp_path):
    root, expected = sbu_root
    raw = (root / "s01s02/01/001/skeleton_pos.txt").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") > 0
    lf_root = tmp_path / "sbu_lf"
    for seq_id, frames in expected.items():
        write_sbu_file(lf_root / seq_id / "skeleton_pos.txt", frames, newline="\n")
    crlf, lf = load_sbu(root, cache_dir=False), load_sbu(lf_root, cache_dir=False)
    for a, b in zip(crlf.sequences, lf.sequences, strict=True):
        np.testing.assert_array_equal(a, b)


BAD_SBU_ROWS = [
    pytest.param(lambda f: ",".join(f[:-1]), "expected 91", id="too-few-fields"),
    pytest.param(lambda f: ",".join(f) + ",", "found 92", id="trailing-comma"),
    pytest.param(lambda f: ",".join([*f[:5], "abc", *f[6:]]), "'abc'", id="non-numeric"),
    pytest.param(lambda f: ",".join([*f[:5], "", *f[6:]]), "field 6", id="empty-field"),
    pytest.param(lambda f: ",".join([*f[:5], "nan", *f[6:]]), "finite", id="nan"),
    pytest.param(lambda f: ",".join([*f[:5], "-inf", *f[6:]]), "finite", id="inf"),
    pytest.param(lambda f: ",".join([*f[:5], "1e39", *f[6:]]), "float32", id="float32-overflow"),
    pytest.param(lambda f: "", "blank line", id="blank-line"),
    pytest.param(lambda f: " ".join(f), "found 1", id="wrong-separator"),
]


@pytest.mark.parametrize(("corrupt", "detail"), BAD_SBU_ROWS)
def test_sbu_malformed_row_names_file_and_line(sbu_root, corrupt, detail):
    root, _ = sbu_root
    path = root / "s02s03/08/002/skeleton_pos.txt"
    fields = path.read_bytes().decode().split("\r\n")[2].split(",")
    replace_line(path, 3, corrupt(fields))
    with pytest.raises(DataError) as info:
        load_sbu(root, cache_dir=False)
    message = str(info.value)
    assert f"{path}:3:" in message and detail in message


def test_sbu_stray_carriage_return_is_located(sbu_root):
    root, _ = sbu_root
    path = root / "s01s02/03/001/skeleton_pos.txt"
    line = path.read_bytes().decode().split("\r\n")[1]
    replace_line(path, 2, line.replace(",", "\r,", 1))
    with pytest.raises(DataError, match=r"skeleton_pos\.txt:2: stray carriage return"):
        load_sbu(root, cache_dir=False)


def test_sbu_empty_file_is_an_error(sbu_root):
    root, _ = sbu_root
    path = root / "s01s02/01/002/skeleton_pos.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as info:
        load_sbu(root, cache_dir=False)
    assert str(path) in str(info.value)


def test_sbu_missing_root_says_what_layout_and_how_to_set_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_sbu(missing)
    message = str(info.value)
    for part in (
        str(missing),
        "<set>/<class>/<seq>/skeleton_pos.txt",
        "--data-dir",
        "GCNPRUNE_DATA_DIR",
    ):
        assert part in message


@pytest.mark.parametrize(
    ("make_bad", "detail"),
    [
        pytest.param(lambda r: (r / "s99s98/01/001").mkdir(parents=True), "s99s98", id="set"),
        pytest.param(lambda r: (r / "s01s02/09/001").mkdir(parents=True), "'09'", id="class"),
        pytest.param(lambda r: (r / "s01s02/01/extra").mkdir(), "'extra'", id="seq-dir"),
        pytest.param(lambda r: (r / "s01s02/02").mkdir(), "no sequence folders", id="empty-cls"),
        pytest.param(
            lambda r: (r / "s01s02/01/002/skeleton_pos.txt").unlink(),
            "s01s02/01/002/skeleton_pos.txt: file not found",
            id="missing-file",
        ),
    ],
)
def test_sbu_bad_layout_is_rejected(sbu_root, make_bad, detail):
    root, _ = sbu_root
    make_bad(root)
    with pytest.raises(DataError, match=r"expected|every sequence") as info:
        load_sbu(root, cache_dir=False)
    assert detail in str(info.value)


def test_sbu_root_without_sets_is_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no set folders"):
        load_sbu(tmp_path / "empty", cache_dir=False)


def _full_sized_sbu() -> SkeletonDataset:
    """A stand-in with exactly the real SBU counts (random values), to test check_sbu_counts."""
    labels = np.repeat(np.arange(8), sbu.SBU_LABEL_COUNTS)
    groups = np.repeat(np.arange(5), sbu.SBU_FOLD_SIZES)
    lengths = np.full(282, 24)
    lengths[: 6822 - 24 * 282] += 1
    return SkeletonDataset(
        name="sbu",
        sequences=tuple(np.zeros((t, 30, 3), np.float32) for t in lengths),
        labels=labels,
        groups=groups,
        ids=tuple(f"seq{i}" for i in range(282)),
        class_names=sbu.SBU_CLASSES,
        joint_names=tuple(f"{p}/{j}" for p in "AB" for j in sbu.SBU_JOINTS),
        edges=sbu.sbu_edges(),
        n_persons=2,
    )


def test_check_sbu_counts_accepts_real_counts_and_names_each_mismatch(sbu_root):
    full = _full_sized_sbu()
    check_sbu_counts(full)
    with pytest.raises(DataError, match=r"number of sequences.*expected 282, found 7"):
        check_sbu_counts(load_sbu(sbu_root[0], cache_dir=False))
    swapped = np.array(full.labels)
    swapped[0] = 1
    with pytest.raises(DataError, match="per-label"):
        check_sbu_counts(dataclasses.replace(full, labels=swapped))
    moved = np.array(full.groups)
    moved[0] = 1
    with pytest.raises(DataError, match="fold sizes"):
        check_sbu_counts(dataclasses.replace(full, groups=moved))
    seqs = list(full.sequences)
    assert len(seqs[0]) + len(seqs[1]) == 50
    seqs[0], seqs[1] = np.zeros((9, 30, 3), np.float32), np.zeros((41, 30, 3), np.float32)
    with pytest.raises(DataError, match="seq0: 9 frames; expected between 10 and 46"):
        check_sbu_counts(dataclasses.replace(full, sequences=tuple(seqs)))
    seqs[0] = np.zeros((10, 30, 3), np.float32)
    with pytest.raises(DataError, match="total frames: expected 6822, found 6823"):
        check_sbu_counts(dataclasses.replace(full, sequences=tuple(seqs)))


# ---------------------------------------------------------------------------------------------
# FPHA


def test_fpha_constants_are_consistent():
    assert len(fpha.FPHA_CLASSES) == 45 and len(set(fpha.FPHA_CLASSES)) == 45
    assert fpha.FPHA_CLASSES[29] == "take_letter_from_enveloppe"
    assert len(fpha.FPHA_JOINTS) == 21 and len(fpha.FPHA_PARENTS) == 21
    edges = fpha.fpha_edges()
    assert len(edges) == 20 and edges[:5] == ((0, 1), (0, 2), (0, 3), (0, 4), (0, 5))
    assert (19, 20) in edges


def test_fpha_parses_fixture(fpha_root):
    root, expected = fpha_root
    ds = load_fpha(root, cache_dir=False)
    assert ds.name == "fpha" and len(ds) == 5 and ds.n_persons == 1 and ds.n_nodes == 21
    assert ds.ids == tuple(expected)  # split-file order: train then test
    for seq, (seq_id, want) in zip(ds.sequences, expected.items(), strict=True):
        assert seq.dtype == np.float32 and seq.shape == want.shape, seq_id
        np.testing.assert_array_equal(seq, want)
    np.testing.assert_array_equal(ds.labels, [0, 5, 44, 0, 24])
    np.testing.assert_array_equal(ds.groups, [0, 0, 0, 1, 1])
    assert ds.joint_names == fpha.FPHA_JOINTS and ds.class_names == fpha.FPHA_CLASSES
    assert len(ds.edges) == 20


def test_fpha_crlf_file_and_empty_file_outside_split(fpha_root):
    root, _ = fpha_root
    assert b"\r\n" in fpha_path(root, CRLF_ENTRY).read_bytes()
    assert fpha_path(root, EMPTY_OUTSIDE_SPLIT).stat().st_size == 0
    ds = load_fpha(root, cache_dir=False)
    assert CRLF_ENTRY in ds.ids and EMPTY_OUTSIDE_SPLIT not in ds.ids


def test_fpha_empty_file_named_by_split_is_an_error(fpha_root):
    root, _ = fpha_root
    path = fpha_path(root, "Subject_1/prick/2")
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as info:
        load_fpha(root, cache_dir=False)
    assert str(path) in str(info.value) and f"{fpha.SPLIT_FILE}:3" in str(info.value)


def test_fpha_missing_file_named_by_split_is_an_error(fpha_root):
    root, _ = fpha_root
    path = fpha_path(root, "Subject_1/open_juice_bottle/1")
    path.unlink()
    with pytest.raises(DataError, match="file not found") as info:
        load_fpha(root, cache_dir=False)
    # Line 6: header, 3 train entries, Test header, then this entry.
    assert str(path) in str(info.value) and f"{fpha.SPLIT_FILE}:6" in str(info.value)


@pytest.mark.parametrize(
    ("corrupt", "detail"),
    [
        pytest.param(lambda f: " ".join(f[:-2]), "expected 64", id="too-few-fields"),
        pytest.param(lambda f: " ".join([*f[:7], "x1", *f[8:]]), "'x1'", id="non-numeric"),
        pytest.param(lambda f: " ".join([*f[:7], "NaN", *f[8:]]), "finite", id="nan"),
        pytest.param(
            lambda f: " ".join(["0005", *f[1:]]), "frame index is 5; expected 1", id="frame-index"
        ),
        pytest.param(lambda f: "", "blank line", id="blank-line"),
    ],
)
def test_fpha_malformed_row_names_file_and_line(fpha_root, corrupt, detail):
    root, _ = fpha_root
    path = fpha_path(root, CRLF_ENTRY)
    fields = path.read_bytes().decode().split("\r\n")[1].split()
    replace_line(path, 2, corrupt(fields))
    with pytest.raises(DataError) as info:
        load_fpha(root, cache_dir=False)
    assert f"{path}:2:" in str(info.value) and detail in str(info.value)


def test_fpha_frame_index_must_start_at_zero(fpha_root):
    root, _ = fpha_root
    path = fpha_path(root, "Subject_1/prick/2")
    lines = path.read_text().splitlines()
    path.write_text("".join(f"{t + 1:04d}{line[4:]}\n" for t, line in enumerate(lines)))
    with pytest.raises(DataError, match=r"skeleton\.txt:1: frame index is 1; expected 0"):
        load_fpha(root, cache_dir=False)


SPLIT_CASES = [
    pytest.param(
        FPHA_TRAIN,
        FPHA_TEST,
        ("Train 3", "Test 2"),
        ":1:",
        "'Training <count>'",
        id="bad-training-header",
    ),
    pytest.param(
        FPHA_TRAIN,
        FPHA_TEST,
        ("Training 3", "Testing 2"),
        ":",
        "exactly two headers",
        id="bad-test-header",
    ),
    pytest.param(
        FPHA_TRAIN,
        FPHA_TEST,
        ("Training 4", "Test 2"),
        ":1:",
        "announces 4 entries, but 3 follow",
        id="train-count",
    ),
    pytest.param(
        FPHA_TRAIN,
        FPHA_TEST,
        ("Training 3", "Test 3"),
        ":5:",
        "announces 3 entries, but 2 follow",
        id="test-count",
    ),
    pytest.param(
        [*FPHA_TRAIN[:2], ("Subject_2/high_five/4", 43)],
        FPHA_TEST,
        None,
        ":4:",
        "inconsistent with action 'high_five'; expected 44",
        id="label-mismatch",
    ),
    pytest.param(
        [*FPHA_TRAIN[:2], ("Subject_2/high_six/4", 44)],
        FPHA_TEST,
        None,
        ":4:",
        "unknown action 'high_six'",
        id="unknown-action",
    ),
    pytest.param(
        [*FPHA_TRAIN[:2], ("Subject_2/high_five", 44)],
        FPHA_TEST,
        None,
        ":4:",
        "expected 'Subject_<k>/<action>/<seq> <label>'",
        id="bad-entry",
    ),
    pytest.param(
        [*FPHA_TRAIN, FPHA_TRAIN[0]],
        FPHA_TEST,
        None,
        ":5:",
        "duplicate entry 'Subject_1/open_juice_bottle/2'; already listed on line 2",
        id="duplicate",
    ),
    pytest.param(
        FPHA_TRAIN,
        [*FPHA_TEST, FPHA_TRAIN[1]],
        None,
        ":8:",
        "already listed on line 3 (Training)",
        id="train-test-overlap",
    ),
]


@pytest.mark.parametrize(("train", "test", "header", "where", "detail"), SPLIT_CASES)
def test_fpha_bad_split_names_line(fpha_root, train, test, header, where, detail):
    root, _ = fpha_root
    write_split(root, train, test, header)
    with pytest.raises(DataError) as info:
        load_fpha(root, cache_dir=False)
    message = str(info.value)
    assert f"{root / fpha.SPLIT_FILE}{where}" in message and detail in message


def test_fpha_missing_pieces(tmp_path, fpha_root):
    root, _ = fpha_root
    with pytest.raises(DataError, match=r"--data-dir.*GCNPRUNE_DATA_DIR"):
        load_fpha(tmp_path / "nowhere")
    (root / fpha.SPLIT_FILE).rename(root / "split.bak")
    with pytest.raises(DataError, match=f"{fpha.SPLIT_FILE}: split file not found"):
        load_fpha(root, cache_dir=False)
    (root / "split.bak").rename(root / fpha.SPLIT_FILE)
    (root / fpha.ANNOTATION_DIR).rename(root / "annotations.bak")
    with pytest.raises(DataError, match=f"{fpha.ANNOTATION_DIR}: directory not found"):
        load_fpha(root, cache_dir=False)


def test_check_fpha_counts_names_mismatch(fpha_root):
    with pytest.raises(DataError, match=r"\(train, test\) sequence counts: expected \[600, 575\]"):
        check_fpha_counts(load_fpha(fpha_root[0], cache_dir=False))


# ---------------------------------------------------------------------------------------------
# Cache


def _cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _assert_same(a: SkeletonDataset, b: SkeletonDataset) -> None:
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.groups, b.groups)
    for x, y in zip(a.sequences, b.sequences, strict=True):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    ("loader", "module", "parse_fn", "root_fixture"),
    [
        (load_sbu, sbu, "_read_sbu_file", "sbu_root"),
        (load_fpha, fpha, "_read_fpha_file", "fpha_root"),
    ],
)
def test_cache_hit_skips_parsing(
    request, tmp_path, monkeypatch, loader, module, parse_fn, root_fixture
):
    root, _ = request.getfixturevalue(root_fixture)
    cache_dir = tmp_path / "cache"
    first = loader(root, cache_dir=cache_dir)
    files = _cache_files(cache_dir)
    assert len(files) == 2 and {Path(f).suffix for f in files} == {".npz", ".json"}
    _forbid(monkeypatch, module, parse_fn)
    _assert_same(first, loader(root, cache_dir=cache_dir))


def test_cache_is_invalidated_when_a_file_changes(sbu_root, tmp_path, monkeypatch):
    root, _ = sbu_root
    cache_dir = tmp_path / "cache"
    load_sbu(root, cache_dir=cache_dir)
    path = root / "s01s02/03/001/skeleton_pos.txt"
    replace_line(path, 1, "oops")
    with pytest.raises(DataError, match=f"{path}:1:"):
        load_sbu(root, cache_dir=cache_dir)
    # A content-preserving rewrite changes only the mtime: re-parsed, and the stale entry goes.
    good = make_sbu_tree(tmp_path / "other")["s01s02/03/001"]
    write_sbu_file(path, good)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls = _count_calls(monkeypatch, sbu, "_read_sbu_file")
    ds = load_sbu(root, cache_dir=cache_dir)
    assert len(calls) == len(ds)
    np.testing.assert_array_equal(ds.sequences[ds.ids.index("s01s02/03/001")], good)
    assert len(_cache_files(cache_dir)) == 2


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda npz, meta: npz.write_bytes(b"not a zip"), id="garbage-npz"),
        pytest.param(lambda npz, meta: npz.write_bytes(npz.read_bytes()[:-100]), id="truncated"),
        pytest.param(lambda npz, meta: meta.write_text("{"), id="garbage-json"),
        pytest.param(lambda npz, meta: npz.unlink(), id="npz-missing"),
        pytest.param(
            lambda npz, meta: meta.write_text(
                json.dumps({**json.loads(meta.read_text()), "ids": ["x"]})
            ),
            id="wrong-ids",
        ),
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(sbu_root, tmp_path, monkeypatch, damage):
    root, _ = sbu_root
    cache_dir = tmp_path / "cache"
    fresh = load_sbu(root, cache_dir=cache_dir)
    npz = next(cache_dir.glob("*.npz"))
    damage(npz, npz.with_suffix(".json"))
    calls = _count_calls(monkeypatch, sbu, "_read_sbu_file")
    _assert_same(fresh, load_sbu(root, cache_dir=cache_dir))
    assert len(calls) == len(fresh)  # re-parsed rather than trusting the damaged entry
    _forbid(monkeypatch, sbu, "_read_sbu_file")
    _assert_same(fresh, load_sbu(root, cache_dir=cache_dir))  # and the entry was rewritten


def test_tampered_but_valid_npz_is_not_trusted(sbu_root, tmp_path, monkeypatch):
    root, _ = sbu_root
    cache_dir = tmp_path / "cache"
    fresh = load_sbu(root, cache_dir=cache_dir)
    npz = next(cache_dir.glob("*.npz"))
    with np.load(npz) as data:
        arrays = dict(data)
    arrays["frames"] = arrays["frames"] + np.float32(1)
    with npz.open("wb") as f:
        np.savez(f, **arrays)
    _assert_same(fresh, load_sbu(root, cache_dir=cache_dir))


def test_cache_disabled_and_default_location(sbu_root, tmp_path, monkeypatch):
    root, _ = sbu_root
    calls = _count_calls(monkeypatch, sbu, "_read_sbu_file")
    load_sbu(root, cache_dir=False)
    load_sbu(root, cache_dir=False)
    assert len(calls) == 14
    assert not (tmp_path / "default-cache").exists()
    load_sbu(root)  # cache_dir=None: $GCNPRUNE_CACHE_DIR (set by the autouse fixture)
    assert len(_cache_files(tmp_path / "default-cache")) == 2


def test_cache_never_written_inside_data_dir(sbu_root):
    root, _ = sbu_root
    before = sorted(p for p in root.rglob("*"))
    with pytest.warns(UserWarning, match="inside the data directory"):
        load_sbu(root, cache_dir=root / "cache")
    assert sorted(p for p in root.rglob("*")) == before


def test_unwritable_cache_only_warns(sbu_root, tmp_path):
    root, _ = sbu_root
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="could not write dataset cache"):
        ds = load_sbu(root, cache_dir=blocker / "cache")
    assert len(ds) == 7


# ---------------------------------------------------------------------------------------------
# load_dataset


def test_load_dataset_resolves_directories(sbu_root, fpha_root, tmp_path, monkeypatch):
    sbu_dir, _ = sbu_root
    assert len(load_dataset("sbu", sbu_dir, cache_dir=False, verify_counts=False)) == 7
    with pytest.raises(DataError) as info:
        load_dataset("fpha")
    assert "--data-dir" in str(info.value) and "GCNPRUNE_DATA_DIR" in str(info.value)
    monkeypatch.setenv("GCNPRUNE_DATA_DIR", str(tmp_path))  # holds sbu/ and fpha/
    assert len(load_dataset("fpha", cache_dir=False, verify_counts=False)) == 5
    assert len(load_dataset("sbu", cache_dir=False, verify_counts=False)) == 7
    with pytest.raises(ConfigError, match="unknown dataset 'ntu'"):
        load_dataset("ntu")


def test_load_dataset_synthetic_is_lazy(monkeypatch):
    seen = []
    fake = types.ModuleType("gcnprune_jax.data.synthetic")

    def make_synthetic(seed: int = 0):
        seen.append(seed)
        return "synthetic-dataset"

    fake.make_synthetic = make_synthetic
    monkeypatch.setitem(sys.modules, "gcnprune_jax.data.synthetic", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset("synthetic", seed=3) == "synthetic-dataset"
    assert seen == [3]


def test_load_dataset_refuses_a_truncated_copy(sbu_root):
    # The CLI path verifies the known counts: 7 sequences are not SBU's 282.
    with pytest.raises(DataError, match=r"282"):
        load_dataset("sbu", sbu_root[0], cache_dir=False)
