"""The append-only audit trail of reads and changes of personal data.

Each entry says who (``actor``), what (``action``, ``fields``), about whom
(``subject``: a pseudonym of the user id, see :func:`subject_pseudonym`, so
the trail itself holds no raw user ids and survives erasure) and when
(``at_us``). Entries are hash-chained: each stores the sha256 of the previous
entry's hash and its own canonical JSON, and :meth:`AuditLog.verify` finds any
edit. The SQLite store also refuses UPDATE and DELETE on the table.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> audit = AuditLog(SqliteStore())
    >>> _ = audit.record("support:ann", "profile.read", "u1", ["segments"])
    >>> [e.body["action"] for e in audit.entries(subject="u1")], audit.verify()
    (['profile.read'], 1)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from recsys.events.store import AuditRecord, RealtimeStore, canonical_json


class AuditIntegrityError(RuntimeError):
    """The audit trail's hash chain is broken (an entry was changed or removed)."""


def subject_pseudonym(user_id: str) -> str:
    """A stable pseudonym of a user id (sha256), used in the audit trail and
    the erasure ledger. Pseudonymous, not anonymous: whoever has a user id
    can find that user's entries."""
    return hashlib.sha256(f"recsys-subject:{user_id}".encode()).hexdigest()


class AuditLog:
    """Records and reads audit entries in a store.

    Args:
        store: where the trail lives.
    """

    def __init__(self, store: RealtimeStore) -> None:
        self.store = store

    def record(
        self,
        actor: str,
        action: str,
        subject: str | None,
        fields: Sequence[str] = (),
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Appends one entry.

        Args:
            actor: who acted (``"api:<key name>"``, ``"support:<name>"``, ``"system"``);
                the subject acting on their own data is stored as ``"self"``.
            action: what was done, e.g. ``"profile.read"``, ``"consent.change"``.
            subject: the user whose data was read or changed (stored pseudonymized).
            fields: which fields or stores were involved.
            detail: extra facts without personal data (counts, purposes).
        """
        if not actor:
            raise ValueError("audit entries need an actor")
        # A user acting on their own data is recorded as "self", so the trail
        # keeps no raw user id that erasure would have to find.
        body: dict[str, Any] = {
            "actor": "self" if subject is not None and actor == subject else actor,
            "action": action,
            "subject": subject_pseudonym(subject) if subject is not None else None,
            "fields": list(fields),
            "at_us": time.time_ns() // 1000,
        }
        if detail:
            body["detail"] = detail
        return self.store.append_audit(body)

    def entries(
        self, subject: str | None = None, actor: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        """Entries, oldest first, filtered by user id, actor and action."""
        pseudo = subject_pseudonym(subject) if subject is not None else None
        if actor is not None and actor == subject:
            actor = "self"
        return [
            r
            for r in self.store.audit_records()
            if (pseudo is None or r.body.get("subject") == pseudo)
            and (actor is None or r.body.get("actor") == actor)
            and (action is None or r.body.get("action") == action)
        ]

    def verify(self) -> int:
        """Checks the hash chain.

        Returns:
            The number of entries checked.

        Raises:
            AuditIntegrityError: naming the first entry that does not match.
        """
        prev = ""
        records = self.store.audit_records()
        for i, r in enumerate(records, start=1):
            expected = hashlib.sha256((prev + canonical_json(r.body)).encode()).hexdigest()
            if r.seq != i or r.prev_hash != prev or r.hash != expected:
                raise AuditIntegrityError(f"audit entry {r.seq} does not match the hash chain")
            prev = r.hash
        return len(records)
