"""Refuse to run production (DEBUG off) on a placeholder or weak secret.

configs/env.example ships every secret as the literal CHANGE_ME, so a copied file that was not
filled in must stop the service at start instead of running with a guessable key. All offending
variables are named in one error (never their values), so the operator fixes them in one pass.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from django.core.exceptions import ImproperlyConfigured

PLACEHOLDER = "CHANGE_ME"
MIN_STRONG_LENGTH = 16
# CHANGE_ME as shipped, and the spellings older example files used ("change-me-...", "changeme").
_PLACEHOLDER_RE = re.compile(r"change[-_ ]?me", re.IGNORECASE)


def is_placeholder(value: str | None) -> bool:
    return bool(value) and bool(_PLACEHOLDER_RE.search(value or ""))


def secret_problems(secrets: Mapping[str, str | None], *, strong: Collection[str] = (),
                    insecure: Collection[str] = ()) -> list[str]:
    """One message per offending variable. Every name is refused when its value holds the
    placeholder; names in `strong` must also be set, 16+ characters and not a known dev default
    (`insecure`). Optional secrets left empty are fine: the feature they guard is off."""
    return [problem for name, value in secrets.items()
            if (problem := _problem(name, value or "", name in strong, insecure))]


def _problem(name: str, value: str, strong: bool, insecure: Collection[str]) -> str | None:
    weak = f"{name} must be set to a strong secret ({MIN_STRONG_LENGTH}+ characters)"
    if strong and (not value or value in insecure):  # unset: the dev default, itself "...change-me"
        return weak
    if is_placeholder(value):
        return f"{name} is still the {PLACEHOLDER} placeholder"
    if strong and len(value) < MIN_STRONG_LENGTH:
        return weak
    return None


def secrets_check(secrets: Mapping[str, str | None], *, strong: Collection[str] = (),
                  insecure: Collection[str] = ()) -> None:
    """Raise ImproperlyConfigured naming every offending variable (see `secret_problems`)."""
    problems = secret_problems(secrets, strong=strong, insecure=insecure)
    if problems:
        raise ImproperlyConfigured(
            "refusing to start with DEBUG off: " + "; ".join(problems)
            + f" (replace every {PLACEHOLDER} in configs/.env with a random value, e.g. `openssl rand -hex 32`)"
        )
