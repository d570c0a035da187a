"""The monitoring host as on-call uses it: Prometheus scrapes every target, the rules load, Alertmanager's
configuration is valid, and an alert goes all the way: the node exporter stopped hard makes NnpHostDown
fire and reach the webhook and the SNS topic (moto, through a queue subscribed to it) naming the host,
and its resolution follows when the exporter is back. The front door's probe reports a certificate that
expires in 5 days, which fires NnpCertificateExpiresSoon."""

import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

PROMETHEUS = "http://127.0.0.1:18390"
ALERTMANAGER = "http://127.0.0.1:18393"
WEBHOOK_PORT = 18395
MOTO_PORT = 18396
PROBED_PORT = 18397
TOPIC = "nnp-molecule-alarms"
HOST = "monitoring-instance"
RULES = {
    "NnpHostDown",
    "NnpAppNotReady",
    "NnpHigh5xxRatio",
    "NnpHighLatency",
    "NnpWorkerHeartbeatMissing",
    "NnpTrainingQueueWaiting",
    "NnpDiskFilling",
    "NnpFrontDoorDown",
    "NnpCertificateExpiresSoon",
    "NnpDeployStuck",
}


def test_services_listen_on_loopback_only(host):
    for unit in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "prometheus-node-exporter"):
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
    for port in (18390, 18393, 18315, 18300):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, port
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, port
    # One Alertmanager: no cluster port.
    assert not host.socket("tcp://0.0.0.0:9094").is_listening


def test_the_rules_load_with_runbook_links():
    groups = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == RULES
    for name, rule in rules.items():
        assert rule["health"] == "ok", rule
        assert rule["annotations"]["runbook_url"].endswith(f"/docs/RUNBOOK.md#{name.lower()}"), rule
        assert rule["labels"]["severity"] == "page"


def test_every_target_is_scraped_and_named_after_its_host():
    deadline = time.monotonic() + 30
    while True:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        jobs = {t["labels"]["job"]: t for t in targets if t["labels"]["job"] != "probe"}
        if all(t["health"] == "up" for t in jobs.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(jobs) == {"prometheus", "alertmanager", "blackbox", "node"}
    assert {job: t["health"] for job, t in jobs.items()} == dict.fromkeys(jobs, "up"), jobs
    assert {t["labels"]["instance"] for t in jobs.values()} == {HOST}


def test_alertmanagers_configuration_is_valid_and_names_both_receivers(host):
    check = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert check.rc == 0, check.stdout + check.stderr
    config = httpx.get(f"{ALERTMANAGER}/api/v2/status", timeout=10).json()["config"]["original"]
    assert "url: http://127.0.0.1:18395/alerts" in config
    assert f"topic_arn: arn:aws:sns:eu-central-1:123456789012:{TOPIC}" in config
    # The static key's secret is not served back (Alertmanager masks secrets).
    assert "secret_key: testing" not in config
    assert host.file("/etc/prometheus/alertmanager.yml").mode == 0o640


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[float, dict]]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.received.append((time.monotonic(), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", WEBHOOK_PORT), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver.received
    server.shutdown()


@pytest.fixture(scope="module")
def sns_queue():
    """moto as SNS (and SQS): the topic Alertmanager publishes to, with a queue subscribed to it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT)
    server.start()
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto's fixed test key)
        region_name="eu-central-1",
    )
    endpoint = f"http://127.0.0.1:{MOTO_PORT}"
    sns, sqs = session.client("sns", endpoint_url=endpoint), session.client("sqs", endpoint_url=endpoint)
    topic = sns.create_topic(Name=TOPIC)["TopicArn"]
    queue = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

    def messages():
        answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [json.loads(m["Body"]) for m in answer.get("Messages", [])]

    yield messages
    server.stop()


def wait_for(webhook, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, body in list(webhook):
            if predicate(body):
                return at, body
        time.sleep(0.2)
    raise AssertionError(f"no matching notification within {timeout} s: {[b for _, b in webhook]}")


def alert_of(body, name, status):
    return body["status"] == status and any(
        a["labels"]["alertname"] == name and a["status"] == status for a in body["alerts"]
    )


def test_a_host_whose_exporter_stops_pages_the_webhook_and_sns_and_resolves(host, webhook, sns_queue):
    host.run("systemctl kill --signal=SIGKILL prometheus-node-exporter")
    host.run("systemctl stop prometheus-node-exporter")
    stopped = time.monotonic()
    try:
        at, body = wait_for(webhook, lambda b: alert_of(b, "NnpHostDown", "firing"), 60)
        firing = body["alerts"][0]
        assert firing["labels"]["instance"] == HOST
        assert firing["annotations"]["summary"] == f"{HOST} does not answer: its node exporter is unreachable"
        assert firing["annotations"]["runbook_url"].endswith("#nnphostdown")
        print(f"\nNnpHostDown reached the webhook {at - stopped:.1f} s after the exporter stopped (for: 5s)")
        deadline = time.monotonic() + 30
        published = []
        while not any("NnpHostDown" in m.get("Subject", "") for m in published):
            assert time.monotonic() < deadline, published
            published += sns_queue()
        page = next(m for m in published if "NnpHostDown" in m["Subject"])
        assert page["TopicArn"].endswith(f":{TOPIC}")
        assert page["Subject"] == f"[FIRING] NnpHostDown {HOST}"
        assert f"FIRING NnpHostDown on {HOST}" in page["Message"]
        assert "#nnphostdown" in page["Message"]
    finally:
        host.run("systemctl start prometheus-node-exporter")
    wait_for(webhook, lambda b: alert_of(b, "NnpHostDown", "resolved"), 60)


def test_a_deploy_that_runs_too_long_pages(host, webhook):
    """The deploy history's textfile on a host whose node exporter Prometheus scrapes (role deploy_history
    writes it on the deploy lock's host): a deploy running for 2 hours, past monitoring_alert_deploy_stuck_seconds
    (3600 here, the default), fires NnpDeployStuck naming the host and the kind; its finish resolves it."""
    textfile = "/var/lib/prometheus/node-exporter/nnp_deploy.prom"
    started = int(time.time()) - 7200

    def plant(running: int) -> None:
        text = (
            f'nnp_deploy_running{{kind="deploy"}} {running}\n'
            f'nnp_deploy_running{{kind="rollback"}} 0\n'
            f'nnp_deploy_started_timestamp_seconds{{kind="deploy"}} {started}\n'
        )
        host.run(f"printf '%s' '{text}' > {textfile}.tmp && mv {textfile}.tmp {textfile}")

    plant(1)
    try:
        _, body = wait_for(webhook, lambda b: alert_of(b, "NnpDeployStuck", "firing"), 60)
        firing = body["alerts"][0]
        assert (firing["labels"]["instance"], firing["labels"]["kind"]) == (HOST, "deploy"), firing
        assert firing["annotations"]["summary"].startswith(f"{HOST}: a deploy started 2h"), firing
        assert firing["annotations"]["runbook_url"].endswith("#nnpdeploystuck")
        plant(0)
        wait_for(webhook, lambda b: alert_of(b, "NnpDeployStuck", "resolved"), 60)
    finally:
        host.run(f"rm -f {textfile}")


def self_signed_for(days: int, folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-days", str(days), "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_the_front_door_probe_reports_a_certificate_about_to_expire(webhook, tmp_path):
    cert, key = self_signed_for(5, tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", PROBED_PORT), Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, body = wait_for(webhook, lambda b: alert_of(b, "NnpCertificateExpiresSoon", "firing"), 60)
        alert = next(a for a in body["alerts"] if a["labels"]["alertname"] == "NnpCertificateExpiresSoon")
        assert alert["labels"]["instance"] == f"https://127.0.0.1:{PROBED_PORT}/"
        expiry = httpx.get(
            f"{PROMETHEUS}/api/v1/query", params={"query": "probe_ssl_earliest_cert_expiry - time()"}, timeout=10
        ).json()["data"]["result"][0]["value"][1]
        assert 4 * 86400 < float(expiry) <= 5 * 86400
        success = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": "probe_success"}, timeout=10).json()
        assert success["data"]["result"][0]["value"][1] == "1"
    finally:
        server.shutdown()


class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass
