#!/usr/bin/env bash
# The GPU checks, as one run on a machine with a CUDA device: builds the
# CUDA backend and runs the CPU/CUDA parity tests (test_backend: cuBLAS
# GEMM; test_ops: every op of the table, fp32 and bf16; test_tfm_device: one
# training step and whole nn_tfm_train runs) and bench_tfm_device (training
# examples/s and batch-1 latency, CPU against CUDA fp32 and bf16).
#
# On a machine without finch's library packages, carry .device-debs/ (made
# by scripts/device-debs.sh) and they are unpacked under .device-root/, not
# over the system (FINCH_DEVICE_UNPACK=1 forces that where the packages are
# installed). Logs go to $OUT (or build/device) as device-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/build/device}
mkdir -p "$out"
exec > >(tee "$out/device-check.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DFINCH_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90)
if [ -d .device-debs ] && { [ -n "${FINCH_DEVICE_UNPACK:-}" ] || ! pkg-config --exists libpcre2-8 jansson libmicrohttpd 2>/dev/null; }; then
  dr=$root/.device-root
  rm -rf "$dr" && mkdir -p "$dr"
  for f in .device-debs/*.deb; do dpkg -x "$f" "$dr"; done
  lib=$dr/usr/lib/x86_64-linux-gnu
  # Debian's .pc files name /usr; point them at the unpacked tree. OpenBLAS's
  # unversioned names are made by update-alternatives, which did not run.
  find "$dr" -name '*.pc' -exec sed -i "s|=/usr|=$dr/usr|g; s|-I/usr|-I$dr/usr|g; s|-L/usr|-L$dr/usr|g" {} +
  ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
  export PKG_CONFIG_PATH=$lib/pkgconfig:$lib/openblas-pthread/pkgconfig:$dr/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LDFLAGS="-Wl,-rpath-link,$lib -Wl,-rpath-link,$lib/openblas-pthread"
  cmake_args+=(-DPostgreSQL_INCLUDE_DIR="$dr/usr/include/postgresql" -DPostgreSQL_LIBRARY="$lib/libpq.so")
fi
rc=0
cmake -S . -B build/device "${cmake_args[@]}" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
grep "CUDA backend" "$out/configure.log"
cmake --build build/device -j"$(nproc)" --target test_backend test_ops test_tfm_device bench_tfm_device \
  >"$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -30; exit 1; }
for t in test_backend test_ops test_tfm_device; do
  echo "== $t"
  FINCH_TEST_TMP=$out timeout 300 build/device/tests/nn/$t
  s=$?
  echo "== $t: exit $s (0 passed, 77 skipped)"
  [ $s -eq 0 ] || rc=1
done
echo "== bench_tfm_device"
timeout 300 build/device/bench/bench_tfm_device || rc=1
timeout 300 build/device/bench/bench_tfm_device buckets=50000 || rc=1
exit $rc
