"""Files for ``nova solve``, made from the sample photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SolveSamples:
    """Files for ``nova solve``: a solvable FITS image, pure noise, a truncated FITS file."""

    directory: Path
    solvable: Path  # apod4 (Ursa Major, ~34 deg wide) as a 16-bit FITS image
    noise: Path  # Gaussian noise: no star to find
    truncated: Path  # the solvable file cut in half


def write_solve_samples(apod: Path, directory: Path) -> SolveSamples:
    import numpy as np
    from astropy.io import fits
    from PIL import Image

    directory.chmod(0o755)  # readable by the image's user (uid 10001) when mounted
    with Image.open(apod / "apod4.jpg") as photo:
        pixels = np.asarray(photo.convert("L"))[::-1].astype(np.int16)  # FITS: y points up
    samples = SolveSamples(
        directory, directory / "apod4.fits", directory / "noise.fits", directory / "cut.fits"
    )
    fits.PrimaryHDU(pixels).writeto(samples.solvable)
    noise = np.random.default_rng(14).normal(1000, 20, (400, 600)).astype(np.float32)
    fits.PrimaryHDU(noise).writeto(samples.noise)
    whole = samples.solvable.read_bytes()
    samples.truncated.write_bytes(whole[: len(whole) // 2])
    for path in (samples.solvable, samples.noise, samples.truncated):
        path.chmod(0o644)
    return samples
