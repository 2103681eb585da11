"""What users see never names a path on the server.

Decoders put the file they read in their messages (Pillow: "cannot identify image file
'/srv/nova/tmp/...'"), and the engine's log names its work directory, index files and
programs. Messages and logs shown to users keep only each path's last component.
"""

from __future__ import annotations

import re

# An absolute path of two or more components, quoted or not: "/a/b", '/a/b/c.fits'.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+([^\s/'\"]*)")


def without_server_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last component."""
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "…", text)
