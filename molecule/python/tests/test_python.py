"""Checks of the python role: interpreter, venv tooling, the app virtualenv."""

import json

import pytest


@pytest.mark.parametrize("name", ["python3", "python3-venv", "python3-pip", "python3-dev"])
def test_packages(host, name):
    assert host.package(name).is_installed


def test_virtualenv_owned_by_service_account(host):
    venv = host.file("/opt/svc/venv")
    assert venv.is_directory
    assert venv.user == "svc"
    assert venv.group == "svc"
    assert host.file("/opt/svc/venv/pyvenv.cfg").user == "svc"
    assert host.file("/opt/svc/venv/bin/python").exists


def test_virtualenv_python_is_isolated(host):
    prefix = host.check_output("/opt/svc/venv/bin/python -c 'import sys; print(sys.prefix)'")
    assert prefix == "/opt/svc/venv"
    assert "include-system-site-packages = false" in host.file("/opt/svc/venv/pyvenv.cfg").content_string


def test_pip_usable_by_service_account(host):
    out = host.run("runuser -u svc -- /opt/svc/venv/bin/python -m pip list --format=json --disable-pip-version-check")
    assert out.rc == 0, out.stderr
    names = {p["name"] for p in json.loads(out.stdout)}
    assert "pip" in names


def test_python_m_venv_works_for_any_user(host):
    # /tmp is noexec in the test container, so pip runs through the interpreter.
    out = host.run("runuser -u svc -- sh -c 'python3 -m venv /tmp/probe && /tmp/probe/bin/python -m pip --version'")
    assert out.rc == 0, out.stderr
    assert "/tmp/probe" in out.stdout
    host.run("rm -rf /tmp/probe")
