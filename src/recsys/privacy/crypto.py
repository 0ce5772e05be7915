"""PII encryption at rest (see :mod:`recsys.events.pii`, where it lives so the
profile layer can use it)."""

from recsys.events.pii import (
    PII_KEY_ENV,
    TOKEN_PREFIX,
    MissingPiiKeyError,
    PiiCipher,
    PiiDecryptError,
    generate_key,
    is_token,
)

__all__ = [
    "PII_KEY_ENV",
    "TOKEN_PREFIX",
    "MissingPiiKeyError",
    "PiiCipher",
    "PiiDecryptError",
    "generate_key",
    "is_token",
]
