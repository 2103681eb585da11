"""The chain of a batch's solved frames: where the next frame's hints come from (the last
frame solved near it) and the drift per frame seen so far."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nova.db.models import Calibration
from nova.engine.calibration import CalibrationNumbers
from nova.engine.params import SolveParams

CHAIN_SCALE_ERROR = 5.0  # percent
# The hint's radius: the field's own (centre to corner) with this margin, plus drift.
FIELD_MARGIN = 1.1
# Drift allowance: this many times the largest drift per frame seen so far, per frame since
# the frame the hint comes from (tracking drift is steady, not exact).
DRIFT_SAFETY = 2.0


@dataclass(frozen=True)
class Solved:
    """What the chain keeps of a solved frame."""

    position: int
    ra: float
    dec: float
    radius: float
    pixscale: float
    parity: float


def separation(a: Solved, b: Solved) -> float:
    """Angle between two frames' centres, in degrees."""
    ra1, dec1, ra2, dec2 = (math.radians(v) for v in (a.ra, a.dec, b.ra, b.dec))
    cos = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


class Chain:
    """The frame the next hints come from, and the drift seen so far.

    A frame that solves far from the chain (another field, by the fallback) does not move it,
    unless the next such frame agrees with it: then the sequence has moved there.
    """

    def __init__(self) -> None:
        self.reference: Solved | None = None
        self.stray: Solved | None = None
        self.drift_per_frame = 0.0  # degrees

    def record(self, frame: Solved) -> None:
        ref = self.reference
        if ref is None:
            self.reference = frame
        elif separation(ref, frame) <= ref.radius:
            gap = abs(frame.position - ref.position) or 1
            self.drift_per_frame = max(self.drift_per_frame, separation(ref, frame) / gap)
            self.reference = frame
            self.stray = None
        elif self.stray is not None and separation(self.stray, frame) <= self.stray.radius:
            self.reference, self.stray, self.drift_per_frame = frame, None, 0.0
        else:
            self.stray = frame

    def hints(self, params: SolveParams, position: int) -> SolveParams | None:
        """``params`` with the chain's scale, parity and position hint for this frame."""
        ref = self.reference
        if ref is None:
            return None
        gap = abs(position - ref.position) or 1
        radius = ref.radius * FIELD_MARGIN + DRIFT_SAFETY * self.drift_per_frame * gap
        return replace(
            params,
            scale_units="arcsecperpix",
            scale_type="ev",
            scale_est=ref.pixscale,
            scale_err=CHAIN_SCALE_ERROR,
            scale_lower=None,
            scale_upper=None,
            center_ra=ref.ra,
            center_dec=ref.dec,
            radius=min(180.0, radius),
            # The engine's "positive" parity is a negative CD determinant (nova's -1).
            parity=0 if ref.parity < 0 else 1,
        )


def solved_frame(position: int, calibration: Calibration | CalibrationNumbers) -> Solved:
    return Solved(
        position,
        calibration.ra,
        calibration.dec,
        calibration.radius,
        calibration.pixscale,
        calibration.parity,
    )
