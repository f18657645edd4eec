#!/usr/bin/env bash
# The test command: installs dependencies and the pretrained encoder, then
# builds and runs the whole CTest suite twice, as a Release build with -Werror
# and under AddressSanitizer + UndefinedBehaviorSanitizer. Each build starts
# its own PostgreSQL cluster under build/<config>/test-home unless
# FINCH_DATABASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The pretrained encoder (scripts/fetch-pretrained.sh), once: the tests that
# need it run against it, and skip, saying why, when it cannot be fetched.
export FINCH_PRETRAINED_DIR="${FINCH_PRETRAINED_DIR:-$PWD/.finch/pretrained}"
scripts/fetch-pretrained.sh "$FINCH_PRETRAINED_DIR" ||
  echo "test: no pretrained encoder; the tests that need it will skip"
jobs=$(nproc)
for cfg in Release Sanitize; do
  dir="build/test-${cfg,,}"
  echo "== ${cfg}: configure and build in ${dir}"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$cfg" -DFINCH_WERROR=ON >/dev/null
  cmake --build "$dir" -j"$jobs"
  echo "== ${cfg}: tests"
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 ctest --output-on-failure -j"$jobs")
done
