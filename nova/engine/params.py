"""Solve parameters: nova's fields and defaults, validated before anything is stored.

``parse_solve_params`` accepts form values (strings) and JSON values alike, so the web
form and the API share one set of rules. Unlike nova, 0 is a valid RA, Dec or scale
lower bound, and a bad value is an error up front instead of a failed job later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

SCALE_UNIT_ALIASES = {
    "degwidth": "degwidth",
    "degw": "degwidth",
    "dw": "degwidth",
    "arcminwidth": "arcminwidth",
    "amw": "arcminwidth",
    "aw": "arcminwidth",
    "arcsecperpix": "arcsecperpix",
    "app": "arcsecperpix",
    "focalmm": "focalmm",
}
TRUE_STRINGS = {"1", "true", "t", "yes", "y", "on"}
FALSE_STRINGS = {"0", "false", "f", "no", "n", "off", ""}


class ParamError(ValueError):
    """A solve parameter is invalid; ``field`` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SolveParams:
    scale_units: str = "degwidth"
    scale_type: str = "ul"
    scale_lower: float | None = 0.1
    scale_upper: float | None = 180.0
    scale_est: float | None = None
    scale_err: float | None = None
    center_ra: float | None = None
    center_dec: float | None = None
    radius: float | None = None
    parity: int = 2
    tweak_order: int = 2
    downsample_factor: int = 2
    crpix_center: bool = False
    invert: bool = False
    positional_error: float | None = None
    use_sextractor: bool = False
    image_width: int = 0
    image_height: int = 0
    # Derive missing scale/position hints from the file's header (FITS, XISF, EXIF) first.
    use_header_hints: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: object) -> SolveParams:
        """Read the parameters back from a Submission row."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def scale_bounds(self) -> tuple[float, float] | None:
        """The (low, high) scale range in ``scale_units``; None means no scale hint."""
        if self.scale_type == "ev":
            assert self.scale_est is not None and self.scale_err is not None
            return (
                self.scale_est * (1 - self.scale_err / 100.0),
                self.scale_est * (1 + self.scale_err / 100.0),
            )
        if self.scale_lower is None and self.scale_upper is None:
            return None
        return (self.scale_lower or 0.0, self.scale_upper if self.scale_upper is not None else 0.0)

    @property
    def has_position_hint(self) -> bool:
        return self.center_ra is not None

    @property
    def has_scale_hint(self) -> bool:
        """Any scale other than nova's default range (0.1-180 degrees wide), which is what
        a blind upload sends."""
        if self.scale_type == "ev":
            return True
        return (self.scale_units, self.scale_lower, self.scale_upper) != (
            _NO_SCALE.scale_units,
            _NO_SCALE.scale_lower,
            _NO_SCALE.scale_upper,
        )


_NO_SCALE = SolveParams()

# Row ids are INTEGER columns: 32-bit signed on PostgreSQL (SQLite stores up to 64 bits but
# Nova never hands out more). A larger number names no row, and binding it would make the
# driver fail, so lookups treat it as missing. Random submission and job ids stay below it.
MAX_ROW_ID = 2**31 - 1


def row_id(value: object) -> int | None:
    """``value`` as a row id the database can look up, or None when it cannot name a row."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_ROW_ID else None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _float(name: str, value: Any) -> float | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise ParamError(name, "must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParamError(name, f"must be a number, got {value!r}") from None
    except OverflowError:  # a JSON integer with hundreds of digits
        raise ParamError(name, "must be a finite number") from None
    if not math.isfinite(number):
        raise ParamError(name, "must be a finite number")
    return number


def _int(name: str, value: Any) -> int | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise ParamError(name, "must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ParamError(name, f"must be an integer, got {value!r}")
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ParamError(name, f"must be an integer, got {value!r}") from None


def _bool(name: str, value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    raise ParamError(name, f"must be true or false, got {value!r}")


def _in_range(name: str, value: float | int | None, low: float, high: float) -> None:
    if value is not None and not (low <= value <= high):
        # An int of hundreds of digits cannot be formatted as a float (:g): show its size.
        shown = f"{value:g}" if abs(value) < 1e300 else f"a number of {len(str(value))} digits"
        raise ParamError(name, f"must be between {low:g} and {high:g}, got {shown}")


def _scale_units(name: str, value: Any) -> str | None:
    if _blank(value):
        return None
    canonical = SCALE_UNIT_ALIASES.get(str(value).strip().lower())
    if canonical is None:
        raise ParamError(name, "must be one of degwidth, arcminwidth, arcsecperpix, focalmm")
    return canonical


def _scale_type(name: str, value: Any) -> str | None:
    if _blank(value):
        return None
    text = str(value).strip().lower()
    if text not in ("ul", "ev"):
        raise ParamError(name, "must be 'ul' (bounds) or 'ev' (estimate and error)")
    return text


def _non_negative(name: str, value: Any) -> float | None:
    number = _float(name, value)
    if number is not None and number < 0:
        raise ParamError(name, "must not be negative")
    return number


def _positive(name: str, value: Any) -> float | None:
    number = _float(name, value)
    if number is not None and number <= 0:
        raise ParamError(name, "must be greater than 0")
    return number


def _parity(name: str, value: Any) -> int | None:
    number = _int(name, value)
    if number is not None and number not in (0, 1, 2):
        raise ParamError(name, "must be 0 (positive), 1 (negative) or 2 (try both)")
    return number


def _int_between(low: int, high: int) -> Callable[[str, Any], int | None]:
    def read(name: str, value: Any) -> int | None:
        number = _int(name, value)
        _in_range(name, number, low, high)
        return number

    return read


# One rule per field: how its value is read and what it must be on its own, in the order
# the fields are checked. What depends on other fields is in _check_scale and _check_hint.
FIELD_RULES: tuple[tuple[str, Callable[[str, Any], Any]], ...] = (
    ("scale_units", _scale_units),
    ("scale_type", _scale_type),
    ("scale_lower", _non_negative),
    ("scale_upper", _non_negative),
    ("scale_est", _float),  # checked with scale_type 'ev' only
    ("scale_err", _float),  # checked with scale_type 'ev' only
    ("positional_error", _positive),
    ("center_ra", _float),  # the position hint: checked together by _check_hint
    ("center_dec", _float),
    ("radius", _float),
    ("parity", _parity),
    ("tweak_order", _int_between(0, 9)),
    ("downsample_factor", _int_between(1, 32)),
    ("image_width", _int_between(0, 1_000_000)),
    ("image_height", _int_between(0, 1_000_000)),
    ("crpix_center", _bool),
    ("invert", _bool),
    ("use_sextractor", _bool),
    ("use_header_hints", _bool),
)
HINT_FIELDS = ("center_ra", "center_dec", "radius")
# The yes/no parameters (a form sends them as checkboxes) and those with a value.
FLAG_FIELDS = tuple(name for name, read in FIELD_RULES if read is _bool)
VALUE_FIELDS = tuple(name for name, read in FIELD_RULES if read is not _bool)


def _check_scale(values: dict[str, Any], defaults: SolveParams) -> None:
    """Bounds must be ordered and positive; an estimate needs its error."""
    if values.get("scale_type", defaults.scale_type) == "ul":
        lower = values.get("scale_lower", defaults.scale_lower)
        upper = values.get("scale_upper", defaults.scale_upper)
        if lower is not None and upper is not None and lower > upper:
            raise ParamError("scale_upper", "must not be smaller than scale_lower")
        if upper is not None and upper <= 0:
            raise ParamError("scale_upper", "must be greater than 0")
        return
    if values.get("scale_est") is None or values.get("scale_err") is None:
        raise ParamError("scale_est", "scale_type 'ev' needs both scale_est and scale_err")
    if values["scale_est"] <= 0:
        raise ParamError("scale_est", "must be greater than 0")
    _in_range("scale_err", values["scale_err"], 0, 99.999)


def _check_hint(values: dict[str, Any]) -> None:
    """A position hint is centre and radius together, each on the sky."""
    given = [name for name in HINT_FIELDS if name in values]
    if not given:
        return
    if len(given) != 3:
        missing = ", ".join(name for name in HINT_FIELDS if name not in values)
        raise ParamError(
            missing.split(", ")[0],
            f"a position hint needs center_ra, center_dec and radius together (missing: {missing})",
        )
    _in_range("center_ra", values["center_ra"], 0, 360)
    _in_range("center_dec", values["center_dec"], -90, 90)
    if not 0 < values["radius"] <= 180:
        raise ParamError("radius", "must be greater than 0 and at most 180 degrees")


def parse_solve_params(data: Mapping[str, Any]) -> SolveParams:
    """Validate the solve parameters present in ``data``; absent ones keep nova's defaults."""
    defaults = SolveParams()
    values: dict[str, Any] = {}
    for name, read in FIELD_RULES:
        value = read(name, data.get(name))
        if value is not None:
            values[name] = value
    _check_scale(values, defaults)
    _check_hint(values)
    return SolveParams(**{**defaults.as_dict(), **values})


def parse_choice(name: str, value: Any, choices: tuple[str, ...], default: str) -> str:
    """Validate a one-of-several answer such as ``publicly_visible`` ("y"/"n")."""
    if _blank(value):
        return default
    text = str(value).strip().lower()
    if text not in choices:
        raise ParamError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return text
