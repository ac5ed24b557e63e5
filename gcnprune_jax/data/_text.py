"""Strict parsing of the numeric text tables both datasets store (one row per frame).

The fast path hands the whole file to `np.loadtxt` (C parser). Only when that fails, or its result
looks wrong, do we re-scan line by line, purely to report the first bad line precisely.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from gcnprune_jax.errors import DataError


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
      DataError: the file is missing, unreadable, empty, or a line has the wrong field count, a
        non-numeric or a non-finite value, or is blank; the message names the file and line.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected {what}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror}); expected {what}") from None
    if not raw.strip():
        raise DataError(f"{path}: file is empty; expected {what}")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: non-ASCII byte {raw[exc.start]:#04x}; expected {what}"
        ) from None
    # Trailing newlines / whitespace at the end of the file are harmless; blank lines anywhere
    # else are not (they would silently shift the row index that we use as time).
    text = text.replace("\r\n", "\n").rstrip()
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
        if "\r" in line:
            raise DataError(f"{where}: stray carriage return inside the line; expected {what}")
        if not line.strip():
            raise DataError(f"{where}: blank line; expected {what}")
        fields = line.split(delimiter)
        if len(fields) != n_fields:
            raise DataError(
                f"{where}: expected {n_fields} {sep_name}-separated fields, found {len(fields)}"
            )
        for col, field in enumerate(fields, start=1):
            try:
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
