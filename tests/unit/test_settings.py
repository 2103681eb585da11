"""Nova's settings: read once into a typed Settings, with the README's table as their doc."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from nova.config import ConfigError, Settings, setting_keys

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Variables the README documents that are not settings of the app: read by the process that
# starts it (``nova up``, gunicorn's config, the container) or by the metrics library.
PROCESS_VARIABLES = {
    "NOVA_PORT",
    "NOVA_BIND",
    "NOVA_WORKERS",
    "NOVA_WEB_WORKERS",
    "PROMETHEUS_MULTIPROC_DIR",
}


def readme_table() -> dict[str, str]:
    """variable -> its default cell, from README.md's "Configuration" table (a row naming
    two variables, "`A`, `B` | `1`, `2`", gives each its own default)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        defaults = [part.strip() for part in cells[1].split(", ")]
        for position, name in enumerate(names):
            rows[name] = defaults[position] if len(defaults) == len(names) else cells[1]
    return rows


def declared() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def test_every_setting_has_a_variable_a_doc_and_one_row_in_the_readme() -> None:
    variables = [spec.metadata["env"] for spec in declared()]
    assert len(variables) == len(set(variables)), "two settings read one variable"
    assert all(spec.metadata["doc"] for spec in declared())
    documented = set(readme_table())
    assert documented - PROCESS_VARIABLES == set(variables), (
        f"in the README only: {sorted(documented - PROCESS_VARIABLES - set(variables))}; "
        f"undocumented: {sorted(set(variables) - documented)}"
    )


def test_the_readme_states_each_static_default() -> None:
    table = readme_table()

    def shown(value: object) -> str:
        """How the table writes a default: `true`, `300`; an empty one is "none"."""
        if value == "":
            return "none"
        return f"`{str(value).lower() if isinstance(value, bool) else value}`"

    wrong = {
        spec.metadata["env"]: (table[spec.metadata["env"]], shown(spec.metadata["default"]))
        for spec in declared()
        if spec.metadata["default"] is not None
        and shown(spec.metadata["default"]) not in table[spec.metadata["env"]]
    }
    assert not wrong, f"README default differs (README, Settings): {wrong}"


def test_every_variable_nova_reads_is_documented() -> None:
    """A NOVA_* name in nova/'s source is a setting or a process variable of the table."""
    source = "\n".join(path.read_text() for path in (PROJECT_ROOT / "nova").rglob("*.py"))
    # "NOVA_DECODE_*" in prose names a family, not a variable.
    named = set(re.findall(r"\bNOVA_[A-Z_]*[A-Z]\b", source))
    assert named <= set(readme_table()), sorted(named - set(readme_table()))
    assert PROCESS_VARIABLES - {"PROMETHEUS_MULTIPROC_DIR"} <= named


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = Settings.from_env({"NOVA_DATA_DIR": str(tmp_path)})
    assert settings.environment == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'nova.sqlite'}"
    assert settings.max_archive_bytes == 4 * settings.max_upload_bytes
    assert settings.batch_max_bytes == settings.max_upload_bytes
    # The development key is kept in the data directory: the same one on the next start.
    assert Settings.from_env({"NOVA_DATA_DIR": str(tmp_path)}).secret_key == settings.secret_key


def test_a_malformed_setting_is_named_with_how_to_fix_it(tmp_path: Path) -> None:
    base = {"NOVA_DATA_DIR": str(tmp_path)}
    cases = {
        "NOVA_SOLVE_TIME_LIMIT": ("soon", "NOVA_SOLVE_TIME_LIMIT must be an integer"),
        "NOVA_MAX_STARS": ("0", "NOVA_MAX_STARS must be at least 1"),
        "NOVA_METRICS": ("maybe", "NOVA_METRICS must be true or false"),
        "NOVA_LOG_FORMAT": ("xml", "NOVA_LOG_FORMAT must be one of text, json"),
        "NOVA_UPLOAD_RATE_LIMIT": ("lots", "NOVA_UPLOAD_RATE_LIMIT must be rates such as"),
        "NOVA_WEBHOOK_RETRY_INTERVALS": ("1,x", "NOVA_WEBHOOK_RETRY_INTERVALS must be whole"),
        "NOVA_INDEX_DIRS": (":", "NOVA_INDEX_DIRS names no directory"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            Settings.from_env({**base, name: value})
    with pytest.raises(ConfigError, match="NOVA_SECRET_KEY must be set"):
        Settings.from_env({**base, "NOVA_ENV": "production"})
    # Of two malformed settings, the one declared first is named, every time.
    both = {**base, "NOVA_MAX_STARS": "x", "NOVA_SOLVE_TIME_LIMIT": "x"}
    with pytest.raises(ConfigError, match="NOVA_SOLVE_TIME_LIMIT"):
        Settings.from_env(both)


def test_flask_config_holds_every_setting_and_flasks_own_keys(tmp_path: Path) -> None:
    settings = Settings.from_env({"NOVA_DATA_DIR": str(tmp_path), "NOVA_MAX_UPLOAD_MB": "3"})
    config = settings.flask_config()
    assert setting_keys() <= set(config)
    assert config["MAX_CONTENT_LENGTH"] == 3 * 1024 * 1024 == settings.max_upload_bytes
    assert config["SQLALCHEMY_DATABASE_URI"] == settings.database_url
    assert config["SECRET_KEY"] == settings.secret_key
    assert config["MAX_FORM_MEMORY_SIZE"] > 64 * settings.max_stars
    changed = settings.replace({"MAX_STARS": 10, "INDEX_DIRS": ["/a", "/b"]})
    assert (changed.max_stars, changed.index_dirs) == (10, (Path("/a"), Path("/b")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.max_stars = 11  # type: ignore[misc]
