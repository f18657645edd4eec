#!/usr/bin/env bash
# Fetches, on a machine with Debian 12's archive, the library packages a
# build needs (with their dependencies, less the C runtime every Linux image
# has) into .device-debs/, for scripts/device-check.sh to unpack on a GPU
# machine that can reach no package archive. About 33 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=(libpq-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libopenblas-dev libmicrohttpd-dev
     libjansson-dev libssl-dev zlib1g-dev)
skip='^(gcc-12-base|libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt1|libcrypt-dev|libgcc-s1|libstdc\+\+6|libgomp1|libopenblas0-openmp|libopenblas0-serial|libopenblas-openmp-dev|libopenblas-serial-dev)$'
pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
         --no-enhances "${dev[@]}" | grep -v '^ ' | grep -v '^<' | sort -u | grep -Ev "$skip")
rm -rf .device-debs
mkdir -p .device-debs
(cd .device-debs && apt-get download $pkgs >/dev/null)
echo "device-debs: $(ls .device-debs | wc -l) packages, $(du -sh .device-debs | cut -f1) in .device-debs/"
