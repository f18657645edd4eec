#!/usr/bin/env bash
# The teacher benchmark: peers and finch's teacher ablation on the same seeded,
# stratified 10% holdout of BANKING77 train (seed 42), in one run.
#
#   peers  (bench/peers.py): TF-IDF + logistic regression (python3-sklearn) and
#          fastText (the Debian fasttext binary), trained on the same source rows;
#   finch  `finch teacher train`: the encoder alone; + MLM pre-training on the
#          general corpus; + hashed character n-grams; the ensemble of the sparse
#          model, the bag-of-n-grams network and the encoders.
#
# Usage: bench/bench_teacher.sh [--quick]   (FINCH_BUILD, FINCH_DATA_DIR, FINCH_HOME
# and PRETRAIN / EPOCHS override the defaults). --quick trains fewer epochs.
# Prints one line per model: name, holdout accuracy, train seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FINCH_BUILD:-build/release}
finch="$build/finch"
data=${FINCH_DATA_DIR:-../shared/data}
export FINCH_HOME=${FINCH_HOME:-$(mktemp -d /var/tmp/finch-bench-teacher.XXXXXX)}
pretrain=${PRETRAIN:-2}
epochs=${EPOCHS:-30}
if [ "${1:-}" = "--quick" ]; then pretrain=1; epochs=10; fi
[ -x "$finch" ] || { echo "bench_teacher: build finch first ($finch)" >&2; exit 1; }

echo "== data: $data/banking77/train.csv -> FINCH_HOME=$FINCH_HOME"
"$finch" ingest --format banking77 --dataset banking77 --holdout 0.1 --seed 42 "$data/banking77/train.csv" >/dev/null
url=$("$finch" db url)
q="SELECT u.text, u.label FROM utterances u JOIN datasets d ON d.id = u.dataset_id
   WHERE d.name = 'banking77' AND u.origin = 'source' AND u.split ="
psql "$url" -Atq -c "COPY ($q 'train' ORDER BY u.id) TO STDOUT WITH (FORMAT csv, HEADER)" > "$FINCH_HOME/train.csv"
psql "$url" -Atq -c "COPY ($q 'dev' ORDER BY u.id) TO STDOUT WITH (FORMAT csv, HEADER)" > "$FINCH_HOME/holdout.csv"
echo "   train $(($(wc -l < "$FINCH_HOME/train.csv") - 1)) rows, holdout $(($(wc -l < "$FINCH_HOME/holdout.csv") - 1)) rows"

echo "== peers"
/usr/bin/python3 bench/peers.py --train "$FINCH_HOME/train.csv" --test "$FINCH_HOME/holdout.csv" || \
  echo "   (peers unavailable: apt install python3-sklearn fasttext)"

echo "== finch teacher ablation (pre-training $pretrain epochs, fine-tuning $epochs epochs)"
run() {
  local name=$1
  shift
  "$finch" teacher train --dataset banking77 --quiet --json --epochs "$epochs" "$@" > "$FINCH_HOME/$name.json"
  /usr/bin/python3 - "$name" "$FINCH_HOME/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
for m in r["members"]:
    print(f"   {sys.argv[1]:<22} member {m['name']:<6} acc {m['dev_accuracy']*100:6.2f}%  nll {m['dev_nll']:.3f}"
          f"  params {m['params']:>9}  {m['train_seconds']:7.1f} s")
print(f"   {sys.argv[1]:<22} TEACHER ({r['chosen']}) acc {r['dev_accuracy']*100:6.2f}%  params {r['params']}"
      f"  total {r['train_seconds']:.1f} s")
PY
}
run encoder              --members tfm --no-ngrams
run encoder+pretrain     --members tfm --no-ngrams --pretrain-epochs "$pretrain"
run encoder+pre+ngrams   --members tfm --pretrain-epochs "$pretrain"
run ensemble             --members slr,bow,tfm,tfm --pretrain-epochs "$pretrain"
