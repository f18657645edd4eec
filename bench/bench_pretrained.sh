#!/usr/bin/env bash
# What the pretrained encoder gives the deployed (bag-of-n-grams) student, in
# one run on the same rows, seed and holdout:
#   (i)   without it: the slr+bow teacher, the student distilled from it
#   (ii)  the pretrained teacher (TEACHER), finance stage only
#   (iii) + the general stage: the student's mean embedding first learns the
#         teacher encoder's sentence vectors of general-domain text
#   (iv)  + initialisation from the teacher: word rows from the encoder's word
#         vectors on their principal axes (with (iii))
#   (v)   initialisation alone (without (iii))
# Each student is distilled on every training row the dataset holds (the
# augmented ones included: the transfer set), evaluated on the holdout with
# `finch eval` (accuracy, macro-F1), and timed at batch 1 with bench_latency
# against the pretrained teacher, interleaved.
#
# Usage: FINCH_HOME=... bench/bench_pretrained.sh TEACHER [DATASET]
# FINCH_HOME holds DATASET (default banking77, ingested with a holdout and
# augmented) and TEACHER, a teacher with the bert member (finch teacher
# train --members bert,slr,...). GENERAL (default: sgd_general,clinc150 when
# ingested) names the general stage's datasets; GENERAL_MAX its texts
# (default 20000); BASE_TEACHER an slr+bow teacher already trained for (i)
# (default: one is trained here); FINCH_BUILD the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FINCH_BUILD:-build/release}
finch="$build/finch"
teacher=${1:?usage: bench_pretrained.sh TEACHER [DATASET]}
dataset=${2:-banking77}
: "${FINCH_HOME:?set FINCH_HOME to a finch home with the dataset and a teacher}"
export FINCH_HOME
url=$("$finch" db url)
out=$(mktemp -d /var/tmp/finch-bench-pretrained.XXXXXX)
general=${GENERAL:-$(psql "$url" -Atq -c "SELECT string_agg(name, ',' ORDER BY name) FROM datasets
  WHERE name IN ('sgd_general', 'clinc150')")}
gmax=${GENERAL_MAX:-20000}
rows=$(psql "$url" -Atq -c "SELECT count(*) FILTER (WHERE u.split = 'train'), count(*) FILTER (WHERE u.split = 'train'
  AND u.origin = 'augmented'), count(*) FILTER (WHERE u.split = 'dev') FROM utterances u JOIN datasets d
  ON d.id = u.dataset_id WHERE d.name = '$dataset' AND u.label IS NOT NULL")
echo "== dataset $dataset: train, of which augmented, holdout: ${rows//|/, }; teacher $teacher; general ${general:-none}"
psql "$url" -Atq -c "\\copy (SELECT u.text, u.label FROM utterances u JOIN datasets d ON d.id = u.dataset_id
  WHERE d.name = '$dataset' AND u.split = 'dev' AND u.label IS NOT NULL ORDER BY u.id) TO '$out/holdout.csv'
  WITH (FORMAT csv, HEADER)"

# name, then finch distill options; prints the student's id.
distill() {
  local name=$1
  shift
  local t0=$SECONDS
  "$finch" distill --dataset "$dataset" --student bow "$@" --json >"$out/$name.json" 2>"$out/$name.log" || {
    echo "$name: distill failed (see $out/$name.log)" >&2
    tail -3 "$out/$name.log" >&2
    return 1
  }
  echo "$((SECONDS - t0))" >"$out/$name.secs"
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['student']['id'])" "$out/$name.json"
}

evaluate() {
  "$finch" eval --model "$1" --dataset "$dataset" --split dev --json 2>/dev/null |
    python3 -c "import json,sys; j=json.load(sys.stdin); print('%.4f %.4f' % (j['accuracy'], j['macro_f1']))"
}

base_teacher=${BASE_TEACHER:-}
if [ -z "$base_teacher" ]; then
  "$finch" teacher train --dataset "$dataset" --members slr,bow --quiet --json >"$out/teacher_base.json" \
    2>"$out/teacher_base.log"
  base_teacher=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$out/teacher_base.json")
fi

declare -A sid
sid[i]=$(distill i --teacher "$base_teacher")
sid[ii]=$(distill ii --teacher "$teacher")
sid[iii]=$(distill iii --teacher "$teacher" --stage both ${general:+--general "$general"} --general-max "$gmax")
sid[iv]=$(distill iv --teacher "$teacher" --stage both --teacher-init ${general:+--general "$general"} \
  --general-max "$gmax")
sid[v]=$(distill v --teacher "$teacher" --teacher-init)

path_of() { psql "$url" -Atq -c "SELECT path FROM models WHERE id = $1"; }
printf '%-6s %-44s %8s %8s %10s %8s\n' "" "student" "accuracy" "macro-F1" "parameters" "train s"
declare -A desc=([i]="without the pretrained teacher (slr+bow teacher $base_teacher)" [ii]="pretrained teacher, finance stage"
  [iii]="+ general stage" [iv]="+ general stage + init from the teacher" [v]="init from the teacher, no general stage")
for k in i ii iii iv v; do
  read -r acc f1 < <(evaluate "${sid[$k]}")
  params=$(psql "$url" -Atq -c "SELECT params FROM models WHERE id = ${sid[$k]}")
  printf '%-6s %-44s %8s %8s %10s %8s\n' "($k)" "${desc[$k]}" "$acc" "$f1" "$params" "$(cat "$out/$k.secs")"
done
read -r acc f1 < <(evaluate "$teacher")
echo "teacher $teacher: accuracy $acc, macro-F1 $f1"
echo "== batch-1 latency on the holdout (teacher first; ratios to it)"
"$build/bench/bench_latency" "$out/holdout.csv" "$(path_of "$teacher")" "$(path_of "${sid[ii]}")" \
  "$(path_of "${sid[iv]}")" --rounds 3
echo "(logs and summaries: $out)"
