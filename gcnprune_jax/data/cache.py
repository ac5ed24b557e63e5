"""On-disk cache of parsed datasets, so that only the first load pays for text parsing.

An entry is two files in the cache directory:

- `<name>-<key>.npz`: `frames` (sum of T, V, 3) float32 (all sequences concatenated along time),
  `lengths` (N,) int64, `labels` (N,) int64, `groups` (N,) int64;
- `<name>-<key>.json`: format version, dataset name, root, key, sequence ids and the sha256 of the
  .npz. It is written last, so a complete .json marks a complete entry.

The key hashes the dataset name, the root's absolute path, every source file's relative path, size,
mtime, inode and ctime, and `FORMAT_VERSION`: editing, adding or removing a data file yields a new
key. Size and mtime alone are not enough: a same-size edit whose mtime is restored (`rsync -t`,
`cp -p`, `touch -r`, an unpacked archive) would be served from the stale entry; such a copy is a
new inode, and an in-place write or `utime` moves the ctime, which no user can set back. An entry
is trusted only if its .npz hashes to the recorded sha256 and its contents match what the loader
derived from the layout itself (ids, labels, groups); anything else counts as a miss and is
rewritten. The cache never lives inside the data directory, which may be read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Bump whenever the parse result or the entry layout changes, so old entries are never reused.
FORMAT_VERSION = 1

CACHE_ENV = "GCNPRUNE_CACHE_DIR"

CacheDirArg = str | os.PathLike[str] | bool | None


def default_cache_dir() -> Path:
    """`$GCNPRUNE_CACHE_DIR` if set (and non-empty), else `~/.cache/gcnprune-jax`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gcnprune-jax"


def resolve_cache_dir(cache_dir: CacheDirArg, data_root: Path) -> Path | None:
    """The directory to use for caching `data_root`, or None when caching is off.

    Args:
      cache_dir: None or True for the default (`default_cache_dir`), False to disable caching,
        or a directory.
      data_root: the dataset root; a cache directory inside it (or equal to it) is refused with a
        warning, because data directories may be read-only and must stay pristine.
    """
    if cache_dir is False:
        return None
    path = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
    path = path.expanduser().absolute()
    root = data_root.absolute()
    resolved, resolved_root = path.resolve(), root.resolve()
    if resolved == resolved_root or resolved_root in resolved.parents:
        warnings.warn(
            f"cache directory {path} is inside the data directory {root}; not caching",
            stacklevel=3,
        )
        return None
    return path


def cache_key(name: str, root: Path, files: Sequence[Path]) -> str:
    """Hex sha256 over name, absolute root, each file's path relative to root, size, mtime,
    inode and ctime (see the module docstring for why all four)."""
    root = root.absolute()
    listing = []
    for path in files:
        st = path.stat()
        listing.append(
            [
                path.relative_to(root).as_posix(),
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                st.st_ctime_ns,
            ]
        )
    blob = json.dumps(
        {"format_version": FORMAT_VERSION, "name": name, "root": str(root), "files": listing},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def load_or_parse(
    name: str,
    root: Path,
    files: Sequence[Path],
    *,
    ids: Sequence[str],
    labels: np.ndarray,
    groups: np.ndarray,
    parse: Callable[[], list[np.ndarray]],
    cache_dir: CacheDirArg,
) -> tuple[np.ndarray, ...]:
    """Return the parsed sequences, from the cache when a valid entry exists, else via `parse`.

    Args:
      name: dataset name ("sbu", "fpha"), part of the key and of the entry's file name.
      root: dataset root; `files` must lie under it.
      files: every source file the sequences are parsed from (their stats form the key).
      ids, labels, groups: (N,) what the loader derived from the layout or split file; a cached
        entry must agree with them exactly, and they are stored alongside the sequences.
      parse: parses all N sequences, each (T_i, V, 3) float32, in the order of `ids`; it must do
        all content validation, since whatever it returns is cached.
      cache_dir: see `resolve_cache_dir`.

    Returns:
      N float32 arrays (T_i, V, 3), in the order of `ids`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    directory = resolve_cache_dir(cache_dir, root)
    key = cache_key(name, root, files) if directory is not None else ""
    if directory is not None:
        cached = _read_entry(directory, name, key, ids=ids, labels=labels, groups=groups)
        if cached is not None:
            return cached
    sequences = tuple(parse())
    if directory is not None:
        _write_entry(directory, name, key, root, ids, labels, groups, sequences)
    return sequences


def entry_paths(directory: Path, name: str, key: str) -> tuple[Path, Path]:
    """(npz, json) paths of the entry for `name` and `key` in `directory`."""
    stem = f"{name}-{key[:32]}"
    return directory / f"{stem}.npz", directory / f"{stem}.json"


def _read_entry(
    directory: Path,
    name: str,
    key: str,
    *,
    ids: Sequence[str],
    labels: np.ndarray,
    groups: np.ndarray,
) -> tuple[np.ndarray, ...] | None:
    """The cached sequences if the entry exists and checks out in every respect, else None."""
    npz_path, json_path = entry_paths(directory, name, key)
    try:
        meta = json.loads(json_path.read_text())
        blob = npz_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or (
        meta.get("format_version"),
        meta.get("name"),
        meta.get("key"),
        meta.get("ids"),
        meta.get("npz_sha256"),
    ) != (FORMAT_VERSION, name, key, list(ids), hashlib.sha256(blob).hexdigest()):
        return None
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            frames, lengths = npz["frames"], npz["lengths"]
            cached_labels, cached_groups = npz["labels"], npz["groups"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    n = len(ids)
    if not (
        frames.dtype == np.float32
        and frames.ndim == 3
        and frames.shape[2] == 3
        and lengths.shape == (n,)
        and np.all(lengths > 0)
        and int(lengths.sum()) == frames.shape[0]
        and np.array_equal(cached_labels, labels)
        and np.array_equal(cached_groups, groups)
    ):
        return None
    return tuple(np.split(frames, np.cumsum(lengths)[:-1]))


def _write_entry(
    directory: Path,
    name: str,
    key: str,
    root: Path,
    ids: Sequence[str],
    labels: np.ndarray,
    groups: np.ndarray,
    sequences: Sequence[np.ndarray],
) -> None:
    """Write the entry atomically (temp file + rename); failures only warn, loading goes on."""
    npz_path, json_path = entry_paths(directory, name, key)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        frames=np.concatenate(sequences, axis=0).astype(np.float32, copy=False),
        lengths=np.array([len(s) for s in sequences], dtype=np.int64),
        labels=labels,
        groups=groups,
    )
    blob = buffer.getvalue()
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "root": str(root.absolute()),
        "key": key,
        "npz_sha256": hashlib.sha256(blob).hexdigest(),
        "ids": list(ids),
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(npz_path, blob)
        _atomic_write(json_path, json.dumps(meta).encode())
    except OSError as exc:
        warnings.warn(f"could not write dataset cache in {directory}: {exc}", stacklevel=3)
        return
    _remove_stale_entries(directory, name, meta["root"], keep=json_path)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; a cache shared between users or containers must stay readable.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_stale_entries(directory: Path, name: str, root: str, keep: Path) -> None:
    """Delete older entries of the same dataset and root: their source files have changed."""
    for json_path in directory.glob(f"{name}-*.json"):
        if json_path == keep:
            continue
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("name") == name and meta.get("root") == root:
            with contextlib.suppress(OSError):
                json_path.unlink()
                json_path.with_suffix(".npz").unlink()
