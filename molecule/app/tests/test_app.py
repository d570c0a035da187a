"""What on-call would check on an app host, after converge (R1 in slot blue) and the side effect's rollouts
(R2 live in slot green, R4's failed start left blue stopped).

side_effect.yml writes the release ids it made to releases.json in the scenario's ephemeral folder.
"""

import json
import os
import re
import shlex
import time
import uuid
from pathlib import Path

import pytest

ROOT = "/opt/nnp"
SLOT = "green"
UNIT = f"nnp-app@{SLOT}"
SOCKET = f"/run/nnp-app/{SLOT}/app.sock"
# nginx in front of the slots (plain HTTP in this scenario).
PORT = 18180
HEAD = "zz_deploy_probe"
# systemd-analyze calls below 3.0 "OK"; the unit measured 1.2 on Debian 12 (systemd 252).
EXPOSURE_MAX = 3.0


@pytest.fixture(scope="module")
def releases():
    return json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "releases.json").read_text())


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def fact(host):
    return json.loads(host.file("/etc/ansible/facts.d/nnp_app.fact").content_string)


_OWNER: dict[str, str] = {}


def owner_token(host):
    """The owner token these tests act as (models and sessions belong to whoever created them)."""
    if "token" not in _OWNER:
        _OWNER["token"] = json.loads(host.check_output(f"curl -sf -X POST http://127.0.0.1:{PORT}/api/owners"))["token"]
    return _OWNER["token"]


def http(host, path, body=None):
    """(status, parsed JSON) of a request to the app through the host's nginx, made inside the container,
    as this module's owner."""
    data = f"-H 'Content-Type: application/json' --data {shlex.quote(json.dumps(body))}" if body is not None else ""
    auth = f"-H 'Authorization: Bearer {owner_token(host)}'"
    out = host.check_output(f"curl -s -w '\\n%{{http_code}}' {auth} {data} http://127.0.0.1:{PORT}{path}")
    text, _, code = out.rpartition("\n")
    return int(code), json.loads(text) if text else None


def psql(host, hostvars, sql, user=None, password=None):
    """Run SQL on the RDS stand-in over TCP and TLS, as the master login unless told otherwise."""
    user = user or hostvars["app_db_master_user"]
    password = password or hostvars["app_db_master_password"]
    return host.run(
        f"PGPASSWORD={shlex.quote(password)} PGSSLMODE=require psql -h 127.0.0.1 -p {hostvars['app_db_port']} "
        f"-U {user} -d nnp -X -At -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}"
    )


def main_pid(host):
    return int(host.check_output(f"systemctl show -p MainPID --value {UNIT}"))


def test_live_slot_runs_as_the_service_account_and_the_other_is_off(host):
    service = host.service(UNIT)
    assert service.is_running, host.run(f"journalctl -u {UNIT} -n 40 --no-pager").stdout
    assert service.is_enabled
    idle = host.service("nnp-app@blue")
    assert not idle.is_running
    assert not idle.is_enabled
    pattern = shlex.quote(f"^{ROOT}/slots/{SLOT}/.venv/bin/python")
    # Uvicorn's supervisor, its resource tracker and two workers.
    assert int(host.check_output(f"pgrep -c -u nnp -f {pattern}")) >= 3
    assert host.run(f"pgrep -f {pattern} -u root").rc == 1, "a process of the app runs as root"


def test_app_listens_on_its_slot_socket_only_and_nginx_names_it(host):
    # ss -p cannot name the sandboxed processes (ProtectProc=invisible): the socket is listed, and the
    # running Uvicorn was told that socket and no TCP address.
    assert any(SOCKET in line for line in host.check_output("ss -lxH").splitlines())
    socket_file = host.file(SOCKET)
    assert socket_file.is_socket
    assert (socket_file.user, socket_file.group) == ("nnp", "nnp")
    running = host.check_output(f"pgrep -a -u nnp -f {shlex.quote(f'{ROOT}/slots/{SLOT}/.venv/bin/python')}")
    assert f"--uds {SOCKET}" in running, running
    assert "--port" not in running, running
    assert "--host" not in running, running
    listeners = host.check_output(f"ss -ltnH 'sport = :{PORT}'").splitlines()
    assert listeners
    assert all(line.split()[3] == f"127.0.0.1:{PORT}" for line in listeners), listeners
    # nginx names the live socket link; the switch moved the link, and nginx keeps no idle connection
    # to the app (one would stay on the old slot after the link moved).
    upstream = host.file("/etc/nginx/nnp-upstream.conf").content_string
    assert f"server unix:{ROOT}/slots/live.sock;" in upstream, upstream
    assert host.check_output(f"readlink {ROOT}/slots/live.sock") == SOCKET
    assert host.check_output(f"readlink {ROOT}/slots/live") == SLOT
    site = host.check_output("nginx -T 2>/dev/null")
    assert not re.search(r"^\s*keepalive\s", site, re.M), "nginx keeps idle connections to the app"


def test_health_endpoints_and_version(host, releases, fact):
    assert http(host, "/healthz") == (200, {"status": "ok"})
    status, ready = http(host, "/readyz")
    assert status == 200, ready
    assert ready["schema_revision"] == HEAD == fact["alembic_head"]
    status, version = http(host, "/version")
    assert status == 200
    assert version["release_id"] == releases["r2"] == fact["release"]
    assert version["torch_version"] == "2.13.0+cpu"


def test_env_file_is_private_to_the_service_account(host, hostvars):
    env = host.file(f"{ROOT}/shared/app.env")
    assert env.mode == 0o600
    assert (env.user, env.group) == ("nnp", "nnp")
    content = host.run(f"cat {ROOT}/shared/app.env").stdout
    # No password in the URL: libpq reads it from PGPASSFILE at each new connection.
    assert 'DATABASE_URL="postgresql://nnp_app@127.0.0.1:15433/nnp' in content
    assert f'PGPASSFILE="{ROOT}/shared/pgpass"' in content
    assert hostvars["app_db_password"] not in content
    assert "m0lecule%2Fapp" not in content
    # A query value may hold '/' as it is (RFC 3986); Ansible's urlencode keeps it, libpq reads it.
    assert '/nnp?sslmode=verify-full&sslrootcert=/etc/nnp/database-ca.pem"' in content
    assert 'TORCH_THREADS="1"' in content
    assert not re.search(r"^(RELEASE_ID|GIT_SHA)=", content, re.M), "they differ per release: release.env holds them"


def test_the_password_file_holds_the_login_for_the_service_account_only(host, hostvars):
    """libpq's format, with the password's ':' escaped; mode 0600 (libpq ignores a file others can read),
    and the service account logs in with it and nothing else (no password given)."""
    passfile = host.file(f"{ROOT}/shared/pgpass")
    assert (passfile.user, passfile.group, passfile.mode) == ("nnp", "nnp", 0o600)
    escaped = hostvars["app_db_password"].replace("\\", "\\\\").replace(":", "\\:")
    assert passfile.content_string == f"127.0.0.1:15433:nnp:nnp_app:{escaped}\n"
    login = host.run(
        f"runuser -u nnp -- env PGPASSFILE={ROOT}/shared/pgpass PGSSLMODE=verify-full "
        "PGSSLROOTCERT=/etc/nnp/database-ca.pem psql -h 127.0.0.1 -p 15433 -U nnp_app -d nnp -X -At -w "
        "-c 'SELECT current_user'"
    )
    assert login.stdout.strip() == "nnp_app", login.stderr


def test_the_database_certificate_is_checked_against_the_installed_bundle(host, hostvars):
    """stage installed the CA bundle from app_database_ca_bundle_url; libpq checks the server with it, and
    the same server fails verification against any other CA (the system's)."""
    bundle = host.file("/etc/nnp/database-ca.pem")
    assert (bundle.user, bundle.group, bundle.mode) == ("root", "root", 0o644)
    assert bundle.content_string == host.file("/etc/ssl/molecule-db-ca.pem").content_string
    login = (
        f"PGPASSWORD={shlex.quote(hostvars['app_db_master_password'])} PGSSLMODE=verify-full "
        f"psql -h 127.0.0.1 -p {hostvars['app_db_port']} -U {hostvars['app_db_master_user']} "
        "-d nnp -X -At -c 'SELECT 1'"
    )
    assert host.run(f"PGSSLROOTCERT=/etc/nnp/database-ca.pem {login}").stdout.strip() == "1"
    other = host.run(f"PGSSLROOTCERT=/etc/ssl/certs/ca-certificates.crt {login}")
    assert other.rc != 0
    assert "certificate verify failed" in other.stderr, other.stderr


def test_secrets_stay_in_the_env_file(host, hostvars, releases):
    password = hostvars["app_db_password"]
    unit = host.file("/etc/systemd/system/nnp-app@.service").content_string
    shown = host.check_output(f"systemctl show {UNIT} -p Environment -p ExecStart")
    release_env = host.file(f"{ROOT}/releases/{releases['r2']}/release.env").content_string
    for text in (unit, shown, release_env):
        assert "DATABASE_URL" not in text
    journal = host.check_output("journalctl --no-pager -o cat")
    for text in (unit, shown, release_env, journal):
        assert password not in text
        assert "m0lecule%2Fapp" not in text


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("User", "nnp"),
        ("Group", "nnp"),
        ("WorkingDirectory", f"{ROOT}/slots/{SLOT}"),
        ("RuntimeDirectory", f"nnp-app/{SLOT} nnp-app/{SLOT}/metrics"),
        ("Restart", "on-failure"),
        ("KillMode", "mixed"),
        ("TimeoutStopUSec", "30s"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0027"),
        ("ReadWritePaths", ""),
    ],
)
def test_unit_property(host, prop, value):
    assert host.check_output(f"systemctl show -p {prop} --value {UNIT}") == value


def test_unit_runs_uvicorn_from_its_slot(host):
    cmd = host.check_output(f"systemctl show -p ExecStart --value {UNIT}")
    for part in (
        f"{ROOT}/slots/{SLOT}/.venv/bin/python",
        "app.main:app",
        f"--uds {SOCKET}",
        "--workers 2",
        "--proxy-headers",
        "--forwarded-allow-ips *",
        "--timeout-graceful-shutdown 20",
    ):
        assert part in cmd, cmd


def test_the_live_slot_sends_each_response_in_one_write(host):
    """release.env names the one-write protocol (app/core/server.py) and the serving processes have it."""
    main_pid = host.check_output(f"systemctl show -p MainPID --value {UNIT}")
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid}/environ").splitlines()
    uvicorn = [line for line in environ if line.startswith("UVICORN_")]  # not the rest: it holds secrets
    assert uvicorn == ["UVICORN_HTTP=app.core.server:HttpProtocol"], uvicorn


def test_process_is_sandboxed(host):
    status = host.file(f"/proc/{main_pid(host)}/status").content_string
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^CapEff:\s+0+$", status, re.M)
    assert re.search(r"^CapBnd:\s+0+$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M)


def test_exposure_score_is_ok(host):
    out = host.check_output(f"systemd-analyze security {UNIT}.service")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze exposure: {score}")
    assert score < EXPOSURE_MAX, out


def test_release_layout(host, releases, fact):
    current = host.file(f"{ROOT}/current")
    assert current.is_symlink
    assert current.linked_to == f"{ROOT}/releases/{releases['r2']}"
    assert host.file(f"{ROOT}/slots/{SLOT}").linked_to == f"{ROOT}/releases/{releases['r2']}"
    # Blue was pointed at R4, whose start failed; it stays stopped.
    assert host.file(f"{ROOT}/slots/blue").linked_to == f"{ROOT}/releases/{releases['r4']}"
    kept = set(host.check_output(f"ls -A {ROOT}/releases").split())
    # keep 2 = the two newest (R4, R3) plus the live (R2) and previous (R1); the planted old ones are gone.
    assert kept == {releases[r] for r in ("r1", "r2", "r3", "r4")}, kept
    for release in kept:
        folder = host.file(f"{ROOT}/releases/{release}")
        assert (folder.user, folder.group, folder.mode) == ("root", "nnp", 0o750)
        code = host.file(f"{ROOT}/releases/{release}/app/main.py")
        assert (code.user, code.group, code.mode) == ("root", "nnp", 0o640)
        assert f'RELEASE_ID="{release}"' in host.file(f"{ROOT}/releases/{release}/release.env").content_string
        assert host.file(f"{ROOT}/releases/{release}/.venv").linked_to == fact["venv"]
    # All four releases have the same requirements: one virtualenv, the planted unused one pruned.
    assert host.check_output(f"ls -A {ROOT}/venvs").split() == [Path(fact["venv"]).name]
    venv = host.file(fact["venv"])
    assert (venv.user, venv.group) == ("nnp", "nnp")
    assert host.file(f"{fact['venv']}/.nnp-complete").exists
    assert not host.file(f"{ROOT}/releases/{releases['r2']}/app/__pycache__").exists


def test_code_is_read_only_for_the_service_account(host):
    probe = host.run(f"runuser -u nnp -- touch {ROOT}/current/app/probe")
    assert probe.rc != 0


def test_local_fact_records_live_and_previous_release(fact, releases):
    assert fact["release"] == releases["r2"]
    assert fact["slot"] == SLOT
    assert fact["previous_release"] == releases["r1"]
    assert fact["alembic_head"] == HEAD
    assert re.fullmatch(rf"{re.escape(fact['venv'].rsplit('/', 1)[0])}/[0-9a-f]{{16}}", fact["venv"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fact["deployed_at"])
    # R2 is a changed copy of a committed snapshot: commit plus "-dirty".
    assert re.fullmatch(r"[0-9a-f]{40}-dirty", fact["git_sha"])
    assert releases["r2"].startswith(fact["git_sha"][:10] + "-")


def test_app_login_has_no_privileges(host, hostvars):
    out = psql(
        host,
        hostvars,
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconfig "
        "FROM pg_roles WHERE rolname = 'nnp_app'",
    )
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == 't|f|f|f|f|f|{"search_path=nnp, public"}'


def test_app_login_owns_its_schema_and_tables(host, hostvars):
    assert psql(host, hostvars, "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'nnp'").stdout.strip() == (
        "nnp_app"
    )
    owners = psql(host, hostvars, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'nnp'").stdout.split()
    assert owners == ["nnp_app"]
    database_owner = psql(host, hostvars, "SELECT datdba::regrole FROM pg_database WHERE datname = 'nnp'")
    assert database_owner.stdout.strip() == hostvars["app_db_master_user"]


def test_public_has_no_rights(host, hostvars):
    acl = psql(host, hostvars, "SELECT datacl FROM pg_database WHERE datname = 'nnp'").stdout.strip()
    assert "nnp_app=c/" in acl, acl
    assert not re.search(r"[{,]=", acl), f"PUBLIC still has rights on the database: {acl}"
    acl = psql(host, hostvars, "SELECT nspacl FROM pg_namespace WHERE nspname = 'public'").stdout.strip()
    assert "nnp_app=U/" in acl, acl
    assert not re.search(r"[{,]=", acl), f"PUBLIC still has rights on schema public: {acl}"
    denied = psql(
        host,
        hostvars,
        "CREATE TABLE public.probe (id int)",
        user="nnp_app",
        password=hostvars["app_db_password"],
    )
    assert denied.rc != 0
    assert "permission denied" in denied.stderr


def test_extension_is_installed(host, hostvars):
    out = psql(host, hostvars, "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_trgm'")
    assert out.stdout.strip() == "public"


def test_schema_is_at_the_recorded_head(host, hostvars, fact):
    version = psql(host, hostvars, "SELECT version_num FROM nnp.alembic_version").stdout.strip()
    assert version == fact["alembic_head"] == HEAD
    # R2's migration ran; R3's failed one left nothing behind (one transaction).
    tables = psql(host, hostvars, "SELECT to_regclass('nnp.deploy_probe'), to_regclass('nnp.broken_probe')")
    assert tables.stdout.strip() == "nnp.deploy_probe|"


def test_torch_trains_and_predicts_in_the_sandbox(host):
    status, model = http(
        host,
        "/api/models",
        {"name": f"verify-{uuid.uuid4().hex[:8]}", "dataset": "xor", "layers": [{"width": 8, "activation": "tanh"}]},
    )
    assert status == 201, model
    status, session = http(
        host, f"/api/models/{model['id']}/sessions", {"epochs": 20, "learning_rate": 0.05, "batch_size": 16}
    )
    assert status == 202, session
    deadline = time.monotonic() + 120
    while session["status"] in {"queued", "running"} and time.monotonic() < deadline:
        time.sleep(1)
        _, session = http(host, f"/api/sessions/{session['id']}")
    assert session["status"] == "completed", session
    status, prediction = http(host, f"/api/models/{model['id']}/predict", {"inputs": [[0.5, 0.5], [-0.5, 0.5]]})
    assert status == 200, prediction
    assert len(prediction["outputs"]) == 2


def slot_cpu_seconds(host):
    """User + system CPU seconds of the live slot's processes (Uvicorn's supervisor and workers), from
    /proc/<pid>/stat: the containers have no CPU accounting for systemd to report."""
    pids = host.check_output(f"pgrep -u nnp -f {shlex.quote(f'{ROOT}/slots/{SLOT}/.venv/bin/python')}").split()
    ticks = 0
    for pid in pids:
        fields = host.file(f"/proc/{pid}/stat").content_string.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15 of proc(5)
    return ticks / int(host.check_output("getconf CLK_TCK"))


def test_the_worker_runs_the_live_release_below_the_slots_and_the_slots_do_not_train(host, fact):
    """The training above ran in nnp-worker: it registered under the inventory name with the live release
    and the cpu device, runs as the service account from `current`, below the slots' CPU weight, in the
    same sandbox; the slot's own processes spent no time on it (CPU seconds of the slot barely move)."""
    worker = "nnp-worker.service"
    assert host.service(worker).is_running
    assert host.service(worker).is_enabled
    assert host.check_output(f"systemctl show -p User --value {worker}") == "nnp"
    assert host.check_output(f"systemctl show -p Nice --value {worker}") == "10"
    assert host.check_output(f"systemctl show -p CPUWeight --value {worker}") == "20"
    pid = int(host.check_output(f"systemctl show -p MainPID --value {worker}"))
    cmdline = host.file(f"/proc/{pid}/cmdline").content_string.split("\0")
    assert cmdline[:3] == [f"{ROOT}/releases/{fact['release']}/.venv/bin/python", "-m", "app.worker"], cmdline
    status = host.file(f"/proc/{pid}/status").content_string
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^CapEff:\s+0+$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M)
    code, workers = http(host, "/api/workers")
    assert code == 200, workers
    mine = [w for w in workers["items"] if w["host"] == "app-instance" and w["alive"]]
    assert [(w["release_id"], w["device"]) for w in mine] == [(fact["release"], "cpu")], workers

    before = slot_cpu_seconds(host)
    body = {"name": f"verify-{uuid.uuid4().hex[:8]}", "dataset": "xor", "dataset_params": {"n_samples": 1000}}
    status, model = http(host, "/api/models", body)
    assert status == 201, model
    status, session = http(host, f"/api/models/{model['id']}/sessions", {"epochs": 150, "batch_size": 8})
    assert status == 202, session
    deadline = time.monotonic() + 180
    while session["status"] in {"queued", "running"} and time.monotonic() < deadline:
        time.sleep(1)
        _, session = http(host, f"/api/sessions/{session['id']}")
    assert session["status"] == "completed", session
    assert session["owner_host"] == "app-instance", session
    spent = slot_cpu_seconds(host) - before
    # The slot answered about one status poll a second: far below what 150 epochs of training take.
    assert spent < 5, f"the slot spent {spent:.1f} CPU seconds during a training it should not run"


def test_metrics_of_every_slot_process_through_nginx_and_of_the_worker_on_its_port(host, fact):
    """GET /metrics through nginx (loopback is an internal client): the live slot's two processes each keep
    their samples in the slot's runtime folder and the answer adds them up, naming the live release. The
    worker serves its own on app_worker_metrics_port: what it is, its heartbeat and every queue."""
    environment = host.check_output(f"systemctl show -p Environment --value {UNIT}")
    assert f"PROMETHEUS_MULTIPROC_DIR=/run/nnp-app/{SLOT}/metrics" in environment.split(), environment
    for _ in range(3):
        host.check_output(f"curl -sf http://127.0.0.1:{PORT}/healthz")
    text = host.check_output(f"curl -sf http://127.0.0.1:{PORT}/metrics")
    healthz = re.search(r'^nnp_http_requests_total{method="GET",route="/healthz",status="200"} (\S+)$', text, re.M)
    assert healthz, text[-3000:]
    assert float(healthz[1]) >= 3, healthz[0]
    assert re.search(rf'^nnp_build_info{{[^}}]*release="{fact["release"]}"[^}}]*}} 1\.0$', text, re.M), text[-3000:]
    files = host.check_output(f"ls /run/nnp-app/{SLOT}/metrics").split()
    processes = {name.rsplit("_", 1)[1] for name in files if name.startswith("gauge_max_")}
    assert len(processes) == 2, files  # app_workers: 2, each wrote its build info
    owner = host.check_output(f"stat -c %U /run/nnp-app/{SLOT}/metrics")
    assert owner == "nnp"

    worker = host.check_output("curl -sf http://127.0.0.1:18191/metrics")
    # The exposition sorts labels by name.
    labels = f'device="cpu",host="app-instance",queue="training-cpu",release="{fact["release"]}"'
    assert re.search(r"^nnp_worker_info{" + re.escape(labels) + r"} 1\.0$", worker, re.M), worker
    assert re.search(r"^nnp_worker_database_up 1\.0$", worker, re.M), worker
    assert re.search(r"^nnp_worker_heartbeat_timestamp_seconds ", worker, re.M), worker
    assert re.search(r'^nnp_queue_jobs{queue="training-cuda",status="todo"} 0\.0$', worker, re.M), worker
    # Loopback only (app_worker_metrics_address): nothing listens on the port's other addresses.
    assert host.socket("tcp://127.0.0.1:18191").is_listening
    assert not host.socket("tcp://0.0.0.0:18191").is_listening


def test_zz_stopping_a_slot_lets_its_open_requests_finish(host):
    """A rollout stops the old slot after nginx moved away from it: what it still serves must finish. Four
    slow requests straight to the live slot's socket (1000-row predictions whose 17 kB bodies curl uploads
    at 4 kB/s, about 4 s each), then `systemctl stop` while they run: all four get 200 and the stop waits
    for them. The slot is started again afterwards (this test runs last)."""
    _, models = http(host, "/api/models?limit=500")
    trained = [model for model in models["items"] if model["name"].startswith("verify-") and model["weights_version"]]
    assert trained, models
    body = json.dumps({"inputs": [[round(i / 1000, 6), round(-i / 1000, 6)] for i in range(1000)]})
    host.run(f"echo {shlex.quote(body)} > /tmp/slow-body.json")
    url = f"http://localhost/api/models/{trained[0]['id']}/predict"
    script = f"""
        set -u
        for i in 1 2 3 4; do
          curl -s -o /dev/null -w '%{{http_code}}' --max-time 120 --limit-rate 4k --unix-socket {SOCKET} \\
            -H 'Content-Type: application/json' --data-binary @/tmp/slow-body.json '{url}' > /tmp/slow.$i &
        done
        sleep 0.5
        t0=$(date +%s%N); systemctl stop {UNIT}; t1=$(date +%s%N)
        wait
        echo "stop_ms=$(( (t1 - t0) / 1000000 ))"
        cat /tmp/slow.1 /tmp/slow.2 /tmp/slow.3 /tmp/slow.4; echo
        systemctl start {UNIT}
    """
    out = host.check_output(f"bash -c {shlex.quote(script)}")
    stop_line, codes = out.splitlines()[-2:]
    print(out)
    assert codes == "200200200200", out
    assert int(stop_line.split("=")[1]) >= 2000, out
    # nginx answers 502 (HTML) until the slot listens again: only the status code matters here.
    ready = f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{PORT}/readyz"
    deadline = time.monotonic() + 120
    while host.run(ready).stdout.strip() != "200":
        assert time.monotonic() < deadline, "the slot did not come back"
        time.sleep(1)
