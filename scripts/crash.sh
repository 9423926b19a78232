#!/usr/bin/env bash
# The long crash test, by hand: 10,000 completed envelopes sent by the
# sandbox's Connect sender at a steady rate while `countersign serve` is
# killed with SIGKILL at 5 random moments and restarted, once on SQLite and
# once on PostgreSQL (POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test).
# It passes only if every acknowledged envelope has DocuSign's bytes stored and
# its event delivered under one stable id, with no dead letter. It prints the
# duplicate deliveries per store. Override with CRASH_ENVELOPES, CRASH_KILLS,
# CRASH_RATE (envelopes per second).
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_ENVELOPES="${CRASH_ENVELOPES:-10000}"
export CRASH_KILLS="${CRASH_KILLS:-5}"
export CRASH_RATE="${CRASH_RATE:-100}"
# One store at a time: the two runs would otherwise share two cores.
exec cargo test --release --locked --test it -- crash:: --nocapture --test-threads 1
