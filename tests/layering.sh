#!/usr/bin/env bash
# The rooms' include rules (STYLE.md "The house"): a stage includes core/,
# nn/ and itself, never another stage; nn/ includes core/ and itself; core/
# only itself. The linker holds the same rules for calls (layer_check_* in
# CMakeLists.txt); this catches headers used for their types or macros alone.
# Usage: layering.sh SOURCE_DIR. Prints each offending line; exit 1 if any.
set -euo pipefail
cd "$1"
bad=0
check() { # room, allowed rooms (space separated)
  local room=$1; shift
  local allowed="$room $*"
  while IFS= read -r line; do
    inc=${line#*#include \"}
    dep=${inc%%/*}
    case " $allowed " in *" $dep "*) ;; *) echo "layering: $line (${room}/ may include: ${allowed})"; bad=1 ;; esac
  done < <(grep -Hn '^#include "[a-z_]*/' "$room"/*.[ch] "$room"/*.cu 2>/dev/null || true)
}
check core
check nn core
for stage in ingest augment distill evaluate serve; do check "$stage" core nn; done
exit $bad
