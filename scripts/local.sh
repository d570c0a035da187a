#!/usr/bin/env bash
# The whole stack on this machine (make up / make down): a local AWS API, containers for the hosts,
# and the same site.yml as staging against inventories/local. Loopback addresses only.
#   scripts/local.sh up     start or converge it (a second run changes nothing), print the URL
#   scripts/local.sh down   remove everything it made, and check nothing is left
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
# moto accepts any credentials; these never reach AWS (aws_endpoint_url is always set for local).
# Ansible masks the secret key wherever it appears in results: it must not be part of any resource name.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=eu-central-1
inventory=inventories/local

case "${1:-}" in
up)
  start=$SECONDS
  ansible-playbook -i "$inventory" playbooks/local/up.yml
  ansible-playbook -i "$inventory" site.yml
  url="https://127.0.0.1:8443/"
  ca="$PWD/.local/tls/ca.pem"
  curl --silent --show-error --fail --cacert "$ca" "${url}version" >/dev/null
  curl --silent --show-error --fail http://127.0.0.1:26090/-/ready >/dev/null
  curl --silent --show-error --fail http://127.0.0.1:26093/-/ready >/dev/null
  cat <<MSG

The playground is up in $((SECONDS - start)) s: $url  (also https://nnp.localhost:8443/)
Its certificate is signed by the stack's own CA: $ca
  curl:     curl --cacert $ca ${url}version
  browser:  import $ca as a trusted authority (Chromium: Settings > Privacy and security >
            Security > Manage certificates > Authorities), or for this machine only:
            sudo cp $ca /usr/local/share/ca-certificates/nnp-local.crt && sudo update-ca-certificates
Monitoring (mon1): Prometheus  http://127.0.0.1:26090/   Alertmanager  http://127.0.0.1:26093/
  alerts go to the stack's webhook receiver, one JSON line each: $PWD/.local/services/alerts.jsonl
Deploy a change: scripts/local.sh deploy   Remove everything: make down
MSG
  ;;
deploy)
  shift
  ansible-playbook -i "$inventory" site.yml --tags deploy "$@"
  ;;
down)
  ansible-playbook -i "$inventory" playbooks/local/down.yml
  ;;
*)
  echo "usage: $0 up|deploy|down" >&2
  exit 2
  ;;
esac
