"""database.connect(): the one line a failed connection gives, against real addresses."""

import socket
from pathlib import Path

import pytest

from reel_driver.config.errors import PipelineError
from reel_driver.data import database

PASSWORD = "hunter2-correct-horse"


def _closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _refusal(monkeypatch: pytest.MonkeyPatch, dsn: str) -> str:
    monkeypatch.setenv(database.DSN_VARIABLE, dsn)
    with pytest.raises(PipelineError) as caught:
        database.connect()
    return str(caught.value)


def test_an_unreachable_port_names_host_port_database_user_and_libpq_reason(monkeypatch) -> None:
    port = _closed_port()
    line = _refusal(monkeypatch, f"host=127.0.0.1 port={port} dbname=media user=reader password={PASSWORD} connect_timeout=3")
    assert line == (
        f"cannot connect to PostgreSQL at host 127.0.0.1, port {port}, database media, user reader: "
        f'connection to server at "127.0.0.1", port {port} failed: Connection refused; '
        "Is the server running on that host and accepting TCP/IP connections? "
        "(set REEL_DRIVER_PG_DSN or the PG* variables)"
    )
    assert PASSWORD not in line and "\t" not in line and "\n" not in line


def test_a_missing_socket_directory_names_the_socket_libpq_tried(monkeypatch, tmp_path: Path) -> None:
    line = _refusal(monkeypatch, f"host={tmp_path}/nowhere user=reader password={PASSWORD}")
    # no dbname: libpq's default is the user name, and the line says so
    assert line.startswith(
        f"cannot connect to PostgreSQL at socket directory {tmp_path}/nowhere, port 5432, database reader, user reader: "
        f'connection to server on socket "{tmp_path}/nowhere/.s.PGSQL.5432" failed: No such file or directory; '
    )
    assert PASSWORD not in line and "\t" not in line


def test_the_pg_variables_fill_in_what_the_dsn_leaves_out(monkeypatch, tmp_path: Path) -> None:
    port = _closed_port()
    for name, value in {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGDATABASE": "media", "PGUSER": "owner",
                        "PGPASSWORD": PASSWORD}.items():
        monkeypatch.setenv(name, value)
    line = _refusal(monkeypatch, "")
    assert line.startswith(f"cannot connect to PostgreSQL at host 127.0.0.1, port {port}, database media, user owner: ")
    assert PASSWORD not in line


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({}, None),
        ({"PGUSER": "reader", "PGPORT": "5433", "PGPASSWORD": "x"}, None),  # how to connect, not where
        ({"PGHOST": ""}, None),
        ({"PGSERVICE": "media"}, "PGSERVICE"),
        ({"PGDATABASE": "media", "PGHOST": "db.example"}, "PGHOST"),
        ({database.DSN_VARIABLE: "host=db.example", "PGHOST": "other"}, database.DSN_VARIABLE),
    ],
)
def test_server_variable_is_the_first_that_names_a_database(environment: dict, named: str | None) -> None:
    assert database.server_variable(environment) == named


def test_ci_runs_the_newcomers_pipeline_with_no_database_named() -> None:
    """.ci/run unsets exactly the variables that would make extract.source auto read a database."""
    from tests.conftest import REPO

    lines = (REPO / ".ci" / "run").read_text().splitlines()
    [unset] = [line.split()[1:] for line in lines if line.strip().startswith("unset ")]
    assert unset == list(database.SERVER_VARIABLES)
