#!/usr/bin/env bash
# The test suite on a fresh machine: installs or starts everything the tests
# talk to, then runs `cargo test --locked` (arguments are passed on, so
# `scripts/test.sh admin` runs the tests whose names contain "admin").
#
# What it needs and where each comes from:
#   PostgreSQL 127.0.0.1:5432, NATS with JetStream 127.0.0.1:4222, RabbitMQ
#   127.0.0.1:5672: the machine's services, started here when they are down;
#   moto (S3 for tests/it/s3.rs) and schemathesis (the admin API against its
#   OpenAPI description, tests/it/admin.rs) and kubernetes-validate (the
#   manifests under deploy/kubernetes/, tests/it/deploy.rs; it carries the
#   Kubernetes schemas, so it checks offline): PyPI, installed once for python3;
#   chromium and chromedriver (tests/it/admin_browser.rs): Debian's packages,
#   installed once;
#   the AsyncAPI 3.0.0 JSON Schema (tests/it/asyncapi.rs): npm's
#   @asyncapi/specs, pinned, installed once into ASYNCAPI_SPECS_DIR (a cache
#   outside the tree, read by the test), checked with PyPI's jsonschema and PyYAML.
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

ensure_kubernetes_validate() {
  if ! command -v kubernetes-validate >/dev/null 2>&1; then
    log "installing kubernetes-validate"
    python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate>=1.37,<1.38"
  fi
}

ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver
  fi
}

ASYNCAPI_SPECS_VERSION=6.11.1
export ASYNCAPI_SPECS_DIR="${ASYNCAPI_SPECS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/countersign/asyncapi-specs-$ASYNCAPI_SPECS_VERSION}"

ensure_asyncapi_specs() {
  if [ ! -f "$ASYNCAPI_SPECS_DIR/node_modules/@asyncapi/specs/schemas/3.0.0.json" ]; then
    log "installing @asyncapi/specs@$ASYNCAPI_SPECS_VERSION into $ASYNCAPI_SPECS_DIR"
    if ! command -v npm >/dev/null 2>&1; then
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
    fi
    mkdir -p "$ASYNCAPI_SPECS_DIR"
    npm install --prefix "$ASYNCAPI_SPECS_DIR" --no-save --no-audit --no-fund --silent \
      "@asyncapi/specs@$ASYNCAPI_SPECS_VERSION"
  fi
  if ! python3 -c 'import jsonschema, yaml' >/dev/null 2>&1; then
    log "installing jsonschema and PyYAML"
    python3 -m pip install --quiet --disable-pip-version-check "jsonschema>=4.18,<5" "PyYAML>=6,<7"
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
ensure_kubernetes_validate
echo "kubernetes-validate: $(kubernetes-validate --version)"
ensure_chromium
echo "chromium: $(chromium --version 2>/dev/null || echo missing)"
ensure_asyncapi_specs
echo "AsyncAPI specs: @asyncapi/specs@$ASYNCAPI_SPECS_VERSION in $ASYNCAPI_SPECS_DIR"

log "cargo test --locked $*"
exec cargo test --locked "$@"
