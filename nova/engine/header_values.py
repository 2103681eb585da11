"""Checking a header's values: finite numbers in a plausible range, sexagesimal angles; what
is left out is noted, never raised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_TEXT_VALUE = 80  # a FITS card's value is at most 70 characters; XISF strings are cut


@dataclass
class ValueReader:
    """Checks values one by one and remembers why it refused each."""

    notes: list[str] = field(default_factory=list)

    def number(self, name: str, value: Any, low: float, high: float, what: str) -> float | None:
        if value is None:
            return None
        number = as_float(value)
        if number is None:
            self.notes.append(f"{name} ignored: not a number ({shown(value)})")
            return None
        if not low <= number <= high:
            self.notes.append(
                f"{name} ignored: {shown(value)} is not a plausible {what} ({low:g} to {high:g})"
            )
            return None
        return number


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def as_float(value: Any) -> float | None:
    """A finite number from a header value (numbers, or text holding one), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    elif isinstance(value, str) and len(value) <= MAX_TEXT_VALUE:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


_SEXAGESIMAL = re.compile(
    r"^\s*([+-]?)\s*(\d{1,3})[\s:hd°]+(\d{1,2})(?:[\s:m']+(\d{1,2}(?:\.\d*)?))?\s*[s\"]?\s*$"
)


def parse_sexagesimal(text: str) -> float | None:
    """'05 35 17.3', '05:35:17', '-05 23 28' or '+12d30m' as a signed number of units."""
    if not isinstance(text, str) or len(text) > MAX_TEXT_VALUE:
        return None
    match = _SEXAGESIMAL.match(text)
    if match is None:
        return None
    sign, whole, minutes, seconds = match.groups()
    if int(minutes) >= 60 or (seconds is not None and float(seconds) >= 60):
        return None
    value = int(whole) + int(minutes) / 60 + (float(seconds) if seconds else 0.0) / 3600
    return -value if sign == "-" else value
