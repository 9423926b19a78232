#!/usr/bin/env bash
# Runs each cargo-fuzz target in turn for FUZZ_SECONDS (default 600), from
# the committed seeds plus whatever fuzz/corpus/ has gathered in earlier
# runs. Not part of .ci/run: three targets at ten minutes each would take
# CI past its 20 minutes. Findings land in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                          # all three, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh xml_notification
#   FUZZ_SANITIZER=none scripts/fuzz.sh      # without AddressSanitizer
#
# On a shared machine, run it under `nice -n 15`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-600}
sanitizer=${FUZZ_SANITIZER:-address}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(json_notification xml_notification signature_headers)
fi

# cargo-fuzz passes -Z flags (sanitizers, coverage instrumentation) that
# stable rustc accepts only with this set; no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

max_len() { # Bodies need room; a header set needs far less.
  case $1 in
    signature_headers) echo 8192 ;;
    *) echo 65536 ;;
  esac
}

failed=()
for target in "${targets[@]}"; do
  printf '\n== %s for %ss (sanitizer: %s)\n' "$target" "$seconds" "$sanitizer"
  mkdir -p "fuzz/corpus/$target"
  if ! cargo fuzz run "$target" --sanitizer "$sanitizer" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=10 \
    -dict="fuzz/dicts/$target.dict" -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "findings in: ${failed[*]} (see fuzz/artifacts/)" >&2
  exit 1
fi
