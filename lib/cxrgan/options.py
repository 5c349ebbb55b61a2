"""Checks of option values shared by every tool's config: each failure is a one-line UserError naming the flag."""

from __future__ import annotations

import math

from .errors import UserError


def flag(name: str) -> str:
    """``lr_g`` -> ``--lr-g``."""
    return "--" + name.replace("_", "-")


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(config, *names: str, minimum: int = 1, hint: str = "") -> None:
    """Every ``config.<name>`` is an int >= ``minimum``."""
    for name in names:
        v = getattr(config, name)
        if not is_whole(v) or v < minimum:
            raise UserError(f"{flag(name)} must be a whole number >= {minimum}{hint}, got {v!r}")


def optional_whole_number(config, *names: str, minimum: int = 1) -> None:
    whole_number(config, *(n for n in names if getattr(config, n) is not None), minimum=minimum)


def positive_number(config, *names: str, maximum: float = math.inf) -> None:
    """Every ``config.<name>`` is a finite number > 0 and <= ``maximum``."""
    for name in names:
        v = getattr(config, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf:
            raise UserError(f"{flag(name)} must be a positive number, got {v!r}")
        if v > maximum:
            raise UserError(f"{flag(name)} must be at most {maximum:g}, got {v!r}")


SEED_MAX = 2**32 - 1  # every random generator used here accepts 0..2^32-1 (NumPy's legacy seeding, the narrowest)


def seed(config, *names: str) -> None:
    """The one rule for seeds, in every tool: a whole number from 0 to SEED_MAX (default: ``config.seed``)."""
    for name in names or ("seed",):
        v = getattr(config, name)
        if not is_whole(v) or not 0 <= v <= SEED_MAX:
            raise UserError(f"{flag(name)} must be a whole number from 0 to {SEED_MAX}, got {v!r}")


def one_of(config, name: str, choices, what: str = "") -> None:
    v = getattr(config, name)
    if not any(v == c for c in choices):  # not ``in``: a list value (python-fire parses [a]) is unhashable
        raise UserError(f"{flag(name)} must be {what or 'one of ' + ', '.join(map(str, choices))}, got {v!r}")
