"""Fixtures for the provisioning tests: one moto server per session (see provision_harness) and an SSH key."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from provision_harness import MotoServer

_servers: list[MotoServer] = []


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    _servers.append(server)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the provisioning tests measured (timings, resource counts)."""
    for server in _servers:
        if server.measurements:
            terminalreporter.section("provisioning figures")
            for name, value in server.measurements.items():
                terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ed25519 public key for the key pair import."""
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provision-tests", "-f", str(path)], check=True
    )
    return path.with_suffix(".pub")
