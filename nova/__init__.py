"""Nova: a self-hosted plate-solving web service compatible with nova.astrometry.net.

The house, layer by layer (each may import only from the layers below it; setup.cfg's
import-linter contracts say so and ``make test`` checks them):

- ``cli``, ``wsgi``: entry points; ``app``: the factory that wires everything;
- ``web`` (HTTP: parse, authorise, answer) and ``worker`` (what RQ runs);
- ``services``: every change of rows and its commit, and the read queries;
- ``render`` (pictures and files of a solution) and ``db`` (models, schema, migrations);
- ``engine`` (astrometry.net as a library) and ``infra`` (redis, the queue, storage, downloads);
- ``config``, ``extensions``, ``logs`` under everything.
"""

from nova.app import create_app

__all__ = ["create_app"]
