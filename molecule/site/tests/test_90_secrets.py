"""Last: no secret appeared in the output of any ansible-playbook run against the stack (at -v): the logs
in artifacts/site/ of this session and of the one before it when `make test` verifies in two sessions."""

from __future__ import annotations

from stack import ARTIFACTS, OLD_PASSWORDS, RUNS, STATE, secret


def test_no_secret_appears_in_any_ansible_output() -> None:
    secrets = {
        "RDS master password": (STATE / "secrets" / "rds-master-password").read_text().split()[0],
        "app password": secret("nnp/local/rds-app")["password"],
        **{f"earlier app password {n}": value for n, value in enumerate(OLD_PASSWORDS)},
    }
    logs = sorted(ARTIFACTS.glob("run-*.log"))
    assert RUNS, "no ansible-playbook run in this session to search"
    assert len(logs) >= len(RUNS), (len(logs), len(RUNS))
    for log in logs:
        output = log.read_text()
        for what, value in secrets.items():
            assert len(value) >= 16
            assert value not in output, f"the {what} appears in {log.name} ({output.splitlines()[0]})"
