"""``python -m nova`` is the ``nova`` command."""

from .cli import main

main()
