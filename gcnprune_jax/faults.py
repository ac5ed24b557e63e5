"""Fault injection for reliability tests: kill, interrupt, poison or fail a run at a chosen,
deterministic point, so that tests never depend on timing.

Faults are read from the environment variable `GCNPRUNE_FAULT`, a comma-separated list of
`ACTION:EVENT:N` entries: when EVENT happens for the N-th time (counted from 1 in this
process), ACTION is done. Events, in the order a run meets them:

- `piece`: a training piece (a few epochs of one compiled program) has finished and its state
  is held in memory, before any checkpoint of it is written;
- `save`: a checkpoint write has started and is not finished (its files are being written);
- `write`: a checkpoint write is about to start.

Actions:

- `kill`: SIGKILL this process (nothing is cleaned up, exactly like `kill -9`);
- `interrupt`: SIGINT this process (as Ctrl-C does);
- `nan`: (piece only) make the next piece's parameters non-finite, so its loss diverges;
- `enospc`, `erofs`: (write only) fail the write, before any file of it is written, with
  "No space left on device" or "Read-only file system".

Example: `GCNPRUNE_FAULT=kill:save:2 gcnprune prune ...` kills the run while it writes its
second checkpoint. Unset (the normal case), every hook is a no-op.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "GCNPRUNE_FAULT"
ACTIONS = {
    "piece": ("kill", "interrupt", "nan"),
    "save": ("kill", "interrupt"),
    "write": ("enospc", "erofs"),
}

_counts: Counter[str] = Counter()


def _parse(text: str) -> list[tuple[str, str, int]]:
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":")
        if len(parts) != 3 or parts[1] not in ACTIONS or parts[0] not in ACTIONS[parts[1]]:
            choices = "; ".join(f"{ev}: {', '.join(acts)}" for ev, acts in ACTIONS.items())
            raise ValueError(
                f"{ENV}={text!r}: bad entry {entry!r}; expected ACTION:EVENT:N with "
                f"(event: actions) {choices}"
            )
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise ValueError(f"{ENV}={text!r}: bad count in {entry!r}; expected an integer >= 1")
        faults.append((parts[0], parts[1], int(parts[2])))
    return faults


def hit(event: str) -> str | None:
    """Count one occurrence of `event`; do the fault set for it, if any. Returns the action
    that the caller has to carry out itself ("nan"), or None."""
    text = os.environ.get(ENV)
    if not text:
        return None
    _counts[event] += 1
    for action, ev, n in _parse(text):
        if ev != event or n != _counts[event]:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "interrupt":
            os.kill(os.getpid(), signal.SIGINT)
        elif action in ("enospc", "erofs"):
            code = errno.ENOSPC if action == "enospc" else errno.EROFS
            raise OSError(code, os.strerror(code) + f" (injected by {ENV})")
        else:
            return action
    return None


def reset() -> None:
    """Forget the counted events (for in-process tests that run several times)."""
    _counts.clear()
