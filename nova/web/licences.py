"""Creative Commons licences from nova's two answers (commercial use, modifications).

nova fetched names from a Creative Commons web service that no longer exists; the six
licences are fixed, so they are a table here. "d" means "my default", then the site's
(commercial use and modifications allowed: CC BY).
"""

from __future__ import annotations

from dataclasses import dataclass

SITE_DEFAULT = ("y", "y")
LICENCES = {
    ("y", "y"): ("Attribution 4.0 International (CC BY 4.0)", "by"),
    ("y", "sa"): ("Attribution-ShareAlike 4.0 International (CC BY-SA 4.0)", "by-sa"),
    ("y", "n"): ("Attribution-NoDerivatives 4.0 International (CC BY-ND 4.0)", "by-nd"),
    ("n", "y"): ("Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)", "by-nc"),
    ("n", "sa"): (
        "Attribution-NonCommercial-ShareAlike 4.0 International (CC BY-NC-SA 4.0)",
        "by-nc-sa",
    ),
    ("n", "n"): (
        "Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
        "by-nc-nd",
    ),
}


@dataclass(frozen=True)
class Licence:
    name: str
    url: str


def resolve(
    commercial: str, modifications: str, default: tuple[str, str] = SITE_DEFAULT
) -> Licence:
    """The licence for a pair of answers, "d" taken from ``default``."""
    pair = (
        default[0] if commercial == "d" else commercial,
        default[1] if modifications == "d" else modifications,
    )
    name, code = LICENCES.get(pair, LICENCES[SITE_DEFAULT])
    return Licence(name, f"https://creativecommons.org/licenses/{code}/4.0/")
