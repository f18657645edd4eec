#!/usr/bin/env bash
# Installs finch's build and run-time dependencies from Debian 12's packages,
# skipping those already installed. Run as root (or with sudo available).
set -euo pipefail

pkgs=(build-essential cmake pkg-config
      libpq-dev postgresql
      libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libopenblas-dev
      libmicrohttpd-dev libjansson-dev libyaml-dev libssl-dev zlib1g-dev wordnet-base
      chromium)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "install-deps: missing ${missing[*]}; run this script as root" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
