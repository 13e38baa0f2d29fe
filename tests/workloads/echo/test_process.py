"""The launcher helper: the listening line, and a failed start that says why."""

from __future__ import annotations

import pytest

from workloads.echo.process import EchoProcess, Listening, parse_listening_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "echo: listening on 0.0.0.0:8080 admin 0.0.0.0:8081\n",
            Listening(host="0.0.0.0", port=8080, admin_host="0.0.0.0", admin_port=8081),
        ),
        (
            "echo: listening on 127.0.0.1:40001 admin 127.0.0.1:40002",
            Listening(host="127.0.0.1", port=40001, admin_host="127.0.0.1", admin_port=40002),
        ),
        ("echo: shutting down", None),
        ("", None),
    ],
)
def test_parse_listening_line(line: str, expected: Listening | None) -> None:
    assert parse_listening_line(line) == expected


def test_a_server_that_cannot_start_raises_with_its_error_line() -> None:
    with pytest.raises(
        RuntimeError, match=r"exited with 2 before listening: echo: --error-rate is a probability"
    ):
        EchoProcess(["--error-rate", "7"]).start()


def test_the_listening_line_comes_first_and_ports_answer() -> None:
    with EchoProcess() as echo:
        assert echo.port > 0 and echo.admin_port > 0 and echo.port != echo.admin_port
        assert echo.url == f"http://127.0.0.1:{echo.port}/"
        returncode = echo.stop()
    assert returncode == 0
