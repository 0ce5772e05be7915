"""Right to erasure: delete a user everywhere, and keep them out of training data.

:func:`erase_user` deletes the user's record (profile, attributes, consent),
consent history, stored events, stream entries, dead letters, segment
memberships and membership history, then adds a tombstone (the user id's
pseudonym) to the erasure ledger and audits the erasure. Derived training
data is rebuilt from logs: the next build calls :func:`filter_erased` to drop
erased users' rows (the main job's data stage does it with
``data.erasure_ledger``, :mod:`recsys.pipeline`).

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> store = SqliteStore()
    >>> erase_user(store, "u1", actor="dpo:kim")["events"]
    0
    >>> is_erased(store, "u1")
    True
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

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


def _id_texts(column: pd.Series) -> pd.Series:
    """Each user id as the text a real-time user id would be: integers (also
    integral floats, as a column with gaps loads) in decimal, strings as they are."""
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.dropna()
        if len(values) and bool((values == values.round()).all()):
            return column.map(lambda v: str(int(v)) if pd.notna(v) else "nan")
    return column.astype(str)


def filter_erased(
    frame: pd.DataFrame, store: RealtimeStore | AbstractSet[str], column: str = USER
) -> tuple[pd.DataFrame, int]:
    """Drops erased users' rows from a training frame.

    A row's user is erased when the pseudonym of its id's text is in the
    ledger: integer ids (MovieLens) match the erasure of their decimal text
    (``erase_user(store, "196")``); a string id also matches without its
    surrounding whitespace (which cleaning strips).

    Args:
        frame: interactions (or any table with a user column).
        store: holds the erasure ledger, or the ledger's tombstones already
            read (``store.erased()``), to filter several frames against one
            reading.
        column: the user id column.

    Returns:
        ``(kept rows, number of rows dropped)``.
    """
    ledger = store if isinstance(store, AbstractSet) else store.erased()
    if not ledger or frame.empty:
        return frame, 0
    users = _id_texts(frame[column])
    erased_ids = {
        u
        for u in users.unique()
        if subject_pseudonym(u) in ledger
        or (u.strip() != u and subject_pseudonym(u.strip()) in ledger)
    }
    if not erased_ids:
        return frame, 0
    mask = users.isin(erased_ids)
    return frame.loc[~mask.to_numpy()], int(mask.sum())
