"""Exception types. Each kind of failure has its own type; the CLI turns them into exit status 2.

Every message names what is at fault (a file and line, an option, a field) and what was expected.
"""

from __future__ import annotations


class GcnpruneError(Exception):
    """Errors a user can cause and fix (bad files, bad options); the CLI exits 2 on them."""


class DataError(GcnpruneError):
    """A dataset file or directory is missing, malformed or inconsistent with known counts."""


class ConfigError(GcnpruneError):
    """An option or configuration value is impossible (e.g. a rate outside [0, 1))."""


class CheckpointError(GcnpruneError):
    """A checkpoint directory is missing, incomplete or does not match the requested run."""


class DivergenceError(GcnpruneError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


class OutputError(GcnpruneError):
    """The output directory cannot be written (a file where a directory is expected, a
    read-only file system, a full disk); the last complete checkpoint is kept."""
