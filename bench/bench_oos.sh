#!/usr/bin/env bash
# Out-of-scope abstention, each method side by side, on rows no choice saw:
# for every model given (a teacher, a student, ...), finch compile --abstain
# with the threshold (at each target), the explicit class, and both, each
# chosen on the selection half of the dataset's holdout (and the negatives'
# dev rows), then finch eval --half report: in-scope accuracy (a refusal of an
# in-scope row is wrong), in-scope coverage, out-of-scope recall and
# precision, AUROC of the in-scope score and the false-positive rate at 95%
# in-scope recall.
#
# Usage: FINCH_HOME=... bench/bench_oos.sh DATASET MODEL [MODEL ...]
# DATASET's holdout (split dev) holds the in-scope rows and, for CLINC150, its
# oos rows. NEGATIVES (datasets, e.g. clinc150) and EXCLUDE (domains, e.g.
# banking,credit_cards) add out-of-scope rows from other datasets' dev splits
# to the choice, and OOD_CSV (a banking77-format CSV of held-out out-of-domain
# texts labelled oos) adds a column: the share of them each policy refuses.
# TARGETS lists the threshold targets (default "in:0.99 in:0.97 oos:0.6").
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FINCH_BUILD:-build/release}
finch="$build/finch"
dataset=${1:?usage: bench_oos.sh DATASET MODEL [MODEL ...]}
shift
: "${FINCH_HOME:?set FINCH_HOME}"
export FINCH_HOME
out=$(mktemp -d /var/tmp/finch-bench-oos.XXXXXX)
targets=${TARGETS:-in:0.99 in:0.97 oos:0.6}
extra=()
[ -n "${NEGATIVES:-}" ] && extra+=(--negatives "$NEGATIVES")
[ -n "${EXCLUDE:-}" ] && extra+=(--negatives-exclude "$EXCLUDE")

figures() { # eval JSON on stdin -> the columns
  python3 -c '
import json, sys
j = json.load(sys.stdin)
o = j.get("out_of_scope") or {}
def f(k):
    v = o.get(k)
    return "n/a" if v is None else "%.4f" % v
print(f("in_scope_accuracy"), f("in_scope_coverage"), f("oos_recall"), f("oos_precision"), f("auroc"),
      f("fpr_at_95_in_scope_recall"))'
}

ood() { # the share of OOD_CSV refused
  [ -n "${OOD_CSV:-}" ] || { echo "-"; return; }
  "$finch" eval --model "$1" --format banking77 --input "$OOD_CSV" --oos-label oos --json 2>/dev/null |
    python3 -c 'import json,sys; o=json.load(sys.stdin).get("out_of_scope") or {}; v=o.get("oos_recall");
print("n/a" if v is None else "%.4f" % v)'
}

printf '%-8s %-18s %9s %9s %9s %9s %9s %9s %9s %9s\n' model policy threshold in-acc coverage oos-rec oos-prec \
  auroc fpr@95 ood-ref
for model in "$@"; do
  # No policy: the model's own answers (an oos class, if it has one, counts as a refusal).
  "$finch" eval --model "$model" --dataset "$dataset" --split dev --half report --json 2>/dev/null >"$out/none.json"
  read -r acc cov rec prec auc fpr < <(figures <"$out/none.json")
  printf '%-8s %-18s %9s %9s %9s %9s %9s %9s %9s %9s\n' "$model" "none" "-" "$acc" "$cov" "$rec" "$prec" "$auc" \
    "$fpr" "-"
  for spec in class $(for t in $targets; do echo "threshold:$t both:$t"; done); do
    method=${spec%%:*}
    args=(--abstain "$method")
    case $spec in
      *:in:*) args+=(--in-scope-recall "${spec##*:}") ;;
      *:oos:*) args+=(--oos-recall "${spec##*:}") ;;
    esac
    file="$out/m$model-${spec//[:.]/_}.fnm"
    if ! "$finch" compile --model "$model" -o "$file" --dtype f32 "${args[@]}" "${extra[@]}" >"$out/compile.log" 2>&1
    then
      printf '%-8s %-18s %s\n' "$model" "$spec" "$(tail -1 "$out/compile.log")"
      continue
    fi
    thr=$(sed -n 's/.*threshold \([0-9.]*\).*/\1/p' "$out/compile.log" | tail -1)
    "$finch" eval --model "$file" --dataset "$dataset" --split dev --half report --json 2>/dev/null >"$out/e.json"
    read -r acc cov rec prec auc fpr < <(figures <"$out/e.json")
    printf '%-8s %-18s %9s %9s %9s %9s %9s %9s %9s %9s\n' "$model" "$spec" "${thr:--}" "$acc" "$cov" "$rec" "$prec" \
      "$auc" "$fpr" "$(ood "$file")"
  done
done
echo "(files: $out)"
