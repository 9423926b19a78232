#!/usr/bin/env bash
# The test suite on a fresh machine: installs or starts everything the tests
# talk to, then runs `cargo test --locked` (arguments are passed on, so
# `scripts/test.sh admin` runs the tests whose names contain "admin").
#
# What it needs and where each comes from:
#   PostgreSQL 127.0.0.1:5432, NATS with JetStream 127.0.0.1:4222, RabbitMQ
#   127.0.0.1:5672: the machine's services, started here when they are down;
#   moto (S3 for tests/it/s3.rs) and schemathesis (the admin API against its
#   OpenAPI description, tests/it/admin.rs): PyPI, installed once for python3;
#   chromium and chromedriver (tests/it/admin_browser.rs): Debian's packages,
#   installed once.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

wait_for() { # name, tries, command...
  local name=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "$name did not come up" >&2
  return 1
}

port_open() { # host, port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

ensure_postgres() {
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432 -q
  fi
}

ensure_nats() {
  if ! port_open 127.0.0.1 4222; then
    log "starting NATS with JetStream"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
    wait_for NATS 30 port_open 127.0.0.1 4222
  fi
}

ensure_rabbitmq() {
  if ! port_open 127.0.0.1 5672; then
    log "starting RabbitMQ"
    rabbitmq-server -detached
    wait_for RabbitMQ 90 port_open 127.0.0.1 5672
  fi
}

ensure_moto() {
  if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    log "installing moto[server]"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]>=5.1,<6"
  fi
}

ensure_schemathesis() {
  if ! command -v schemathesis >/dev/null 2>&1; then
    log "installing schemathesis"
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis>=4,<5"
  fi
}

ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver
  fi
}

log "services and tools the tests use"
ensure_postgres
echo "PostgreSQL: up"
ensure_nats
echo "NATS: up"
ensure_rabbitmq
echo "RabbitMQ: up"
ensure_moto
echo "moto: $(python3 -c 'import moto; print(moto.__version__)')"
ensure_schemathesis
echo "schemathesis: $(schemathesis --version)"
ensure_chromium
echo "chromium: $(chromium --version 2>/dev/null || echo missing)"

log "cargo test --locked $*"
exec cargo test --locked "$@"
