#!/usr/bin/python3
"""Peers of finch's sparse TF-IDF + logistic regression (bench/bench_sparse_lr.c),
trained and scored on the same rows.

    bench/peers.py --train train.csv --test holdout.csv

train.csv and holdout.csv are the split bench_sparse_lr writes (header
text,label; RFC 4180). Two peers:

  sklearn   TfidfVectorizer word (1,2) + TfidfVectorizer char_wb (2,5), both
            sublinear_tf, in a FeatureUnion (each block L2-normalised), then
            LogisticRegression (lbfgs, multinomial). C is chosen by stratified
            k-fold CV on the train file only (accuracy, then log-loss on ties),
            then the model is refit on all of train.
  fastText  the `fasttext` command-line binary, supervised, -dim 100
            -wordNgrams 2 -minn 3 -maxn 6 -thread 2; lr and epoch are chosen
            on a seeded stratified 10% of the train file, then the model is
            retrained on all of train. fastText with 2 threads is not
            bit-reproducible; its figures vary by a few tenths of a point.

Each prints holdout accuracy, macro-F1, log-loss (sklearn) and train time (the
final fit only). Needs python3-sklearn (run with /usr/bin/python3, which has
Debian's numpy and scikit-learn) and the Debian `fasttext` package.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # BLAS threads only thrash on 2 cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import csv
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time


def read_split(path):
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        header = next(r)
        if header[:2] != ["text", "label"]:
            sys.exit(f"{path}: header {header}, expected text,label")
        rows = [(row[0], row[1]) for row in r if len(row) >= 2]
    return [t for t, _ in rows], [l for _, l in rows]


def macro_f1(y, p):
    labels = sorted(set(y) | set(p))
    f1 = 0.0
    for c in labels:
        tp = sum(1 for a, b in zip(y, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, p) if a == c and b != c)
        f1 += 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return f1 / len(set(y))


def report(name, y, p, train_s, extra=""):
    acc = sum(a == b for a, b in zip(y, p)) / len(y)
    print(f"{name:9s} holdout accuracy {100 * acc:.2f}%  macro-F1 {100 * macro_f1(y, p):.2f}%"
          f"{extra}  train {train_s:.1f} s", flush=True)


# ---- scikit-learn ---------------------------------------------------------

def sklearn_peer(xtr, ytr, xte, yte, cs, folds, seed):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline, make_union

    def model(c):
        feats = make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
        return make_pipeline(feats, LogisticRegression(C=c, max_iter=1000))

    best = None
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for c in cs:
        t0 = time.time()
        acc = ll = 0.0
        for tr, va in skf.split(xtr, ytr):
            m = model(c).fit([xtr[i] for i in tr], [ytr[i] for i in tr])
            xv, yv = [xtr[i] for i in va], [ytr[i] for i in va]
            acc += (m.predict(xv) == yv).mean() / folds
            ll += log_loss(yv, m.predict_proba(xv), labels=m.classes_) / folds
        print(f"  sklearn CV C={c:g}: accuracy {100 * acc:.2f}%  log-loss {ll:.4f}  ({time.time() - t0:.0f} s)",
              flush=True)
        key = (round(acc, 4), -ll)
        if best is None or key > best[0]:
            best = (key, c)
    c = best[1]
    t0 = time.time()
    m = model(c).fit(xtr, ytr)
    train_s = time.time() - t0
    p = list(m.predict(xte))
    ll = log_loss(yte, m.predict_proba(xte), labels=m.classes_)
    nfeat = sum(len(v.vocabulary_) for _, v in m.steps[0][1].transformer_list)
    t0 = time.time()
    for x in xte[:200]:
        m.predict_proba([x])
    lat = (time.time() - t0) / min(200, len(xte)) * 1e6
    report("sklearn", yte, p, train_s,
           f"  log-loss {ll:.4f}  (C={c:g}, {nfeat} features, predict {lat:.0f} us/query)")


# ---- fastText -------------------------------------------------------------

def ft_text(s):
    """Lower case, punctuation split off: fastText's usual preprocessing."""
    s = s.lower().replace("\n", " ")
    return " ".join(re.findall(r"[\w']+|[^\w\s]", s))


def ft_write(path, xs, ys):
    with open(path, "w", encoding="utf-8") as f:
        for x, y in zip(xs, ys):
            f.write(f"__label__{y} {ft_text(x)}\n")


def ft_train(binary, tmp, name, xs, ys, lr, epoch, seed):
    data = os.path.join(tmp, name + ".txt")
    ft_write(data, xs, ys)
    out = os.path.join(tmp, name)
    cmd = [binary, "supervised", "-input", data, "-output", out, "-dim", "100", "-wordNgrams", "2",
           "-minn", "3", "-maxn", "6", "-epoch", str(epoch), "-lr", str(lr), "-thread", "2",
           "-seed", str(seed), "-verbose", "0"]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out + ".bin", time.time() - t0


def ft_predict(binary, tmp, model, xs):
    data = os.path.join(tmp, "pred.txt")
    with open(data, "w", encoding="utf-8") as f:
        for x in xs:
            f.write(ft_text(x) + "\n")
    r = subprocess.run([binary, "predict", model, data], check=True, capture_output=True, text=True)
    return [l.strip().removeprefix("__label__") for l in r.stdout.splitlines()]


def fasttext_peer(binary, xtr, ytr, xte, yte, seed):
    tmp = tempfile.mkdtemp(prefix="finch_peers_")
    try:
        # Seeded stratified 10% of train for choosing lr and epoch.
        rng = random.Random(seed)
        by = {}
        for i, y in enumerate(ytr):
            by.setdefault(y, []).append(i)
        val = set()
        for y in sorted(by):
            idx = by[y][:]
            rng.shuffle(idx)
            val.update(idx[: (len(idx) + 5) // 10])
        xa = [x for i, x in enumerate(xtr) if i not in val]
        ya = [y for i, y in enumerate(ytr) if i not in val]
        xv = [x for i, x in enumerate(xtr) if i in val]
        yv = [y for i, y in enumerate(ytr) if i in val]
        best = None
        for lr in (0.5, 1.0):
            for epoch in (25, 50, 100):
                model, _ = ft_train(binary, tmp, "tune", xa, ya, lr, epoch, seed)
                p = ft_predict(binary, tmp, model, xv)
                acc = sum(a == b for a, b in zip(yv, p)) / len(yv)
                print(f"  fastText tune lr={lr} epoch={epoch}: accuracy {100 * acc:.2f}%", flush=True)
                if best is None or acc > best[0]:
                    best = (acc, lr, epoch)
        _, lr, epoch = best
        model, train_s = ft_train(binary, tmp, "final", xtr, ytr, lr, epoch, seed)
        p = ft_predict(binary, tmp, model, xte)
        report("fastText", yte, p, train_s, f"  (lr={lr}, epoch={epoch}, dim 100, wordNgrams 2, minn 3, maxn 6)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--cs", default="10,30,100", help="C values for the sklearn CV (comma-separated)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fasttext", default="fasttext", help="fastText binary")
    ap.add_argument("--only", choices=["sklearn", "fasttext"], help="run one peer")
    a = ap.parse_args()
    xtr, ytr = read_split(a.train)
    xte, yte = read_split(a.test)
    print(f"train {len(xtr)}, holdout {len(xte)}, {len(set(ytr))} labels", flush=True)
    if a.only in (None, "sklearn"):
        sklearn_peer(xtr, ytr, xte, yte, [float(c) for c in a.cs.split(",")], a.folds, a.seed)
    if a.only in (None, "fasttext"):
        if shutil.which(a.fasttext) is None:
            print(f"fastText  SKIP: no {a.fasttext} binary")
        else:
            fasttext_peer(a.fasttext, xtr, ytr, xte, yte, a.seed)


if __name__ == "__main__":
    main()
