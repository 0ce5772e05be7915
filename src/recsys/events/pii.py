"""Encryption of PII fields at rest with a key from the environment.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) and stored as ``pii:v1:<token>``. ``RECSYS_PII_KEY``
holds one key, or several separated by commas for rotation (the first
encrypts; all decrypt). Generate one with :func:`generate_key`.

Example:
    >>> cipher = PiiCipher(generate_key())
    >>> token = cipher.encrypt("alice@example.org")
    >>> token.startswith("pii:v1:"), cipher.decrypt(token)
    (True, 'alice@example.org')
"""

from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PII_KEY_ENV = "RECSYS_PII_KEY"
TOKEN_PREFIX = "pii:v1:"


class MissingPiiKeyError(RuntimeError):
    """PII had to be encrypted or decrypted and no key is configured."""


class PiiDecryptError(ValueError):
    """A stored token does not decrypt with the configured keys."""


def generate_key() -> str:
    """A fresh Fernet key (url-safe base64 text) for ``RECSYS_PII_KEY``."""
    return Fernet.generate_key().decode()


def is_token(value: str) -> bool:
    """True when ``value`` is an encrypted PII token."""
    return value.startswith(TOKEN_PREFIX)


class PiiCipher:
    """Encrypts and decrypts PII values.

    Args:
        keys: comma-separated Fernet keys; None or empty means no key, and
            every encrypt/decrypt raises :class:`MissingPiiKeyError`.
    """

    def __init__(self, keys: str | None) -> None:
        parts = [k.strip() for k in (keys or "").split(",") if k.strip()]
        try:
            self._fernet = MultiFernet([Fernet(k) for k in parts]) if parts else None
        except ValueError as e:
            raise ValueError(
                f"{PII_KEY_ENV} must hold Fernet keys (32 url-safe base64 bytes): {e}"
            ) from None

    @classmethod
    def from_env(cls, var: str = PII_KEY_ENV) -> PiiCipher:
        """A cipher with the keys in environment variable ``var`` (maybe none)."""
        return cls(os.environ.get(var))

    @property
    def has_key(self) -> bool:
        return self._fernet is not None

    def _require(self, what: str) -> MultiFernet:
        if self._fernet is None:
            raise MissingPiiKeyError(
                f"{what}: no encryption key. Set {PII_KEY_ENV} to a Fernet key "
                "(python -c 'from recsys.events.pii import generate_key; "
                "print(generate_key())')"
            )
        return self._fernet

    def encrypt(self, plaintext: str, field: str = "PII field") -> str:
        """Encrypts ``plaintext``; raises :class:`MissingPiiKeyError` without a key."""
        token = self._require(f"cannot write {field}").encrypt(plaintext.encode()).decode()
        return TOKEN_PREFIX + token

    def decrypt(self, token: str, field: str = "PII field") -> str:
        """Decrypts a ``pii:v1:`` token."""
        if not is_token(token):
            raise PiiDecryptError(f"{field}: not an encrypted PII token")
        try:
            return (
                self._require(f"cannot read {field}")
                .decrypt(token[len(TOKEN_PREFIX) :].encode())
                .decode()
            )
        except InvalidToken:
            raise PiiDecryptError(
                f"{field}: token does not decrypt with the keys in {PII_KEY_ENV}"
            ) from None
