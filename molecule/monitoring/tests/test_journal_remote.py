"""The fleet's journals on the monitoring host: the host's uploader (role common) ships a line it logs to the
receiver (role journal_remote: stunnel checking the client certificate, journal-remote behind it) over TLS
within seconds, attributed to the host; the receiver listens only where told, refuses clients whose certificate
the CA did not sign, and its retention is in force."""

import time
import uuid

RECEIVER = "127.0.0.1:18332"
BACKEND = "127.0.0.1:18333"
HOST = "monitoring-instance"
REMOTE = "/var/log/journal/remote"
TLS = "/etc/ssl/journal-remote"
UNITS = ("stunnel@journal-remote", "systemd-journal-remote.socket", "systemd-journal-remote", "systemd-journal-upload")


def test_the_receiver_and_the_uploader_run_and_listen_where_told(host):
    for unit in UNITS:
        assert host.service(unit).is_running, host.run(f"journalctl -u {unit} -n 30 --no-pager").stdout
        assert host.service(unit).is_enabled, unit
    assert host.socket(f"tcp://{RECEIVER}").is_listening
    assert host.socket(f"tcp://{BACKEND}").is_listening
    for port in (18332, 18333, 19532):
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, port
        assert not host.socket(f"tcp://:::{port}").is_listening, port


def test_the_keys_are_readable_by_their_service_only(host):
    for path, group in ((f"{TLS}/key.pem", "stunnel4"), ("/etc/ssl/journal-upload/key.pem", "systemd-journal-upload")):
        key = host.file(path)
        assert (key.user, key.group, key.mode) == ("root", group, 0o640), path
    for unit, user in (("systemd-journal-upload", "systemd-journal-upload"), ("stunnel@journal-remote", "stunnel4")):
        pid = host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        assert host.run(f"ps -o user= -p {pid}").stdout.strip() == user, unit


def test_a_logged_line_reaches_the_fleets_journal_attributed_to_the_host(host):
    marker = f"nnp-central-{uuid.uuid4().hex}"
    logged = time.monotonic()
    host.run_test(f"logger -t nnp-central-test {marker}")
    query = f"journalctl --directory={REMOTE} _HOSTNAME={HOST} -t nnp-central-test -o cat --no-pager"
    deadline = logged + 30
    while marker not in host.run(query).stdout:
        assert time.monotonic() < deadline, host.run("journalctl -u systemd-journal-upload -n 30 --no-pager").stdout
        time.sleep(0.2)
    print(f"\na logged line was readable on the receiver {time.monotonic() - logged:.1f} s later")


def upload(host, *curl_args: str):
    """POST an empty journal export through the TLS front as journal-upload does: the HTTP status, 000 if TLS failed."""
    return host.run(
        "curl -s -o /dev/null -w '%{http_code}' --cacert "
        + f"{TLS}/ca.pem -H 'Content-Type: application/vnd.fdo.journal' --data-binary '' "
        + " ".join(curl_args)
        + f" https://{RECEIVER}/upload"
    )


def test_the_receiver_refuses_clients_the_ca_did_not_sign(host):
    # The host's own certificate (signed by the CA) is accepted: the control.
    signed = upload(host, "--cert /etc/ssl/journal-upload/cert.pem --key /etc/ssl/journal-upload/key.pem")
    assert signed.stdout == "202", signed
    # No certificate at all: the handshake fails.
    anonymous = upload(host)
    assert anonymous.stdout == "000", anonymous
    # A certificate of its own.
    host.run_test(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=intruder -days 1 "
        "-keyout /tmp/intruder.key -out /tmp/intruder.pem"
    )
    intruder = upload(host, "--cert /tmp/intruder.pem --key /tmp/intruder.key")
    assert intruder.stdout == "000", intruder
    refused = host.run("journalctl -u stunnel@journal-remote --no-pager -n 50").stdout
    assert "CERT: Verification error" in refused or "peer did not return a certificate" in refused, refused


def test_retention_is_in_force(host):
    timer = host.run("systemctl show -p ActiveState,UnitFileState nnp-journal-remote-vacuum.timer").stdout
    assert "ActiveState=active" in timer, timer
    assert "UnitFileState=enabled" in timer, timer
    service = host.file("/etc/systemd/system/nnp-journal-remote-vacuum.service").content_string
    assert f"--directory={REMOTE} --vacuum-time=7d --vacuum-size=256M" in service
    run = host.run("systemctl start nnp-journal-remote-vacuum.service")
    assert run.rc == 0, host.run("journalctl -u nnp-journal-remote-vacuum -n 20 --no-pager").stdout
    config = host.file("/etc/systemd/journal-remote.conf.d/50-nnp.conf").content_string
    # MaxUse= and the others exist from systemd 253 (Debian 13, Ubuntu 24.04).
    version = int(host.run("systemctl --version").stdout.split()[1])
    assert ("MaxUse=256M" in config) == (version >= 253), config
