"""HAProxy balances over healthy backends, drops failed ones, and drains on request."""

import time

URL = "https://127.0.0.1:18443/"
CURL = f"curl -sk --max-time 5 {URL}"


def backends_seen(host, n=8):
    return [host.check_output(CURL).split()[0] for _ in range(n)]


def admin(host, command):
    script = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock');"
        f"s.sendall(b'{command}\\n'); print(s.makefile().read())"
    )
    return host.check_output(f'python3 -c "{script}"')


def wait_status(host, server, wanted, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in admin(host, "show servers state app").splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[3] == server:
                status = fields[5]  # srv_op_state: 0 down, 2 up
                if status == wanted:
                    return
        time.sleep(0.3)
    raise AssertionError(f"{server} never reached op state {wanted}")


def test_config_is_valid_and_service_running(host):
    assert host.service("haproxy").is_running
    assert host.service("haproxy").is_enabled
    assert host.run("haproxy -c -f /etc/haproxy/haproxy.cfg").rc == 0
    assert host.socket("tcp://127.0.0.1:18443").is_listening


def test_round_robin_over_both_backends_with_tls_and_forwarded_proto(host):
    wait_status(host, "web1", "2")
    wait_status(host, "web2", "2")
    seen = backends_seen(host)
    assert set(seen) == {"web1", "web2"}
    assert host.check_output(CURL).split()[2] == "https"


def test_failed_backend_is_taken_out_without_errors(host):
    host.run("systemctl stop backend-web1")
    try:
        wait_status(host, "web1", "0")
        assert set(backends_seen(host)) == {"web2"}
    finally:
        host.run("systemctl start backend-web1")
    wait_status(host, "web1", "2")


def test_drained_backend_gets_no_new_requests(host):
    admin(host, "set server app/web1 state drain")
    try:
        assert set(backends_seen(host)) == {"web2"}
    finally:
        admin(host, "set server app/web1 state ready")
    assert set(backends_seen(host)) == {"web1", "web2"}


def test_stats_page(host):
    assert "web1" in host.check_output("curl -s 'http://127.0.0.1:18444/;csv'")
