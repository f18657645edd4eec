#!/usr/bin/env bash
# The distillation benchmark: the issue's ablation in one run, same seed and
# holdout, each line a transformer student distilled from the same teacher:
#   (i)   hard labels only
#   (ii)  + soft labels at a fixed alpha = 0.7
#   (iii) + complexity-weighted alpha
#   (iv)  + intermediate layers (hidden-state MSE through a projection and
#         attention KL, progressive)
#   (v)   + the general stage first (SGD general turns, CLINC150, wiki sentences)
# plus the bag-of-n-grams student with complexity-weighted alpha, then the
# batch-1 latency of the teacher and the students on the holdout (bench_latency).
#
# Usage: FINCH_HOME=... bench/bench_distill.sh [TEACHER]
# FINCH_HOME must hold dataset banking77 (ingested with --holdout) and a teacher
# from `finch teacher train` with an encoder member (TEACHER: id, default latest);
# datasets sgd_general and clinc150 feed the general stage when ingested.
# EPOCHS (default 10) sets the students' epochs; FINCH_BUILD the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FINCH_BUILD:-build/release}
finch="$build/finch"
teacher=${1:-latest}
epochs=${EPOCHS:-10}
: "${FINCH_HOME:?set FINCH_HOME to a finch home with banking77 and a teacher}"
export FINCH_HOME
out=$(mktemp -d /var/tmp/finch-bench-distill.XXXXXX)
general=$(psql "$("$finch" db url)" -Atq -c "SELECT string_agg(name, ',') FROM datasets WHERE name IN ('sgd_general', 'clinc150')")
echo "== teacher $teacher, students $epochs epochs, general datasets: ${general:-none (wiki sentences only)}"

run() {
  local name=$1
  shift
  "$finch" distill --dataset banking77 --teacher "$teacher" --student-epochs "$epochs" --json --seed 42 "$@" \
    2> "$out/$name.log" | tail -1 > "$out/$name.json"
  /usr/bin/python3 - "$name" "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
t, s = r["teacher"], r["student"]
print(f"   {sys.argv[1]:<24} acc {s['dev_accuracy']*100:6.2f}%  ({s['dev_accuracy']/t['dev_accuracy']*100:5.1f}% of the"
      f" teacher's {t['dev_accuracy']*100:.2f}%)  params {s['params']:>8} (1/{t['params']/s['params']:.1f})"
      f"  {s['train_seconds']:7.1f} s  {s.get('arch','bow')}")
open(sys.argv[2] + ".path", "w").write(s["path"] + "\n" + t["path"] + "\n")
PY
}
run "(i) hard"               --student tfm --hard --no-intermediate
run "(ii) +soft a=0.7"       --student tfm --alpha 0.7 --no-intermediate
run "(iii) +complexity a"    --student tfm --no-intermediate
run "(iv) +intermediate"     --student tfm
run "(v) +general stage"     --student tfm --stage both ${general:+--general "$general"}
run "bow student"            --student bow

echo "== macro-F1 and latency on the holdout"
url=$("$finch" db url)
psql "$url" -Atq -c "COPY (SELECT u.text, u.label FROM utterances u JOIN datasets d ON d.id = u.dataset_id
  WHERE d.name = 'banking77' AND u.split = 'dev' ORDER BY u.id) TO STDOUT WITH (FORMAT csv, HEADER)" > "$out/holdout.csv"
tpath=$(sed -n 2p "$out/(i) hard.json.path")
spaths=()
for f in "$out"/*.json.path; do spaths+=("$(sed -n 1p "$f")"); done
"$build/bench/bench_latency" "$out/holdout.csv" "$tpath" "${spaths[@]}"
for f in "$out"/*.json.path; do
  "$finch" eval --model "$(sed -n 1p "$f")" --dataset banking77 --split dev --json 2>/dev/null | \
    /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"   macro-F1 {r['macro_f1']:.4f}  $(basename "$f" .json.path)\")"
done
