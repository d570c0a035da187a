"""HAProxy balances over healthy backends, drops failed ones, and drains on request."""

import time

URL = "https://127.0.0.1:18643/"
CURL = f"curl -sk --max-time 5 {URL}"


def backends_seen(host, n=8):
    return [host.check_output(CURL).split()[0] for _ in range(n)]


def admin(host, command):
    script = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock');"
        f"s.sendall(b'{command}\\n'); print(s.makefile().read())"
    )
    return host.check_output(f'python3 -c "{script}"')


def op_state(host, server):
    """srv_op_state of a server: 0 down, 2 up."""
    for line in admin(host, "show servers state app").splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[3] == server:
            return fields[5]
    raise AssertionError(f"{server} not in the servers state")


def wait_status(host, server, wanted, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if op_state(host, server) == wanted:
            return
        time.sleep(0.3)
    raise AssertionError(f"{server} never reached op state {wanted}")


def slow_checks(host, server, seconds):
    """Make a stand-in backend answer /readyz after `seconds` (0: at once)."""
    host.run(f"echo {seconds} > /run/backend-{server}.delay" if seconds else f"rm -f /run/backend-{server}.delay")


def test_config_is_valid_and_service_running(host):
    assert host.service("haproxy").is_running
    assert host.service("haproxy").is_enabled
    assert host.run("haproxy -c -f /etc/haproxy/haproxy.cfg").rc == 0
    assert host.socket("tcp://127.0.0.1:18643").is_listening


def test_health_checks_have_their_own_timeout_and_the_default_rise_and_fall(host):
    config = host.file("/etc/haproxy/haproxy.cfg").content_string
    assert "    timeout check 2000ms\n" in config
    assert "default-server inter 300ms rise 2 fall 3" in config
    assert "option redispatch 1\n" in config
    assert "retries 3" in config
    assert "retry-on conn-failure empty-response response-timeout 502 503 504\n" in config
    assert "http-request disable-l7-retry unless { method GET HEAD }\n" in config


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


def test_backend_answering_checks_later_than_the_interval_stays_in(host):
    """A saturated host: each check answered after 1 s, over three times the interval, within the timeout."""
    wait_status(host, "web1", "2")
    slow_checks(host, "web1", 1)
    try:
        states = []
        deadline = time.time() + 8  # about six slow checks, twice the fall count
        while time.time() < deadline:
            states.append(op_state(host, "web1"))
            time.sleep(0.3)
        assert set(states) == {"2"}, states
        assert set(backends_seen(host)) == {"web1", "web2"}
    finally:
        slow_checks(host, "web1", 0)


def test_backend_that_stops_answering_checks_is_taken_out(host):
    """A hung host: checks time out (2 s here), and three in a row take it out; requests keep succeeding."""
    wait_status(host, "web1", "2")
    slow_checks(host, "web1", 30)
    try:
        wait_status(host, "web1", "0", timeout=20)
        assert set(backends_seen(host)) == {"web2"}
    finally:
        slow_checks(host, "web1", 0)
    wait_status(host, "web1", "2")


def answers(host, n=8, method="GET"):
    """(status, backend) of n requests through the frontend."""
    data = "-d probe " if method == "POST" else ""
    found = []
    for _ in range(n):
        body, status = host.check_output(f"curl -sk --max-time 5 {data}-w ' %{{http_code}}' {URL}").rsplit(" ", 1)
        found.append((status, body.split()[0]))
    return found


def test_a_host_answering_502_gets_its_gets_retried_elsewhere_and_its_posts_not(host):
    """A host whose app process died: its nginx answers 502 while its health checks have not taken it out
    yet. Every GET is retried on the other backend; a POST is not (it may have been done): it gets the 502."""
    wait_status(host, "web1", "2")
    wait_status(host, "web2", "2")
    host.run("echo 502 > /run/backend-web1.status")
    try:
        assert answers(host) == [("200", "web2")] * 8
        posts = answers(host, method="POST")
        assert set(posts) == {("502", "web1"), ("200", "web2")}, posts
    finally:
        host.run("rm -f /run/backend-web1.status")
    assert {status for status, _ in answers(host)} == {"200"}


def test_drained_backend_gets_no_new_requests(host):
    admin(host, "set server app/web1 state drain")
    try:
        assert set(backends_seen(host)) == {"web2"}
    finally:
        admin(host, "set server app/web1 state ready")
    assert set(backends_seen(host)) == {"web1", "web2"}


def test_stats_page(host):
    assert "web1" in host.check_output("curl -s 'http://127.0.0.1:18644/;csv'")
