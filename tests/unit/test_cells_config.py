"""``[[cells]]`` and the URLs that name every node of a cell (docs/scale-out.md, "Cells")."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.persistence import DatabaseUrlError, connection_kwargs, parse_url
from bootstrap.settings import SettingsError, load_settings

CELL_A = "postgresql://zhangben:s3cret@10.0.1.1:5432,10.0.1.2:5433,[::1]/zhangben?target_session_attrs=read-write"


def test_a_url_naming_every_node_becomes_libpq_s_lists_and_never_shows_its_password() -> None:
    store = parse_url(CELL_A)
    assert (store.host, store.port) == ("10.0.1.1,10.0.1.2,::1", "5432,5433,5432")
    assert "s3cret" not in str(store) and "10.0.1.2:5433" in str(store)
    kwargs = connection_kwargs(store, 2)
    assert kwargs["target_session_attrs"] == "read-write"
    assert kwargs["keepalives"] == "1" and kwargs["tcp_user_timeout"] == "10000"
    assert "statement_timeout" not in str(kwargs)  # a cancelled wait for the standby is committed locally


def test_a_url_asking_otherwise_wins_over_the_defaults_and_an_unknown_parameter_is_refused() -> None:
    assert (
        connection_kwargs(parse_url("postgresql://u:p@h/db?target_session_attrs=any"), 2)["target_session_attrs"]
        == "any"
    )
    with pytest.raises(DatabaseUrlError, match="unknown parameter 'statement_timeout'"):
        parse_url("postgresql://u:p@h/db?statement_timeout=5")
    with pytest.raises(DatabaseUrlError, match="bad host or port"):
        parse_url("postgresql://u:p@h1:5432,h2:99999/db")


def _settings(tmp_path: Path, text: str, **env: str) -> object:
    config = tmp_path / "zhangben.toml"
    config.write_text(text)
    return load_settings({"ZHANGBEN_CONFIG": str(config), **env})


def test_the_first_cell_is_the_deployment_s_database_and_each_cell_s_url_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "b.url").write_text("postgresql://z:p@h4,h5,h6/zhangben\n")
    settings = _settings(
        tmp_path,
        f'[[cells]]\nname = "a"\nurl = "{CELL_A}"\n\n[[cells]]\nname = "b"\nurl_file = "b.url"\n',
    )
    assert settings.database_url == CELL_A  # type: ignore[attr-defined]
    assert settings.cell_names() == ["a", "b"]  # type: ignore[attr-defined]
    assert settings.database_of("b") == "postgresql://z:p@h4,h5,h6/zhangben"  # type: ignore[attr-defined]
    assert settings.database_of("main") == CELL_A  # type: ignore[attr-defined]  # placed before cells were named
    assert "s3cret" not in repr(settings)
    with pytest.raises(SettingsError, match="cell 'c', which has no"):
        settings.database_of("c")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (f'[[cells]]\nname = "a"\nurl = "{CELL_A}"\n', {"ZHANGBEN_DATABASE_URL": "postgresql://u:p@h/other"}, "leave"),
        (f'[[cells]]\nname = "A!"\nurl = "{CELL_A}"\n', {}, "lower-case"),
        (f'[[cells]]\nname = "a"\nurl = "{CELL_A}"\n[[cells]]\nname = "a"\nurl = "{CELL_A}"\n', {}, "two"),
        ('[[cells]]\nname = "a"\nurl = "sqlite:///x.db"\n', {}, "PostgreSQL url"),
        (f'[[cells]]\nname = "a"\nurl = "{CELL_A}"\nsize = 3\n', {}, "no setting 'size'"),
    ],
)
def test_a_cell_named_wrongly_is_refused_in_one_line(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        _settings(tmp_path, text, **env)
