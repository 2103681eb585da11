"""Figures the tests measured (inputs tried, errors, ...), printed at the end of the run.

CI runs pytest without -s, which hides print(): conftest.py re-exports pytest_terminal_summary
so the figures appear in their own section of the summary."""

from __future__ import annotations

import os

import pytest

FIGURES: list[tuple[str, str]] = []


def record_figure(text: str) -> None:
    """Keep one measured figure; it appears in the "figures" section of the pytest summary."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    FIGURES.append((test, text))
    print(text)  # also inline with -s


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("figures")
    for test, text in FIGURES:
        terminalreporter.write_line(f"{test}: {text}" if test else text)
