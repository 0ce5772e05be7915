"""Recording consent decisions per purpose, with time and source.

Purposes and what each one allows:

=========================  ================================================
purpose                    allows
=========================  ================================================
``analytics``              keeping the user's events in the event store
``personalization``        updating the profile and segment memberships
``third_party_enrichment`` merging attributes from third-party sources
=========================  ================================================

An event is applied for each purpose the user has granted and for no other:
with only ``analytics`` it is stored but the profile is untouched; with
neither it is acknowledged and counted as skipped. Without a record, a
purpose is refused unless the :class:`ConsentPolicy` grants it by default.
(The record format and policy are in :mod:`recsys.events.consent`.)

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> registry = ConsentRegistry(SqliteStore())
    >>> _ = registry.record("u1", Purpose.PERSONALIZATION, True, source="web-banner", actor="u1")
    >>> sorted(p.value for p in registry.granted("u1"))
    ['personalization']
"""

from __future__ import annotations

import time

from recsys.events.audit import AuditLog
from recsys.events.consent import ConsentPolicy, ConsentRecord, ConsentRequiredError, Purpose
from recsys.events.store import RealtimeStore

__all__ = [
    "ConsentPolicy",
    "ConsentRecord",
    "ConsentRegistry",
    "ConsentRequiredError",
    "Purpose",
]


class ConsentRegistry:
    """Records and reads consent decisions.

    Args:
        store: where consent lives (in the user's record, so the consumer
            sees a change on its next commit).
        policy: how missing records are read.
        audit: trail for consent changes; defaults to one on ``store``.
    """

    def __init__(
        self,
        store: RealtimeStore,
        policy: ConsentPolicy | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or ConsentPolicy()
        self.audit = audit or AuditLog(store)

    def record(
        self,
        user_id: str,
        purpose: Purpose | str,
        granted: bool,
        source: str,
        actor: str,
        at_us: int | None = None,
    ) -> ConsentRecord:
        """Records a decision (the newest one counts) and audits it.

        Args:
            user_id: whose consent.
            purpose: one of :class:`Purpose`.
            granted: given (True) or refused/withdrawn (False).
            source: where it was collected.
            actor: who recorded it.
            at_us: when it was given; defaults to now.
        """
        if not source:
            raise ValueError("a consent record needs its source")
        rec = ConsentRecord(
            Purpose(purpose), bool(granted), at_us or time.time_ns() // 1000, source, actor
        )
        self.store.write_consent(user_id, rec.purpose.value, rec.to_json())
        self.audit.record(
            actor,
            "consent.change",
            user_id,
            [rec.purpose.value],
            {"granted": rec.granted, "source": source},
        )
        return rec

    def granted(self, user_id: str) -> frozenset[Purpose]:
        """Purposes the user has granted now (policy defaults included)."""
        rec = self.store.load_users([user_id])[user_id]
        return self.policy.granted(rec.consent)

    def current(self, user_id: str) -> dict[Purpose, ConsentRecord]:
        """The newest record per purpose (purposes never decided are absent)."""
        rec = self.store.load_users([user_id])[user_id]
        return {Purpose(p): ConsentRecord.from_json(t) for p, t in rec.consent.items()}

    def history(self, user_id: str) -> list[ConsentRecord]:
        """Every decision of the user, oldest first."""
        return [ConsentRecord.from_json(t) for t in self.store.consent_history(user_id)]

    def require(self, user_id: str, purpose: Purpose) -> None:
        """Raises :class:`ConsentRequiredError` unless ``purpose`` is granted."""
        if purpose not in self.granted(user_id):
            raise ConsentRequiredError(f"user has not consented to {purpose.value}")
