#!/usr/bin/env python3
"""Writes tests/evaluate/golden/stats_reference.json: reference values for
evaluate/stats.c computed independently, in plain Python (the math module and
exact integer and fraction arithmetic only), so that tests/evaluate/test_stats.c
can hold the C code to them.

Run by hand when a case changes (the tests never need Python):
  python3 scripts/golden/stats_reference.py tests/evaluate/golden/stats_reference.json

The file holds the inputs beside the expected figures:
  mcnemar       per (b, c): the exact two-sided binomial p-value (summed in
                exact fractions with math.comb), the continuity-corrected
                chi-square and its 1-df p-value erfc(sqrt(x / 2))
  calibration   probabilities (n, C) as float32 values, gold and predicted
                labels; ECE and bins over 15 equal-width bins of the largest
                probability (the bin index taken in float32, as the C code
                does), the temperature minimising the NLL (golden-section
                search run to convergence in double precision) and the ECE
                and bins after re-tempering with it
  coverage      the accuracy/coverage curve of the same rows at 20 thresholds
  bootstrap     percentile intervals of accuracy and macro-F1 from resamples
                drawn with finch's splitmix64 stream (core/rng.h) and the
                nearest-rank 2.5% and 97.5% quantiles
  pareto        accuracy-latency point sets (null = NaN) and the indices of
                their non-dominated points, by latency then accuracy then index
  most_confused confusion matrices and their top-k off-diagonal cells
"""
import json
import math
import random
import struct
import sys
from fractions import Fraction

MASK = (1 << 64) - 1


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def mcnemar(b, c):
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    m = min(b, c)
    tail = Fraction(sum(math.comb(n, k) for k in range(m + 1)), 2 ** n)
    p = min(Fraction(1), 2 * tail)
    chi2 = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "p_exact": float(p), "chi2": chi2, "p_chi2": math.erfc(math.sqrt(chi2 / 2))}


def ece_bins(conf, right, n_bins):
    cnt = [0] * n_bins
    s_conf = [0.0] * n_bins
    s_acc = [0.0] * n_bins
    for x, r in zip(conf, right):
        b = math.floor(f32(x * n_bins)) if x > 0 else 0
        b = min(max(b, 0), n_bins - 1)
        cnt[b] += 1
        s_conf[b] += x
        s_acc[b] += r
    n = len(conf)
    ece = 0.0
    bins = []
    for b in range(n_bins):
        if cnt[b]:
            ece += abs(s_acc[b] - s_conf[b]) / n
        bins.append({"count": cnt[b], "confidence": s_conf[b] / cnt[b] if cnt[b] else 0.0,
                     "accuracy": s_acc[b] / cnt[b] if cnt[b] else 0.0})
    return ece, bins


def nll(probs, gold, t):
    s = 0.0
    for p, y in zip(probs, gold):
        logs = [math.log(max(q, 1e-30)) / t for q in p]
        mx = max(logs)
        s += mx + math.log(sum(math.exp(v - mx) for v in logs)) - logs[y]
    return s / len(probs)


def fit_temperature(probs, gold):
    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(probs, gold, math.exp(a)) < nll(probs, gold, math.exp(b)):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


def retemper(p, t):
    logs = [math.log(max(q, 1e-30)) / t for q in p]
    mx = max(logs)
    e = [math.exp(v - mx) for v in logs]
    s = sum(e)
    return [f32(v / s) for v in e]


def calibration_case():
    rng = random.Random(16)
    n, C, n_bins = 300, 5, 15
    probs, gold, pred = [], [], []
    for _ in range(n):
        logits = [rng.gauss(0, 1) * 2.5 for _ in range(C)]
        mx = max(logits)
        e = [math.exp(v - mx) for v in logits]
        p = [f32(v / sum(e)) for v in e]
        top = max(range(C), key=lambda k: (p[k], -k))
        # An overconfident model: the labels follow its probabilities at
        # temperature 2, so the fitted temperature is near 2.
        u, y = rng.random(), C - 1
        for k, q in enumerate(retemper(p, 2.0)):
            u -= q
            if u < 0:
                y = k
                break
        probs.append(p)
        gold.append(y)
        pred.append(top)
    right = [int(g == q) for g, q in zip(gold, pred)]
    conf = [max(p) for p in probs]
    ece, bins = ece_bins(conf, right, n_bins)
    t = fit_temperature(probs, gold)
    conf_after = [max(retemper(p, t)) for p in probs]
    ece_after, bins_after = ece_bins(conf_after, right, n_bins)
    thresholds = [j / 20 for j in range(20)]
    points = []
    for th in thresholds:
        ans = [r for x, r in zip(conf, right) if x >= th]
        points.append({"threshold": th, "answered": len(ans), "coverage": len(ans) / n,
                       "accuracy": sum(ans) / len(ans) if ans else None})
    cal = {"C": C, "n_bins": n_bins, "probs": probs, "gold": gold, "pred": pred, "ece": ece, "bins": bins,
           "temperature": t, "ece_after": ece_after, "bins_after": bins_after}
    return cal, {"thresholds": thresholds, "points": points}


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def macro_f1(gold, pred, C):
    f1s = []
    for lab in range(C):
        support = sum(1 for g in gold if g == lab)
        if not support:
            continue
        predicted = sum(1 for q in pred if q == lab)
        tp = sum(1 for g, q in zip(gold, pred) if g == q == lab)
        prec = tp / predicted if predicted else 0.0
        rec = tp / support
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def nearest_rank(v, q):
    v = sorted(v)
    return v[max(1, math.ceil(q * len(v))) - 1]


def bootstrap_case():
    rng = random.Random(77)
    n, C, B, seed = 60, 4, 200, 12345
    gold = [rng.randrange(C) for _ in range(n)]
    pred = [g if rng.random() < 0.7 else rng.randrange(C) for g in gold]
    sm = SplitMix64(seed)
    accs, f1s = [], []
    for _ in range(B):
        idx = [sm.next() % n for _ in range(n)]
        g = [gold[i] for i in idx]
        p = [pred[i] for i in idx]
        accs.append(sum(1 for a, b in zip(g, p) if a == b) / n)
        f1s.append(macro_f1(g, p, C))
    acc = sum(1 for a, b in zip(gold, pred) if a == b) / n
    return {"seed": seed, "B": B, "C": C, "gold": gold, "pred": pred,
            "accuracy": {"value": acc, "lo": nearest_rank(accs, 0.025), "hi": nearest_rank(accs, 0.975)},
            "macro_f1": {"value": macro_f1(gold, pred, C), "lo": nearest_rank(f1s, 0.025),
                         "hi": nearest_rank(f1s, 0.975)}}


def pareto(acc, lat):
    pts = [(lat[i], -acc[i], i) for i in range(len(acc)) if acc[i] is not None and lat[i] is not None]
    pts.sort()
    front = []
    for k, (l, na, i) in enumerate(pts):
        # Only an earlier point in this order can dominate: a lower latency, or
        # the same latency and an accuracy at least as high; an equal point does not.
        if not any(-na2 >= -na and (l2, na2) != (l, na) for l2, na2, _ in pts[:k]):
            front.append(i)
    return front


def pareto_cases():
    cases = [
        ([0.9, 0.8, 0.95, 0.7, 0.85], [10.0, 2.0, 50.0, 1.0, 12.0]),
        ([0.9, 0.9, 0.9], [5.0, 5.0, 7.0]),            # equal points both stay; the slower one goes
        ([0.8, 0.9, 0.9, 0.7], [3.0, 3.0, 3.0, 1.0]),  # same latency: only the best accuracy
        ([0.5, None, 0.99, 0.6], [1.0, 0.1, None, 2.0]),
        ([0.75], [4.0]),
        ([], []),
    ]
    rng = random.Random(5)
    acc = [round(rng.random(), 2) for _ in range(40)]
    lat = [float(rng.randrange(1, 30)) for _ in range(40)]
    cases.append((acc, lat))
    return [{"accuracy": a, "latency": l, "front": pareto(a, l)} for a, l in cases]


def most_confused_cases():
    rng = random.Random(9)
    out = []
    for C, k in ((4, 3), (6, 10), (12, 5), (3, 10)):
        m = [[0 if C == 3 and g != p else rng.choice([0, 0, 1, 2, 2, 3, 7]) for p in range(C)]
             for g in range(C)]
        cells = [(-m[g][p], g, p) for g in range(C) for p in range(C) if g != p and m[g][p] > 0]
        cells.sort()
        out.append({"C": C, "k": k, "matrix": m, "pairs": [[g, p, -c] for c, g, p in cells[:k]]})
    return out


def main():
    cal, cov = calibration_case()
    ref = {
        "mcnemar": [mcnemar(b, c) for b, c in ((0, 0), (5, 5), (60, 25), (1, 0), (0, 1), (10, 3), (3, 10),
                                               (7, 6), (200, 150), (600, 500), (2000, 1900), (1, 40))],
        "calibration": cal,
        "coverage": cov,
        "bootstrap": bootstrap_case(),
        "pareto": pareto_cases(),
        "most_confused": most_confused_cases(),
    }
    with open(sys.argv[1], "w") as fp:
        json.dump(ref, fp, indent=1, sort_keys=True)
        fp.write("\n")


if __name__ == "__main__":
    main()
