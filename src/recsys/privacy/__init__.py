"""Privacy: consent per purpose, PII encryption, the audit trail, access and erasure.

The top of the real-time side. The record formats the lower layers need
(consent records and policy, PII encryption, the audit writer) live in
:mod:`recsys.events` and are re-exported here.
"""

from recsys.privacy.access import export_user
from recsys.privacy.audit import AuditIntegrityError, AuditLog, subject_pseudonym
from recsys.privacy.consent import (
    ConsentPolicy,
    ConsentRecord,
    ConsentRegistry,
    ConsentRequiredError,
    Purpose,
)
from recsys.privacy.crypto import MissingPiiKeyError, PiiCipher, generate_key
from recsys.privacy.erasure import erase_user, filter_erased, is_erased

__all__ = [
    "AuditIntegrityError",
    "AuditLog",
    "ConsentPolicy",
    "ConsentRecord",
    "ConsentRegistry",
    "ConsentRequiredError",
    "MissingPiiKeyError",
    "PiiCipher",
    "Purpose",
    "erase_user",
    "export_user",
    "filter_erased",
    "generate_key",
    "is_erased",
    "subject_pseudonym",
]
