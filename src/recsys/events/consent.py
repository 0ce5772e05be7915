"""Consent purposes, records and the policy for missing consent.

The record format and the policy live here, next to the store that keeps
them, so the profile consumer can apply consent without depending on the
privacy package; :class:`recsys.privacy.consent.ConsentRegistry` records
decisions.

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

Example:
    >>> policy = ConsentPolicy.grant_all()
    >>> sorted(p.value for p in policy.granted({"analytics": '{"granted": false}'}))
    ['personalization', 'third_party_enrichment']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from recsys.data.compat import StrEnum


class Purpose(StrEnum):
    """What personal data may be used for."""

    ANALYTICS = "analytics"
    PERSONALIZATION = "personalization"
    THIRD_PARTY_ENRICHMENT = "third_party_enrichment"


class ConsentRequiredError(PermissionError):
    """An operation needs a purpose the user has not granted."""


@dataclass(frozen=True)
class ConsentRecord:
    """One consent decision.

    Attributes:
        purpose: the purpose decided on.
        granted: True for consent given, False for refused or withdrawn.
        at_us: when, epoch microseconds.
        source: where it was collected (``"web-banner"``, ``"app-settings"``, ``"import"``).
        actor: who recorded it (the user, or a system or person acting for them).
    """

    purpose: Purpose
    granted: bool
    at_us: int
    source: str
    actor: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "purpose": self.purpose.value,
                "granted": self.granted,
                "at_us": self.at_us,
                "source": self.source,
                "actor": self.actor,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ConsentRecord:
        d = json.loads(text)
        return cls(
            Purpose(d["purpose"]), bool(d["granted"]), int(d["at_us"]), d["source"], d["actor"]
        )


@dataclass(frozen=True)
class ConsentPolicy:
    """How missing consent is read.

    Attributes:
        default_granted: purposes assumed granted when a user has no record
            for them. Empty (the default) means opt-in for everything; a
            replay of a pseudonymous log (no consent data) may set all.
    """

    default_granted: frozenset[Purpose] = frozenset()

    @classmethod
    def grant_all(cls) -> ConsentPolicy:
        """Every purpose granted unless refused (for pseudonymous logs and benchmarks)."""
        return cls(frozenset(Purpose))

    def granted(self, records: Mapping[str, str]) -> frozenset[Purpose]:
        """Granted purposes, from a user's current records (purpose -> JSON text)."""
        out = set(self.default_granted)
        for purpose, text in records.items():
            try:
                p = Purpose(purpose)
            except ValueError:
                continue
            if json.loads(text).get("granted"):
                out.add(p)
            else:
                out.discard(p)
        return frozenset(out)


def refused(records: Mapping[str, str], purpose: Purpose) -> bool:
    """Whether the user's current records say no to ``purpose`` (granted false).

    Serving reads this for ``personalization``: a user who refused or withdrew it gets
    non-personalized lists; a user without a record is served as the training run's
    data allows (the consumer's :class:`ConsentPolicy` decides what reaches profiles).

    Example:
        >>> refused({"personalization": '{"granted": false}'}, Purpose.PERSONALIZATION)
        True
    """
    text = records.get(purpose.value)
    return text is not None and not json.loads(text).get("granted")
