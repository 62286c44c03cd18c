"""Slack tokens encrypted at rest: a MultiFernet key ring from TOKEN_ENCRYPTION_KEY and the column type that uses it."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Dialect, String
from sqlalchemy.types import TypeDecorator

# Every Fernet token starts with its version byte 0x80, which is "gA" in URL-safe base64; Slack tokens never do.
_FERNET_PREFIX = "gAAAAA"
# A Fernet token of a 200-character Slack token is about 360 characters; this leaves room for longer tokens.
ENCRYPTED_TOKEN_CHARS = 1000
# Decrypted tokens a cipher keeps (one per stored value: a workspace's bot, each connected user).
_DECRYPTED_KEPT = 1024


class TokenKeyError(ValueError):
    """TOKEN_ENCRYPTION_KEY is missing or malformed, or a stored token cannot be decrypted with its keys."""


class TokenCipher:
    """Encrypts tokens with the first key of the ring and decrypts with any of them (so keys can be rotated).

    Args:
        keys: Fernet keys (URL-safe base64 of 32 bytes), the current one first.

    Raises:
        TokenKeyError: no key, or a key that is not a Fernet key (the key itself is never in the message).
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise TokenKeyError("TOKEN_ENCRYPTION_KEY holds no key")
        fernets: list[Fernet] = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except (ValueError, TypeError):
                raise TokenKeyError(
                    f"key {position} of TOKEN_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        self._ring = MultiFernet(fernets)
        self.key_count = len(fernets)
        # Stored form -> token, for the stored values read lately. Decrypting (HMAC check, AES) was a fifth of a
        # token lookup's CPU, and every draft looks up the same few rows. The store is still read at each use, so
        # a deleted or replaced token is never served from here; at most _DECRYPTED_KEPT entries, then emptied.
        self._decrypted: dict[str, str] = {}

    @classmethod
    def from_setting(cls, value: str) -> TokenCipher:
        """The cipher for a TOKEN_ENCRYPTION_KEY value: comma-separated keys, the current one first."""
        return cls([key for key in value.split(",") if key.strip()])

    @staticmethod
    def new_key() -> str:
        """A fresh random key, for TOKEN_ENCRYPTION_KEY."""
        return Fernet.generate_key().decode()

    def __repr__(self) -> str:
        return f"TokenCipher(keys={self.key_count})"

    def encrypt(self, token: str) -> str:
        """The token encrypted with the current key."""
        return self._ring.encrypt(token.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The token from its stored form.

        Raises:
            TokenKeyError: the value is plaintext or was encrypted with a key that is not in the ring.
        """
        token = self._decrypted.get(stored)
        if token is not None:
            return token
        if not is_encrypted(stored):
            raise TokenKeyError("a stored Slack token is not encrypted: run `slack-backend db upgrade` with the key")
        try:
            token = self._ring.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise TokenKeyError("a stored Slack token was encrypted with a key not in TOKEN_ENCRYPTION_KEY") from None
        if len(self._decrypted) >= _DECRYPTED_KEPT:
            self._decrypted.clear()
        self._decrypted[stored] = token
        return token

    def rotate(self, stored: str) -> str:
        """The stored value re-encrypted with the current key (plaintext is encrypted)."""
        if not is_encrypted(stored):
            return self.encrypt(stored)
        try:
            return self._ring.rotate(stored.encode()).decode()
        except InvalidToken:
            raise TokenKeyError("a stored Slack token was encrypted with a key not in TOKEN_ENCRYPTION_KEY") from None


def is_encrypted(stored: str) -> bool:
    """Whether a stored value is a Fernet token rather than a plaintext Slack token."""
    return stored.startswith(_FERNET_PREFIX)


class EncryptedToken(TypeDecorator[str]):
    """A token column: encrypted on the way in, decrypted on the way out, with one cipher."""

    impl = String(ENCRYPTED_TOKEN_CHARS)
    cache_ok = True

    def __init__(self, cipher: TokenCipher) -> None:
        super().__init__()
        self.cipher = cipher

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.cipher.encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.cipher.decrypt(value)
