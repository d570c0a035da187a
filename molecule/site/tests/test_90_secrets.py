"""Last: no secret appeared in the output of any ansible-playbook run of the session (at -v)."""

from __future__ import annotations

from stack import OLD_PASSWORDS, RUNS, STATE, operator_token, secret


def test_no_secret_appears_in_any_ansible_output() -> None:
    secrets = {
        "RDS master password": (STATE / "secrets" / "rds-master-password").read_text().split()[0],
        "app password": secret("nnp/local/rds-app")["password"],
        "operator token": operator_token(),
        **{f"earlier app password {n}": value for n, value in enumerate(OLD_PASSWORDS)},
    }
    assert RUNS, "no ansible-playbook run to search"
    for run in RUNS:
        for what, value in secrets.items():
            assert len(value) >= 16
            assert value not in run.output, f"the {what} appears in the output of {' '.join(run.args)}"
