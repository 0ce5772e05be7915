"""Right to erasure: delete a user everywhere, and keep them out of training data.

:func:`erase_user` deletes the user's record (profile, attributes, consent),
consent history, stored events, stream entries, dead letters, segment
memberships and membership history, then adds a tombstone (the user id's
pseudonym) to the erasure ledger and audits the erasure. Derived training
data is rebuilt from logs: the next build calls :func:`filter_erased` to drop
erased users' rows.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> store = SqliteStore()
    >>> erase_user(store, "u1", actor="dpo:kim")["events"]
    0
    >>> is_erased(store, "u1")
    True
"""

from __future__ import annotations

import pandas as pd

from recsys.data.frame import USER
from recsys.events.store import RealtimeStore
from recsys.privacy.audit import AuditLog, subject_pseudonym


def erase_user(store: RealtimeStore, user_id: str, actor: str) -> dict[str, int]:
    """Deletes every trace of ``user_id``.

    Returns:
        Items deleted per store (``profile``, ``events``, ``stream``, ...).
    """
    counts = store.erase_user(user_id, subject_pseudonym(user_id))
    AuditLog(store).record(actor, "subject.erase", user_id, sorted(counts), dict(counts))
    return counts


def is_erased(store: RealtimeStore, user_id: str) -> bool:
    """Whether ``user_id`` was erased."""
    return subject_pseudonym(user_id) in store.erased()


def filter_erased(
    frame: pd.DataFrame, store: RealtimeStore, column: str = USER
) -> tuple[pd.DataFrame, int]:
    """Drops erased users' rows from a training frame.

    Args:
        frame: interactions (or any table with a user column).
        store: holds the erasure ledger.
        column: the user id column.

    Returns:
        ``(kept rows, number of rows dropped)``.
    """
    ledger = store.erased()
    if not ledger or frame.empty:
        return frame, 0
    users = frame[column].astype(str)
    erased_ids = {u for u in users.unique() if subject_pseudonym(u) in ledger}
    mask = users.isin(erased_ids)
    return frame.loc[~mask], int(mask.sum())
