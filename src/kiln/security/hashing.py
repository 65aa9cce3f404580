"""API key tokens: generation, parsing, hashing and constant-time comparison.

A token is ``kiln_<id>_<secret>``: ``id`` (12 hex characters) finds the row, ``secret`` (32 random
bytes, base64url) is never stored; the database keeps ``sha256(secret)``. A slow password hash is
not needed because the secret has 256 bits of entropy: nothing can be guessed from its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "kiln"
_TOKEN = re.compile(r"kiln_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def new_token() -> tuple[str, str, str]:
    """A fresh key: (id, token to hand to the user once, hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}_{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    match = _TOKEN.fullmatch(token.strip())
    return (match.group(1), match.group(2)) if match else None


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
