"""The house's rules that import contracts cannot express, read from nova/'s source: who may
commit, where Flask's app context may be reached, how long a module or a function may grow and
that every module says what it is. The import contracts themselves live in setup.cfg; the first
test runs them. Each failure lists every offender, so one run shows all that is left to fix."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOVA = PROJECT_ROOT / "nova"
# Alembic's revisions are generated history: they are never edited, so sizes do not apply.
MIGRATIONS = NOVA / "db" / "migrations"
# Where a session may commit: the services own every state change, the db package its schema.
COMMITTING_PACKAGES = (NOVA / "services", NOVA / "db")
# Engine and renderers get settings as arguments; they never reach for the Flask app.
APP_FREE_PACKAGES = (NOVA / "engine", NOVA / "render")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = re.compile(r"^\s*# long: \S")


def nova_modules() -> list[Path]:
    return sorted(NOVA.rglob("*.py"))


def relative(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


def is_inside(path: Path, packages: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(package) for package in packages)


def code_tokens(path: Path) -> list[tokenize.TokenInfo]:
    """The module's tokens without comments and strings, so prose naming a call is not a call."""
    source = path.read_text(encoding="utf-8")
    skipped = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE}
    return [
        token
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type not in skipped
    ]


def test_the_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} is missing: make venv installs the test extra"
    run = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"lint-imports found broken contracts:\n{run.stdout}{run.stderr}"


def test_only_services_and_db_commit() -> None:
    offenders = []
    for path in nova_modules():
        if is_inside(path, COMMITTING_PACKAGES):
            continue
        tokens = code_tokens(path)
        for before, name, after in zip(tokens, tokens[1:], tokens[2:], strict=False):
            if before.string == "." and name.string == "commit" and after.string == "(":
                offenders.append(f"{relative(path)}:{name.start[0]}")
    assert not offenders, "commits outside nova/services and nova/db:\n" + "\n".join(offenders)


def test_engine_and_render_never_reach_the_flask_app() -> None:
    offenders = [
        f"{relative(path)}:{token.start[0]}"
        for package in APP_FREE_PACKAGES
        for path in sorted(package.rglob("*.py"))
        for token in code_tokens(path)
        if token.type == tokenize.NAME and token.string == "current_app"
    ]
    assert not offenders, "current_app in nova/engine or nova/render:\n" + "\n".join(offenders)


def test_no_module_is_over_the_limit() -> None:
    offenders = []
    for path in nova_modules():
        if is_inside(path, (MIGRATIONS,)):
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{relative(path)}: {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def long_functions_without_a_reason(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        first_line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[first_line - 2] if first_line >= 2 else ""
        if not LONG_REASON.match(above):
            found.append(f"{relative(path)}:{node.lineno} {node.name}(): {length} lines")
    return found


def test_no_function_is_over_the_limit_without_a_reason() -> None:
    offenders = [
        offender
        for path in nova_modules()
        if not is_inside(path, (MIGRATIONS,))
        for offender in long_functions_without_a_reason(path)
    ]
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines with no '# long: <reason>' comment on the line "
        "above their def (or first decorator):\n" + "\n".join(offenders)
    )


def test_every_module_says_what_it_is() -> None:
    offenders = [
        relative(path)
        for path in nova_modules()
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offenders, "modules without a docstring:\n" + "\n".join(offenders)
