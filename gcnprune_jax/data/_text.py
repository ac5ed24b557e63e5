"""Strict parsing of the numeric text tables both datasets store (one row per frame).

The fast path hands the whole file to `np.loadtxt` (C parser). Only when that fails, or its result
looks wrong, do we re-scan line by line, purely to report the first bad line precisely.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
from pathlib import Path

import numpy as np

from gcnprune_jax.errors import DataError

# The first byte that cannot be in an ASCII text file: NUL (binary data, UTF-16) or >= 0x80.
_NOT_TEXT = re.compile(rb"[\x00\x80-\xff]")
_BOMS = (
    (codecs.BOM_UTF8, "a UTF-8 byte-order mark"),
    (codecs.BOM_UTF16_LE, "a UTF-16 byte-order mark (the file is UTF-16 encoded)"),
    (codecs.BOM_UTF16_BE, "a UTF-16 byte-order mark (the file is UTF-16 encoded)"),
)


def check_regular_file(path: Path, *, what: str, kind: str = "file", context: str = "") -> None:
    """Raise a DataError unless `path` is (a symlink to) a regular file that exists.

    Directories, dangling symlinks, symlink loops, FIFOs and devices where a file is expected are
    refused without opening them (reading a FIFO would block forever).

    Args:
      path: the file.
      what: what the file should contain, quoted after "expected".
      kind: how the file is called in the message ("file", "split file").
      context: appended to the problem, e.g. " (named by split.txt:3)".
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            problem = f"dangling symbolic link to {os.readlink(path)}"
        else:
            problem = f"{kind} not found"
        raise DataError(f"{path}: {problem}{context}; expected {what}") from None
    except OSError as exc:  # e.g. a symlink loop, or a parent that is a file
        raise DataError(f"{path}: cannot open ({exc.strerror}){context}; expected {what}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory{context}; expected {what}")
    if not stat.S_ISREG(mode):
        raise DataError(
            f"{path}: not a regular file (a FIFO, socket or device){context}; expected {what}"
        )


def read_text(path: Path, *, what: str, kind: str = "file") -> str:
    """The content of an ASCII text file with LF or CRLF line endings, with LF line endings.

    Raises:
      DataError: `path` is not a readable regular file (see `check_regular_file`), starts with a
        byte-order mark, holds a NUL or non-ASCII byte, or a carriage return that does not end a
        line (CR-only line endings included); the message names the file and, where there is
        one, the line.
    """
    check_regular_file(path, what=what, kind=kind)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {kind} ({exc.strerror}); expected {what}") from None
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise DataError(f"{path}:1: starts with {name}; expected ASCII text: {what}")
    bad = _NOT_TEXT.search(raw)
    if bad is not None:
        line = raw.count(b"\n", 0, bad.start()) + 1
        byte = raw[bad.start()]
        if byte == 0:
            raise DataError(
                f"{path}:{line}: NUL byte (a binary or UTF-16 file?); expected ASCII text: {what}"
            )
        raise DataError(f"{path}:{line}: non-ASCII byte {byte:#04x}; expected {what}")
    text = raw.decode("ascii").replace("\r\n", "\n")
    cr = text.find("\r")
    if cr >= 0:
        line = text.count("\n", 0, cr) + 1
        if "\n" not in text:
            problem = "carriage returns without line feeds (CR-only line endings)"
        else:
            problem = "stray carriage return inside the line (not part of a CRLF line ending)"
        raise DataError(f"{path}:{line}: {problem}; expected LF or CRLF line endings")
    return text


def read_table(path: Path, *, n_fields: int, delimiter: str | None, what: str) -> np.ndarray:
    """Parse a text file of numbers into a (rows, n_fields) float64 array.

    Args:
      path: the file. CRLF and LF line endings are both accepted.
      n_fields: fields expected on every line.
      delimiter: field separator (e.g. ","), or None for runs of whitespace.
      what: a short description of the expected content, quoted in error messages.

    Returns:
      (rows, n_fields) float64 array, one row per line, every value finite (also as float32,
      the dtype the loaders store).

    Raises:
      DataError: the file is missing, not a regular file, unreadable, empty, not ASCII text with
        LF or CRLF line endings (see `read_text`), or a line has the wrong field count, a
        non-numeric or a non-finite value, or is blank; the message names the file and line.
    """
    text = read_text(path, what=what)
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected {what}")
    # Trailing newlines / whitespace at the end of the file are harmless; blank lines anywhere
    # else are not (they would silently shift the row index that we use as time).
    text = text.rstrip()
    n_lines = text.count("\n") + 1
    try:
        table = np.loadtxt(
            io.StringIO(text), delimiter=delimiter, comments=None, dtype=np.float64, ndmin=2
        )
    except ValueError:
        table = None
    # loadtxt skips blank lines and accepts "nan"/"inf", so a successful parse still needs the
    # row count and finiteness checked; float32 because values beyond its range become inf there.
    if table is None or table.shape != (n_lines, n_fields) or not _all_finite_f32(table):
        _raise_first_bad_line(path, text, n_fields=n_fields, delimiter=delimiter, what=what)
    return table


def _all_finite_f32(values: np.ndarray) -> bool:
    """True when every value is finite after the cast to float32 (overflow yields inf, silently)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(values.astype(np.float32)).all())


def _raise_first_bad_line(
    path: Path, text: str, *, n_fields: int, delimiter: str | None, what: str
) -> None:
    """Scan `text` line by line and raise a DataError describing its first malformed line."""
    sep_name = "whitespace" if delimiter is None else repr(delimiter)
    for lineno, line in enumerate(text.split("\n"), start=1):
        where = f"{path}:{lineno}"
        if not line.strip():
            raise DataError(f"{where}: blank line; expected {what}")
        fields = line.split(delimiter)
        if len(fields) != n_fields:
            raise DataError(
                f"{where}: expected {n_fields} {sep_name}-separated fields, found {len(fields)}"
            )
        for col, field in enumerate(fields, start=1):
            try:
                # Python's float() also takes "1_000"; the fast parser (and this format) does not.
                if "_" in field:
                    raise ValueError(field)
                value = float(field)
            except ValueError:
                raise DataError(
                    f"{where}: field {col} is {field.strip()!r}; expected a number"
                ) from None
            if not _all_finite_f32(np.array([value])):
                raise DataError(
                    f"{where}: field {col} is {field.strip()!r}; expected a finite number "
                    "(within float32 range)"
                )
    # Every line is well formed, yet the fast parse disagreed: report rather than guess.
    raise DataError(f"{path}: could not be parsed as {what}, although no single line is malformed")
