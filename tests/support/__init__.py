"""The tests' helper library: processes and servers, the database, corpora, measured figures.

Tests import from it as ``from tests.support.<module> import <name>``; conftest.py has the
fixtures."""
