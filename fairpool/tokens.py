"""Tenant tokens: how they are made, what the scheduler keeps of them, how a proof is checked.

A token is 32 random bytes shown once to the admin who adds the tenant. The
scheduler never stores it: it keeps ``TokenKeys`` (a SCRAM-style pair, RFC
5802): ``stored_key = SHA256(client_key)`` and ``server_key``, both derived
from the token. A client proves it holds the token by sending
``client_key XOR HMAC(stored_key, transcript)``; the scheduler recovers
``client_key`` from that and checks its hash against ``stored_key``. So the
stored keys cannot be used to log in (stealing the journal is not stealing
the tokens), and the scheduler proves itself back with ``server_key``.
Tokens are full-entropy, so no password stretching is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

TOKEN_PREFIX = "fpt_"
TOKEN_BYTES = 32


class TokenError(ValueError):
    """A token string that is not one fairpool made."""


@dataclass(frozen=True)
class TokenKeys:
    """What the scheduler keeps of a tenant's token (safe to journal)."""

    stored_key: bytes
    server_key: bytes

    def __repr__(self) -> str:
        return "TokenKeys(...)"


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(os.urandom(TOKEN_BYTES)).decode().rstrip("=")


def token_bytes(token: str) -> bytes:
    """The token's raw bytes; TokenError if the text is not a fairpool token."""
    text = token.strip()
    if not text.startswith(TOKEN_PREFIX):
        raise TokenError(f"not a fairpool token (they start with {TOKEN_PREFIX!r})")
    body = text[len(TOKEN_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("not a fairpool token (bad encoding)") from None
    if len(raw) != TOKEN_BYTES:
        raise TokenError("not a fairpool token (wrong length)")
    return raw


def client_key(raw: bytes) -> bytes:
    return hmac.new(raw, b"fairpool client key", hashlib.sha256).digest()


def token_keys(token: str) -> TokenKeys:
    raw = token_bytes(token)
    return TokenKeys(hashlib.sha256(client_key(raw)).digest(),
                     hmac.new(raw, b"fairpool server key", hashlib.sha256).digest())


def _signature(stored_key: bytes, transcript: bytes) -> bytes:
    return hmac.new(stored_key, b"fairpool-token\0" + transcript, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def client_proof(token: str, transcript: bytes) -> bytes:
    key = client_key(token_bytes(token))
    return _xor(key, _signature(hashlib.sha256(key).digest(), transcript))


def check_proof(keys: TokenKeys, transcript: bytes, proof: bytes) -> bool:
    if len(proof) != hashlib.sha256().digest_size:
        return False
    recovered = _xor(proof, _signature(keys.stored_key, transcript))
    return hmac.compare_digest(hashlib.sha256(recovered).digest(), keys.stored_key)
