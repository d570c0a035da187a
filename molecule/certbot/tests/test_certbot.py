"""A real certificate from an ACME server (Pebble), served by nginx, renewed by the timer alone."""

import time

import pytest

DOMAIN = "app.nnp.test"
LIVE = f"/etc/letsencrypt/live/{DOMAIN}"
SERVER = "https://127.0.0.1:14000/dir"
ROOT = "/root/pebble-root.pem"
CURL = f"curl -sS --max-time 10 --resolve {DOMAIN}:28080:127.0.0.1 --resolve {DOMAIN}:28443:127.0.0.1"


@pytest.fixture(scope="module")
def pebble_root(host):
    # Pebble makes a new root at every start; its management port hands it out (API CA trusted by prepare).
    host.check_output(f"curl -sS --fail -o {ROOT} https://127.0.0.1:15000/roots/0")
    return ROOT


def served_serial(host, root):
    out = host.check_output(
        f"openssl s_client -connect 127.0.0.1:28443 -servername {DOMAIN} -CAfile {root} -verify_return_error"
        " </dev/null 2>/dev/null | openssl x509 -noout -serial"
    )
    return out.strip()


def test_certificate_issued_for_the_domain(host):
    text = host.check_output(f"openssl x509 -in {LIVE}/cert.pem -noout -text")
    assert f"DNS:{DOMAIN}" in text
    assert "id-ecPublicKey" in text
    assert "prime256v1" in text or "P-256" in text


def test_https_chain_verifies_against_pebble_root(host, pebble_root):
    out = host.run(f"{CURL} --cacert {pebble_root} -o /dev/null -w '%{{http_code}}' https://{DOMAIN}:28443/api/ping")
    assert out.rc == 0, out.stderr
    assert out.stdout == "200"
    body = host.check_output(f"{CURL} --cacert {pebble_root} https://{DOMAIN}:28443/api/ping")
    assert '"x-forwarded-proto": "https"' in body
    # The system store trusts only Pebble's API CA, not the issuing root: verification really is against the root.
    assert host.run(f"{CURL} -o /dev/null https://{DOMAIN}:28443/").rc != 0


def test_http_redirects_to_https(host):
    out = host.check_output(f"{CURL} -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{DOMAIN}:28080/x")
    assert out == f"301 https://{DOMAIN}:28443/x"


def test_renewal_configuration_keeps_server_and_webroot(host):
    conf = host.file(f"/etc/letsencrypt/renewal/{DOMAIN}.conf").content_string
    assert f"server = {SERVER}" in conf
    assert "authenticator = webroot" in conf
    assert "webroot_path = /var/www/letsencrypt" in conf
    assert "key_type = ecdsa" in conf


def test_renewal_by_timer_only(host):
    timer = host.service("certbot.timer")
    assert timer.is_enabled
    assert timer.is_running
    assert not host.file("/etc/cron.d/certbot").exists
    assert host.run("grep -rl certbot /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/crontab").stdout == ""


def test_deploy_hook_reloads_nginx(host):
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/reload-nginx")
    assert hook.exists
    assert hook.mode == 0o755
    assert "systemctl reload nginx" in hook.content_string


def test_renew_dry_run_succeeds(host):
    out = host.run(f"certbot renew --dry-run --server {SERVER} --no-random-sleep-on-renew --non-interactive")
    assert out.rc == 0, out.stdout + out.stderr
    assert "all simulated renewals succeeded" in (out.stdout + out.stderr).lower()


def test_real_renewal_runs_deploy_hook_and_nginx_serves_new_certificate(host, pebble_root):
    pid_before = host.file("/run/nginx.pid").content_string
    serial_before = served_serial(host, pebble_root)
    out = host.run(f"certbot renew --force-renewal --server {SERVER} --no-random-sleep-on-renew --non-interactive")
    assert out.rc == 0, out.stdout + out.stderr
    # A reload starts new workers within moments; give them a few seconds.
    for _ in range(10):
        serial_after = served_serial(host, pebble_root)
        if serial_after != serial_before:
            break
        time.sleep(0.5)
    assert serial_after != serial_before, "nginx still serves the old certificate: deploy hook did not reload it"
    assert host.file("/run/nginx.pid").content_string == pid_before, "nginx was restarted instead of reloaded"
