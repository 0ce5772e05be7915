"""Reading profiles and writing static attributes, with audit and consent.

:class:`ProfileService` is what an API or the serving layer calls:

* :meth:`~ProfileService.features` - the feature row for the ranker / Triton;
* :meth:`~ProfileService.profile` - the dynamic profile (audited read);
* :meth:`~ProfileService.set_attributes` - declared attributes from the user;
* :meth:`~ProfileService.merge_enrichment` - third-party attributes with source
  and confidence (needs ``third_party_enrichment`` consent);
* :meth:`~ProfileService.attributes` - static attributes, PII decrypted.

Writes bump the user's record version, so a running consumer reloads the user
before its next commit and segment rules see the new attributes.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> service = ProfileService(SqliteStore())
    >>> _ = service.set_attributes("u1", {"age": 29}, actor="u1")
    >>> service.attributes("u1", actor="support:ann")["age"].value
    29
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from recsys.events.audit import AuditLog
from recsys.events.consent import ConsentPolicy, ConsentRequiredError, Purpose
from recsys.events.pii import PiiCipher
from recsys.events.store import RealtimeStore
from recsys.features.schema import FeatureSchema
from recsys.profiles.attributes import DECLARED, AttributeSchema, AttributeValue
from recsys.profiles.config import ProfileConfig
from recsys.profiles.features import ProfileFeatures, profile_features
from recsys.profiles.state import UserProfile


class ProfileService:
    """Profile reads and attribute writes; see the module docstring.

    Args:
        store: the real-time store.
        schema: feature schema for :meth:`features`.
        config: profile settings; defaults from ``schema``.
        attributes: allowed static attributes.
        cipher: PII encryption; defaults to ``RECSYS_PII_KEY``.
        consent: policy for missing consent records.
        audit_feature_reads: audit every :meth:`features` call (off by
            default: the ranker reads on every request; other reads are
            always audited).
    """

    def __init__(
        self,
        store: RealtimeStore,
        schema: FeatureSchema | None = None,
        config: ProfileConfig | None = None,
        attributes: AttributeSchema | None = None,
        cipher: PiiCipher | None = None,
        consent: ConsentPolicy | None = None,
        audit_feature_reads: bool = False,
    ) -> None:
        self.store = store
        self.schema = schema
        self.config = config or (
            ProfileConfig.from_schema(schema) if schema is not None else ProfileConfig()
        )
        self.attribute_schema = attributes or AttributeSchema.default()
        self.cipher = cipher or PiiCipher.from_env()
        self.consent = consent or ConsentPolicy()
        self.audit = AuditLog(store)
        self.audit_feature_reads = audit_feature_reads

    def _load(self, user_id: str) -> tuple[UserProfile | None, dict[str, str], frozenset[Purpose]]:
        rec = self.store.load_users([user_id])[user_id]
        profile = UserProfile.from_doc(json.loads(rec.profile)) if rec.profile else None
        return profile, rec.attributes, self.consent.granted(rec.consent)

    def profile(self, user_id: str, actor: str) -> UserProfile | None:
        """The stored dynamic profile (None if the user has none); audited."""
        profile, _, _ = self._load(user_id)
        self.audit.record(actor, "profile.read", user_id, ["profile"])
        return profile

    def features(
        self,
        user_id: str,
        as_of_us: int | None = None,
        actor: str = "serving",
        utc_offset_minutes: int | None = None,
    ) -> ProfileFeatures:
        """The user's feature row (an empty profile for unknown users).

        Args:
            user_id: the user.
            as_of_us: request time; defaults to now.
            actor: who reads (for the audit trail when enabled).
            utc_offset_minutes: request's offset for local hour/weekday.
        """
        if self.schema is None:
            raise ValueError("ProfileService needs a feature schema for features()")
        profile, stored, _ = self._load(user_id)
        if self.audit_feature_reads:
            self.audit.record(actor, "profile.features", user_id, ["profile", "attributes"])
        return profile_features(
            profile or UserProfile(user_id),
            self.attribute_schema.plain_values(stored),
            self.schema,
            as_of_us if as_of_us is not None else time.time_ns() // 1000,
            self.config,
            utc_offset_minutes,
        )

    def attributes(self, user_id: str, actor: str) -> dict[str, AttributeValue]:
        """Static attributes with provenance, PII decrypted; audited.

        Raises:
            MissingPiiKeyError: a PII attribute is stored and no key is set.
        """
        _, stored, _ = self._load(user_id)
        self.audit.record(actor, "attributes.read", user_id, sorted(stored))
        return {
            name: self.attribute_schema.decode(name, text, self.cipher)
            for name, text in stored.items()
            if name in self.attribute_schema
        }

    def set_attributes(
        self,
        user_id: str,
        values: Mapping[str, Any],
        actor: str,
        source: str = DECLARED,
        confidence: float = 1.0,
    ) -> dict[str, AttributeValue]:
        """Validates and stores attributes, merged by provenance.

        All values are checked before anything is written: one unknown
        attribute or bad value rejects the whole call.

        Args:
            user_id: the user.
            values: attribute name -> value (None deletes).
            actor: who writes (audited).
            source: ``"declared"`` or the enrichment provider.
            confidence: in [0, 1]; declared values are stored with 1.0.

        Returns:
            The values that were written (those that won the merge).

        Raises:
            AttributeValidationError: unknown attribute or bad value.
            ConsentRequiredError: third-party values without consent.
            MissingPiiKeyError: a PII value and no ``RECSYS_PII_KEY``.
        """
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        checked = {
            name: (None if v is None else self.attribute_schema.check(name, v))
            for name, v in values.items()
        }
        _, stored, granted = self._load(user_id)
        if source != DECLARED and Purpose.THIRD_PARTY_ENRICHMENT not in granted:
            raise ConsentRequiredError(
                f"user has not consented to third_party_enrichment; values from {source!r} "
                "were not stored"
            )
        now = time.time_ns() // 1000
        writes: dict[str, str | None] = {}
        written: dict[str, AttributeValue] = {}
        for name, value in checked.items():
            if value is None:
                writes[name] = None
                continue
            new = AttributeValue(value, source, 1.0 if source == DECLARED else confidence, now)
            old = (
                self.attribute_schema.decode(name, stored[name], self.cipher)
                if name in stored
                else None
            )
            if new.wins_over(old):
                writes[name] = self.attribute_schema.encode(name, new, self.cipher)
                written[name] = new
        if writes:
            self.store.write_attributes(user_id, writes)
        self.audit.record(
            actor,
            "attributes.write",
            user_id,
            sorted(writes),
            {"source": source, "kept": sorted(written)},
        )
        return written

    def merge_enrichment(
        self, user_id: str, source: str, values: Mapping[str, Any], confidence: float, actor: str
    ) -> dict[str, AttributeValue]:
        """Merges third-party attributes; see :meth:`set_attributes`."""
        if source == DECLARED:
            raise ValueError("enrichment needs the provider's name as source")
        return self.set_attributes(user_id, values, actor, source=source, confidence=confidence)
