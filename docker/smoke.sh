#!/usr/bin/env bash
# docker/smoke.sh: build the container image from a static release binary,
# run it, and check what an orchestrator relies on: /healthz and /readyz
# answer 200, the image's HEALTHCHECK passes, and SIGTERM to PID 1 ends in a
# clean exit (status 0, last log line "stopped").
#
# No image registry is reachable where this runs, so the image starts FROM
# scratch (docker/Dockerfile.smoke) with a binary linked statically against
# glibc and the host's CA bundle; docker/Dockerfile is the image to ship.
#
# The engine is docker when a docker daemon answers, else podman (Debian:
# apt-get install podman runc). With neither, the same static binary is run
# directly and the same checks are made; the output says so in capitals.
#
# Environment:
#   SMOKE_ENGINE      auto (default) | docker | podman | none
#   SMOKE_TARGET_DIR  cargo target directory of the static build (default
#                     target/static: kept apart from target/, so the RUSTFLAGS
#                     of one build never invalidate the other's artefacts)
#   SMOKE_BINARY      use this binary instead of building one (static, unless
#                     SMOKE_ENGINE=none)
#   SMOKE_KEEP_IMAGE  1 keeps the image afterwards
#
# Measured on the 2-core machine: from cold, the static release build takes
# ~25 minutes; after a change to countersign's own code, ~5 minutes (the crate
# alone); with nothing to rebuild, the whole run takes ~12 s with podman. So
# CI runs only the checks, on its debug binary (SMOKE_ENGINE=none, see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
ENGINE=${SMOKE_ENGINE:-auto}
IMAGE=localhost/countersign:smoke
NAME=countersign-smoke-$$
export CARGO_TARGET_DIR=${SMOKE_TARGET_DIR:-$PWD/target/static}
BIN=$CARGO_TARGET_DIR/$TARGET/release/countersign

STARTED=$(date +%s)
step() { printf '\n== [%3ss] %s\n' "$(($(date +%s) - STARTED))" "$*"; }
fail() {
  printf '\nSMOKE FAILED: %s\n' "$*" >&2
  exit 1
}

WORK=$(mktemp -d)
CONTAINER_STARTED=
PID=
cleanup() {
  if [[ -n $CONTAINER_STARTED ]]; then
    "$ENGINE" rm -f -v "$NAME" >/dev/null 2>&1 || true  # -v: its anonymous /data volume too
  fi
  if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
  fi
  if [[ $ENGINE != none && ${SMOKE_KEEP_IMAGE:-0} != 1 ]]; then
    "$ENGINE" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls URL until it answers 200 or SECONDS pass; the body goes to stdout.
wait_200() { # url, seconds, what
  local deadline=$(($(date +%s) + $2))
  while (($(date +%s) < deadline)); do
    if curl -fsS --max-time 2 "$1" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------- engine
engine_works() {
  case $1 in
  docker) command -v docker >/dev/null && docker info >/dev/null 2>&1 ;;
  podman) command -v podman >/dev/null && podman info >/dev/null 2>&1 ;;
  *) return 1 ;;
  esac
}
if [[ $ENGINE == auto ]]; then
  ENGINE=none
  for candidate in docker podman; do
    if engine_works "$candidate"; then
      ENGINE=$candidate
      break
    fi
  done
elif [[ $ENGINE != none ]] && ! engine_works "$ENGINE"; then
  fail "SMOKE_ENGINE=$ENGINE, but $ENGINE does not answer"
fi

echo "container engine: $ENGINE"

# The limits are set explicitly: the engine's defaults can exceed what this
# host's hard limits allow, and then runc cannot start the container at all.
RUN_FLAGS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
BUILD_FLAGS=()
if [[ $ENGINE == podman ]]; then
  # OCI image format has no HEALTHCHECK; the docker format keeps it.
  BUILD_FLAGS+=(--format docker)
  if command -v runc >/dev/null; then RUN_FLAGS+=(--runtime runc); fi
fi

# ---------------------------------------------------------------- binary
if [[ -n ${SMOKE_BINARY:-} ]]; then
  step "binary given: $SMOKE_BINARY (no build)"
  BIN=$SMOKE_BINARY
else
  step "static release binary ($TARGET, crt-static) in $CARGO_TARGET_DIR"
  build_started=$(date +%s)
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$TARGET" --bin countersign
  echo "built in $(($(date +%s) - build_started))s"
fi
if readelf -lW "$BIN" | grep -q 'program interpreter'; then
  # Only a static binary runs FROM scratch; run directly, any binary will do.
  [[ $ENGINE == none ]] || fail "$BIN is dynamically linked; a FROM scratch image cannot run it"
  echo "$BIN: dynamically linked"
else
  echo "$BIN: static ($(du -h "$BIN" | cut -f1))"
fi

PORT=$(free_port)
BASE=http://127.0.0.1:$PORT

if [[ $ENGINE != none ]]; then
  # -------------------------------------------------------------- image
  step "image $IMAGE with $ENGINE (docker/Dockerfile.smoke)"
  ctx=$WORK/context
  mkdir -p "$ctx/data" "$ctx/skeleton/tmp"
  chmod 1777 "$ctx/skeleton/tmp"
  cp "$BIN" "$ctx/countersign"
  cp -L "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/ca-certificates.crt"
  "$ENGINE" build "${BUILD_FLAGS[@]}" -q -f docker/Dockerfile.smoke -t "$IMAGE" "$ctx"
  config=$("$ENGINE" image inspect "$IMAGE" --format '{{.Config.User}} {{json .Config.Healthcheck.Test}} {{json .Config.Volumes}}')
  echo "user, healthcheck, volumes: $config"
  [[ $config == '65532:65532 '* ]] || fail "the image does not run as uid 65532"
  [[ $config == *'"healthcheck"'* ]] || fail "the image has no HEALTHCHECK running countersign healthcheck"
  [[ $config == *'"/data"'* ]] || fail "the image declares no /data volume"

  # -------------------------------------------------------------- run
  step "run: $ENGINE run ${RUN_FLAGS[*]} -p 127.0.0.1:$PORT:8080"
  CONTAINER_STARTED=1
  "$ENGINE" run -d --name "$NAME" "${RUN_FLAGS[@]}" -p "127.0.0.1:$PORT:8080" "$IMAGE" \
    >"$WORK/run.out" 2>"$WORK/run.err" || {
    cat "$WORK/run.err" >&2
    fail "$ENGINE run failed"
  }
  logs() { "$ENGINE" logs "$NAME" 2>&1; }
  health() { "$ENGINE" exec "$NAME" /usr/local/bin/countersign healthcheck "$@"; }
  stop() { "$ENGINE" kill --signal TERM "$NAME" >/dev/null; }
  # Waits up to $1 seconds for the exit; CODE is its status, empty if still running.
  wait_exit() {
    local deadline=$(($(date +%s) + $1))
    CODE=
    while (($(date +%s) < deadline)); do
      if [[ $("$ENGINE" inspect "$NAME" --format '{{.State.Running}}') == false ]]; then
        CODE=$("$ENGINE" inspect "$NAME" --format '{{.State.ExitCode}}')
        return
      fi
      sleep 0.2
    done
  }
else
  # -------------------------------------------------------------- no engine
  step "NO CONTAINER ENGINE: running $BIN directly (no image is built or checked)"
  mkdir -p "$WORK/root"
  (cd "$WORK/root" && exec env COUNTERSIGN_SERVER__LISTEN="127.0.0.1:$PORT" "$BIN" serve >"$WORK/serve.log" 2>&1) &
  PID=$!
  logs() { cat "$WORK/serve.log"; }
  health() { (cd "$WORK/root" && COUNTERSIGN_SERVER__LISTEN="127.0.0.1:$PORT" "$BIN" healthcheck "$@"); }
  stop() { kill -TERM "$PID"; }
  wait_exit() {
    local deadline=$(($(date +%s) + $1))
    CODE=
    while (($(date +%s) < deadline)); do
      if ! kill -0 "$PID" 2>/dev/null; then
        CODE=0
        wait "$PID" || CODE=$?
        PID=
        return
      fi
      sleep 0.2
    done
  }
fi

# ---------------------------------------------------------------- probes
step "probes on $BASE"
body=$(wait_200 "$BASE/healthz" 30) || {
  logs >&2
  fail "/healthz did not answer 200 within 30s"
}
echo "/healthz: $body"
body=$(wait_200 "$BASE/readyz" 30) || {
  logs >&2
  fail "/readyz did not answer 200 within 30s"
}
echo "/readyz: $body"
[[ $body == *'"store":"sqlite"'* ]] || fail "/readyz does not report the embedded SQLite store: $body"
health || fail "countersign healthcheck failed inside the running service's environment"
health --ready || fail "countersign healthcheck --ready failed"
if [[ $ENGINE == podman ]]; then
  # The image's own HEALTHCHECK, as podman runs it.
  podman healthcheck run "$NAME" || fail "podman healthcheck run: unhealthy"
  echo "podman healthcheck run: healthy"
fi

# ---------------------------------------------------------------- SIGTERM
step "SIGTERM"
stop
wait_exit 30
code=$CODE
[[ -n $code ]] || {
  logs >&2
  fail "still running 30s after SIGTERM"
}
last=$(logs | grep -v '^time=' | tail -n 1)
echo "exit status $code; last log line: $last"
[[ $code == 0 ]] || {
  logs >&2
  fail "exit status $code after SIGTERM, expected 0"
}
[[ $last == *'"message":"stopped"'* ]] || fail "the last log line is not the drain's \"stopped\""

if [[ $ENGINE == none ]]; then
  step "PASSED (NO CONTAINER ENGINE: the binary was checked directly, not an image) in $(($(date +%s) - STARTED))s"
else
  step "PASSED with $ENGINE in $(($(date +%s) - STARTED))s"
fi
