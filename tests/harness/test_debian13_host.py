"""The test harness on a Debian 13 machine: scripts/host-deps.sh and the PostgreSQL fixture in a trixie container.

Machines of our kind run Debian 12 today and may run Debian 13 (PostgreSQL 17 instead of 15, Python 3.13).
The harness finds versions instead of assuming them; these tests show it on Debian 13 itself:

- the host-deps script installs every package the tests need on a bare Debian 13 (the root file system
  that scripts/build-image.sh debootstraps), and a second run finds nothing missing;
- the PostgreSQL fixture (tests/app/pgcluster.py) finds Debian 13's server binaries and runs a cluster
  on loopback that answers queries.

The image with the packages installed is kept, tagged with a hash of the host-deps script: the install
runs again only when the script changes (and a fresh machine runs it once). Everything runs with host
networking, as every test container here does; the cluster listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST_DEPS = REPO / "scripts" / "host-deps.sh"
ROOTFS = "nnp-rootfs:trixie"
# Not the host-deps script's business: the fixture's own imports (the venv provides psycopg on our machines).
FIXTURE_PACKAGES = ["python3-psycopg"]
# Every package host-deps.sh installs (besides Docker, which the container does not run).
HOST_PACKAGES = ["postgresql", "pebble", "debootstrap", "chromium", "chromium-driver"]


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def in_container(image: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """bash -c SCRIPT in a throwaway container of IMAGE, with the repository read-only at /src."""
    return docker(
        "run", "--rm", "--network", "host", "-v", f"{REPO}:/src:ro", image, "bash", "-ec", script, timeout=timeout
    )


@pytest.fixture(scope="module")
def debian13_host() -> str:
    """A Debian 13 image on which scripts/host-deps.sh --no-docker has run (built when the script changed)."""
    recipe = HOST_DEPS.read_bytes() + " ".join(FIXTURE_PACKAGES).encode()
    tag = f"nnp-hostdeps:trixie-{hashlib.sha256(recipe).hexdigest()[:12]}"
    if docker("image", "inspect", tag).returncode == 0:
        return tag
    if docker("image", "inspect", ROOTFS).returncode != 0:
        # The debootstrapped root file system of the Debian 13 test image.
        built = subprocess.run(
            [str(REPO / "scripts" / "build-image.sh"), "debian13"], capture_output=True, text=True, check=False
        )
        assert built.returncode == 0, built.stdout + built.stderr
    name = f"nnp-hostdeps-build-{os.getpid()}"
    script = (
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
        f"apt-get install -y -qq --no-install-recommends {' '.join(FIXTURE_PACKAGES)} >/dev/null; "
        "/src/scripts/host-deps.sh --no-docker"
    )
    run = docker(
        "run", "--name", name, "--network", "host", "-v", f"{REPO}:/src:ro", ROOTFS, "bash", "-ec", script, timeout=900
    )
    try:
        output = run.stdout + run.stderr
        assert run.returncode == 0, f"host-deps.sh failed on Debian 13:\n{output[-4000:]}"
        assert "==> installing host packages: " + " ".join(HOST_PACKAGES) in output, output[-4000:]
        committed = docker("commit", name, tag)
        assert committed.returncode == 0, committed.stderr
    finally:
        docker("rm", "-f", name)
    # The images of earlier versions of the script are no use any more.
    older = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "nnp-hostdeps")
    for image in older.stdout.split():
        if image != tag:
            docker("image", "rm", image)
    return tag


def test_host_deps_installed_everything_and_a_second_run_finds_nothing_missing(debian13_host: str) -> None:
    run = in_container(
        debian13_host,
        "cat /etc/debian_version; /src/scripts/host-deps.sh --no-docker; "
        f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(HOST_PACKAGES)}",
    )

    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("13."), lines[0]
    assert "installing host packages" not in run.stdout, run.stdout
    assert sorted(lines[1:]) == sorted(f"{name} install ok installed" for name in HOST_PACKAGES), lines


def test_the_postgresql_fixture_runs_debian_13s_server(debian13_host: str) -> None:
    """The fixture takes the newest /usr/lib/postgresql/*/bin (17 on Debian 13), as the app suite does on 12."""
    run = in_container(
        debian13_host,
        "echo $(ls /usr/lib/postgresql); cd /src/tests/app; python3 - <<'EOF'\n"
        "from pgcluster import PgCluster\n"
        "cluster = PgCluster().start()\n"
        "url = cluster.create_database('harness')\n"
        "import psycopg\n"
        "with psycopg.connect(url) as conn:\n"
        "    print(cluster.bin, cluster.port, conn.execute('SHOW server_version_num').fetchone()[0])\n"
        "    print(conn.execute('SELECT inet_server_addr()').fetchone()[0])\n"
        "cluster.stop()\n"
        "print('stopped', cluster.root.exists())\n"
        "EOF",
    )

    assert run.returncode == 0, run.stdout + run.stderr
    majors, started, address, stopped = run.stdout.splitlines()
    newest = max(int(major) for major in majors.split())
    assert newest >= 17, majors
    binary, port, version = started.split()
    assert binary == f"/usr/lib/postgresql/{newest}/bin"
    assert int(version) // 10000 == newest, version
    assert int(port) > 0
    assert address == "127.0.0.1", address
    assert stopped == "stopped False"
