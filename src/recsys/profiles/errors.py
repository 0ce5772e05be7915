"""Errors of the event processor.

In a module of their own: :mod:`recsys.profiles.processor` may be compiled with
mypyc (``RECSYS_MYPYC=1``), which does not compile subclasses of built-in
exceptions.
"""

from __future__ import annotations


class CommitConflictError(RuntimeError):
    """A batch kept conflicting with concurrent writers past the retry limit."""


class PoisonEntryError(Exception):
    """Processing one stream entry failed; the processor dead-letters it and
    recomputes the batch without it.

    Args:
        entry_id: the entry.
        reason: what failed, for the dead letter.
    """

    def __init__(self, entry_id: str, reason: str) -> None:
        super().__init__(reason)
        self.entry_id = entry_id
        self.reason = reason
