"""Right of access: everything stored about a user, as JSON.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> export = export_user(SqliteStore(), "u1", actor="dpo:kim")
    >>> sorted(export)[:4]
    ['attributes', 'consent', 'dead_letters', 'events']
"""

from __future__ import annotations

import json
import time
from typing import Any

from recsys.events.store import RealtimeStore
from recsys.privacy.audit import AuditLog
from recsys.privacy.crypto import PiiCipher, is_token


def export_user(
    store: RealtimeStore, user_id: str, actor: str, cipher: PiiCipher | None = None
) -> dict[str, Any]:
    """Collects the user's profile, attributes (PII decrypted), consent,
    segment memberships and their history, stored events and dead letters.

    Args:
        store: the real-time store.
        user_id: whose data.
        actor: who asked (audited).
        cipher: decrypts PII; defaults to ``RECSYS_PII_KEY``.

    Returns:
        A JSON-ready mapping.

    Raises:
        MissingPiiKeyError: PII is stored and no key is configured.
    """
    cipher = cipher or PiiCipher.from_env()
    rec = store.load_users([user_id])[user_id]
    attributes: dict[str, Any] = {}
    for name, text in sorted(rec.attributes.items()):
        plain = cipher.decrypt(text, field=name) if is_token(text) else text
        d = json.loads(plain)
        attributes[name] = {
            "value": d["v"],
            "source": d["s"],
            "confidence": d["c"],
            "updated_us": d["t"],
        }
    changes = store.segment_log(user_id=user_id)
    current: set[str] = set()
    for m in changes:
        (current.add if m.entered else current.discard)(m.segment)
    events = [json.loads(e) for e in store.user_events(user_id)]
    dead = [
        {"received_us": d.received_us, "source": d.source, "reasons": list(d.reasons), "raw": d.raw}
        for d in store.dead_letters(user_id=user_id, limit=1_000_000)
    ]
    out: dict[str, Any] = {
        "user_id": user_id,
        "exported_at_us": time.time_ns() // 1000,
        "profile": json.loads(rec.profile) if rec.profile else None,
        "attributes": attributes,
        "consent": {
            "current": {p: json.loads(t) for p, t in sorted(rec.consent.items())},
            "history": [json.loads(t) for t in store.consent_history(user_id)],
        },
        "segments": {"current": sorted(current), "changes": [m.to_dict() for m in changes]},
        "events": events,
        "dead_letters": dead,
    }
    AuditLog(store).record(
        actor,
        "subject.export",
        user_id,
        ["profile", "attributes", "consent", "segments", "events", "dead_letters"],
        {"events": len(events), "dead_letters": len(dead)},
    )
    return out
