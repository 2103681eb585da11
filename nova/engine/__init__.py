"""astrometry.net as a library: inputs, extraction, the engine processes, hints and what a solution
says. No Flask, database, queue or settings here: callers pass what it needs."""
