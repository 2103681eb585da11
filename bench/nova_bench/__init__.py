"""bench/run.py in parts: stack, bare runs, load, memory, the run, results and the report."""
