#!/usr/bin/env bash
# The demo command: installs dependencies, builds finch (Release) and runs
# every stage on BANKING77 from $FINCH_DATA_DIR (default ../shared/data), or
# on the bundled sample when that is absent. Extra arguments go to `finch demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo's home is the checkout's .finch, which finch also finds from any
# directory inside the checkout.
export FINCH_HOME="${FINCH_HOME:-$PWD/.finch}"
scripts/install-deps.sh
scripts/fetch-pretrained.sh ||
  echo "demo: no pretrained encoder; the demo's teacher is trained from scratch"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)"
exec build/release/finch demo "$@"
