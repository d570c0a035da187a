#!/usr/bin/env python3
"""Start and stop the local stack's services on this machine: moto (the AWS API), Pebble (ACME),
pebble-challtestsrv (Pebble's DNS, answering 127.0.0.1 for every name) and the webhook receiver the
monitoring host's Alertmanager notifies (scripts/alert_receiver.py, writing <state-dir>/services/alerts.jsonl).

They run as background processes with pid files and logs in <state-dir>/services, on loopback only.
`start` starts what is not running (and replaces a process whose pid file is stale), then waits until
every port answers; it prints JSON {"changed": bool, "started": [...]} for Ansible. `stop` stops only
processes whose command line still names the service, so a recycled pid is never killed.

Pebble validates nothing (PEBBLE_VA_ALWAYS_VALID): both web hosts share the machine's ports, so an
HTTP-01 check on one port could only ever reach one of them. The certbot scenario tests validation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    ports: list[int]
    env: dict[str, str] = field(default_factory=dict)
    # A word the process's command line must contain for its pid file to be trusted.
    marker: str = ""


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in pid_file when that process is alive and still the service."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if marker in cmdline else None


def pebble_files(folder: Path, args: argparse.Namespace) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 for Pebble's API, and Pebble's config file."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, ca_key = folder / "api-ca.pem", folder / "api-ca-key.pem"
    cert, key = folder / "api-cert.pem", folder / "api-key.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "365"]
    if not ca.exists():
        subprocess.run(
            ["openssl", "req", "-x509", *ec, "-subj", "/CN=nnp local Pebble API CA", "-keyout", ca_key, "-out", ca],
            check=True,
            capture_output=True,
        )
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", *ec, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-addext", "extendedKeyUsage=serverAuth", "-addext", "basicConstraints=critical,CA:FALSE",
             "-CA", ca, "-CAkey", ca_key, "-keyout", key, "-out", cert],
            check=True,
            capture_output=True,
        )  # fmt: skip
    config = folder / "pebble-config.json"
    settings = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{args.pebble_port}",
            "managementListenAddress": f"127.0.0.1:{args.pebble_management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config.write_text(json.dumps(settings, indent=2) + "\n")
    config.chmod(0o600)
    return config


def services(args: argparse.Namespace, folder: Path) -> list[Service]:
    moto = Path(sys.executable).with_name("moto_server")
    pebble_config = pebble_files(folder / "pebble", args)
    return [
        Service("moto", [str(moto), "-H", "127.0.0.1", "-p", str(args.moto_port)], [args.moto_port], marker="moto"),
        Service(
            "challtestsrv",
            [
                "pebble-challtestsrv",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                f"127.0.0.1:{args.pebble_dns_port}",
                "-management",
                f"127.0.0.1:{args.pebble_dns_management_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ],
            [args.pebble_dns_management_port],
            marker="pebble-challtestsrv",
        ),
        Service(
            "pebble",
            ["pebble", "-config", str(pebble_config), "-dnsserver", f"127.0.0.1:{args.pebble_dns_port}"],
            [args.pebble_port, args.pebble_management_port],
            env={"PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            marker="pebble-config",
        ),
        Service(
            "alerts",
            [
                sys.executable,
                str(Path(__file__).with_name("alert_receiver.py")),
                "--port",
                str(args.alerts_port),
                "--file",
                str(folder / "alerts.jsonl"),
            ],
            [args.alerts_port],
            marker="alert_receiver.py",
        ),
    ]


def start(args: argparse.Namespace) -> dict[str, object]:
    folder = Path(args.state_dir) / "services"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    started: list[str] = []
    for service in services(args, folder):
        pid_file = folder / f"{service.name}.pid"
        if running_pid(pid_file, service.marker):
            continue
        busy = [port for port in service.ports if port_open(port)]
        if busy:
            raise SystemExit(f"{service.name}: port(s) {busy} on 127.0.0.1 are taken by another process")
        with (folder / f"{service.name}.log").open("ab") as log:
            process = subprocess.Popen(
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **service.env},
                start_new_session=True,
            )
        pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + 60
        while not all(port_open(port) for port in service.ports):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{service.name} did not start: see {folder / service.name}.log")
            time.sleep(0.2)
        started.append(service.name)
    return {"changed": bool(started), "started": started}


def stop(args: argparse.Namespace) -> dict[str, object]:
    folder = Path(args.state_dir) / "services"
    stopped: list[str] = []
    markers = {
        "moto": "moto",
        "challtestsrv": "pebble-challtestsrv",
        "pebble": "pebble-config",
        "alerts": "alert_receiver.py",
    }
    for name, marker in markers.items():
        pid_file = folder / f"{name}.pid"
        pid = running_pid(pid_file, marker)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while running_pid(pid_file, marker) and time.monotonic() < deadline:
                time.sleep(0.1)
            if running_pid(pid_file, marker):
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    return {"changed": bool(stopped), "stopped": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--moto-port", type=int, default=24566)
    parser.add_argument("--pebble-port", type=int, default=24000)
    parser.add_argument("--pebble-management-port", type=int, default=24015)
    parser.add_argument("--pebble-dns-port", type=int, default=24053)
    parser.add_argument("--pebble-dns-management-port", type=int, default=24055)
    parser.add_argument("--alerts-port", type=int, default=26095)
    args = parser.parse_args()
    print(json.dumps(start(args) if args.action == "start" else stop(args)))


if __name__ == "__main__":
    main()
