#!/usr/bin/env bash
# A Kafka-protocol broker on 127.0.0.1:9092 for the tests, when none answers
# there. Apache Kafka ships through Maven Central, which this kind of
# machine cannot reach, so the broker is Tansu (the Rust crate `tansu`,
# Apache-2.0), built once into a cache outside the clone: about 12 minutes
# on 2 cores, then it starts in well under a second. Its `memory://` storage
# needs the `dynostore` feature (without it only `null://`, which keeps
# nothing, starts).
#
#   TANSU_ROOT   where the built broker is kept (default ~/.cache/countersign/tansu-0.6.0)
#   KAFKA_PORT   the port to serve on (default 9092)
set -euo pipefail

root="${TANSU_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/countersign/tansu-0.6.0}"
port="${KAFKA_PORT:-9092}"
tansu="$root/bin/tansu"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") >/dev/null 2>&1; }

if answers; then
  echo "kafka: a broker already answers on 127.0.0.1:$port"
  exit 0
fi

if [ ! -x "$tansu" ]; then
  echo "kafka: building Tansu 0.6.0 into $root (once per machine; about 12 minutes on 2 cores)"
  cargo install --quiet --locked tansu@0.6.0 --features dynostore --root "$root"
fi

log="$root/tansu-$port.log"
nohup "$tansu" broker \
  --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine "memory://tansu/" >"$log" 2>&1 &
for _ in $(seq 50); do
  if answers; then
    echo "kafka: Tansu answers on 127.0.0.1:$port (log: $log)"
    exit 0
  fi
  sleep 0.2
done
echo "kafka: Tansu did not start on 127.0.0.1:$port; see $log" >&2
exit 1
