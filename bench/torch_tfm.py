#!/usr/bin/python3
"""PyTorch CPU peer of bench_tfm: the same encoder (pre-LN, 2 layers, width 128,
4 heads, ff 512, vocabulary 8000, mean pooling, 77 labels) trained with AdamW at
batch 64 and sequence length 32 on 2 threads; prints training examples/s and
the median batch-1 inference latency, in the same format as bench_tfm.

Usage: /usr/bin/python3 bench/torch_tfm.py (Debian python3-torch) [--steps N] [--threads 2]"""
import argparse
import statistics
import time

import torch
import torch.nn as nn


class Encoder(nn.Module):
    def __init__(self, V, T, D, L, H, F, C):
        super().__init__()
        self.tok = nn.Embedding(V, D)
        self.pos = nn.Embedding(T, D)
        self.ln = nn.LayerNorm(D)
        layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.1, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
        self.lnf = nn.LayerNorm(D)
        self.head = nn.Linear(D, C)

    def forward(self, ids, mask):
        T = ids.shape[1]
        x = self.ln(self.tok(ids) + self.pos(torch.arange(T)))
        h = self.lnf(self.enc(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    V, T, D, L, H, F, C, B = 8000, 32, 128, 2, 4, 512, 77, 64
    m = Encoder(V, T, D, L, H, F, C)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
    ids = torch.randint(5, V, (B, T))
    lens = torch.randint(8, T + 1, (B,))
    mask = torch.arange(T).unsqueeze(0) < lens.unsqueeze(1)
    y = torch.randint(0, C, (B,))
    lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
    m.train()
    for _ in range(5):
        opt.zero_grad(); lossf(m(ids, mask), y).backward(); opt.step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        opt.zero_grad()
        loss = lossf(m(ids, mask), y)
        loss.backward()
        nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    dt = time.perf_counter() - t0
    print(f"torch train: {a.steps * B / dt:.0f} examples/s (batch {B}, T {T}, {a.threads} threads, torch {torch.__version__})")
    m.eval()
    one = torch.randint(5, V, (1, 12))
    onem = torch.ones(1, 12, dtype=torch.bool)
    lat = []
    with torch.inference_mode():
        for _ in range(20):
            m(one, onem)
        for _ in range(300):
            t = time.perf_counter()
            m(one, onem)
            lat.append((time.perf_counter() - t) * 1e3)
    print(f"torch infer: batch-1 median {statistics.median(lat):.3f} ms (12 tokens)")


if __name__ == "__main__":
    main()
