"""Static attributes: schema, provenance merge, PII encryption, consent, audit."""

from __future__ import annotations

import pytest

from recsys.events.store import RealtimeStore
from recsys.privacy.audit import AuditLog
from recsys.privacy.consent import ConsentRegistry, ConsentRequiredError, Purpose
from recsys.privacy.crypto import MissingPiiKeyError, PiiCipher, generate_key
from recsys.profiles.attributes import AttributeSchema, AttributeValidationError, age_bucket
from recsys.profiles.service import ProfileService


@pytest.fixture
def service(store: RealtimeStore) -> ProfileService:
    return ProfileService(store, cipher=PiiCipher(generate_key()))


def test_fields_outside_the_schema_are_rejected_and_nothing_is_stored(
    service: ProfileService,
) -> None:
    with pytest.raises(
        AttributeValidationError, match="shoe_size: attribute is not in the profile"
    ):
        service.set_attributes("u1", {"age": 30, "shoe_size": 42}, actor="u1")
    with pytest.raises(AttributeValidationError, match="age: 300 is outside"):
        service.set_attributes("u1", {"age": 300}, actor="u1")
    with pytest.raises(AttributeValidationError, match="gender: 'robot' is not one of"):
        service.set_attributes("u1", {"gender": "robot"}, actor="u1")
    assert service.store.load_users(["u1"])["u1"].attributes == {}


def test_pii_is_encrypted_at_rest(service: ProfileService) -> None:
    service.set_attributes("u1", {"email": "ann@example.org", "zip": "10115", "age": 31}, "u1")
    stored = service.store.load_users(["u1"])["u1"].attributes
    assert stored["email"].startswith("pii:v1:") and stored["zip"].startswith("pii:v1:")
    assert "ann@example.org" not in stored["email"] and "10115" not in stored["zip"]
    assert '"v":31' in stored["age"]  # not PII: stored in clear
    values = service.attributes("u1", actor="support:kim")
    assert values["email"].value == "ann@example.org" and values["zip"].value == "10115"
    # Segment rules and the consumer only ever see non-PII values.
    assert AttributeSchema.default().plain_values(stored) == {"age": 31}


def test_missing_key_is_a_clear_error(
    store: RealtimeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECSYS_PII_KEY", raising=False)
    service = ProfileService(store)
    with pytest.raises(MissingPiiKeyError, match="RECSYS_PII_KEY"):
        service.set_attributes("u1", {"email": "ann@example.org"}, "u1")
    assert store.load_users(["u1"])["u1"].attributes == {}
    service.set_attributes("u1", {"age": 40}, "u1")  # non-PII still works without a key
    monkeypatch.setenv("RECSYS_PII_KEY", generate_key())
    ProfileService(store).set_attributes("u1", {"email": "ann@example.org"}, "u1")
    assert ProfileService(store).attributes("u1", "u1")["email"].value == "ann@example.org"


def test_enrichment_needs_consent_and_merges_by_source_and_confidence(
    service: ProfileService,
) -> None:
    store = service.store
    with pytest.raises(ConsentRequiredError):
        service.merge_enrichment("u1", "acme-data", {"income_band": "B"}, 0.6, "etl")
    assert store.load_users(["u1"])["u1"].attributes == {}
    ConsentRegistry(store).record("u1", Purpose.THIRD_PARTY_ENRICHMENT, True, "banner", "u1")
    service.merge_enrichment("u1", "acme-data", {"income_band": "B", "age": 50}, 0.6, "etl")
    service.set_attributes("u1", {"age": 33}, actor="u1")  # declared wins
    kept = service.merge_enrichment("u1", "other", {"income_band": "C", "age": 60}, 0.9, "etl")
    assert set(kept) == {"income_band"}  # higher confidence replaces; declared age stays
    service.merge_enrichment("u1", "weak", {"income_band": "D"}, 0.2, "etl")
    values = service.attributes("u1", actor="u1")
    assert values["age"].value == 33 and values["age"].source == "declared"
    assert values["age"].confidence == 1.0
    assert (values["income_band"].value, values["income_band"].source) == ("C", "other")
    assert values["income_band"].confidence == 0.9


def test_reads_and_writes_are_audited(service: ProfileService) -> None:
    service.set_attributes("u7", {"age": 20}, actor="app:signup")
    service.attributes("u7", actor="support:kim")
    service.profile("u7", actor="support:kim")
    trail = AuditLog(service.store).entries(subject="u7")
    assert [(e.body["actor"], e.body["action"]) for e in trail] == [
        ("app:signup", "attributes.write"),
        ("support:kim", "attributes.read"),
        ("support:kim", "profile.read"),
    ]
    assert all("u7" not in str(e.body) for e in trail)  # the trail holds pseudonyms only


def test_age_buckets() -> None:
    assert [age_bucket(a) for a in (None, 17, 18, 24, 25, 34, 35, 49, 55, 56)] == [
        None, "<18", "18-24", "18-24", "25-34", "25-34", "35-44", "45-49", "50-55", "56+",
    ]  # fmt: skip
