"""Stream keys: random secrets, stored only as a SHA-256 hash, compared in constant time.

A key has 192 bits of randomness, so a plain (unsalted) SHA-256 is enough to make the stored
value useless to an attacker while still allowing an indexed lookup by hash.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk_"


def stream_key_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def stream_key_hash(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode("utf-8", "surrogatepass")).hexdigest()


def stream_key_matches(stream_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(stream_key_hash(stream_key), stored_hash)


def stream_key_log_id(stream_key: str) -> str:
    """A short, non-reversible tag to name a key in logs without leaking it."""
    return stream_key_hash(stream_key)[:8]
