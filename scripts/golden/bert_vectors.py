#!/usr/bin/env python3
"""Writes tests/nn/golden/bert_vectors.jsonl: the mean-pooled sentence vectors
of all-MiniLM-L6-v2 for a fixed, varied set of sentences, computed by an
implementation independent of finch's: numpy, written from the BERT equations
below, in float64, reading model.safetensors through its JSON header, with the
token ids of the reference tokenizer (Hugging Face `tokenizers`).
tests/nn/test_bert.c holds nn/bert.c to these vectors.

Run once, by hand, when the set changes (the tests never need Python):
  python3 -m venv /tmp/bertvenv && /tmp/bertvenv/bin/pip install numpy tokenizers
  /tmp/bertvenv/bin/python scripts/golden/bert_vectors.py \
      $FINCH_PRETRAINED_DIR/all-minilm-l6-v2 tests/nn/golden/bert_vectors.jsonl

The forward pass (Devlin et al. 2019; BertModel in post-layer-norm form):
  x      = word[ids] + position[0..T) + token_type[0]
  h      = LN(x)                                   eps from config.json
  per layer:
    q,k,v  = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv, split into heads
    att    = softmax(q k^T / sqrt(Dh)) over keys with mask 1
    h      = LN(h + (att v, heads merged) Wo^T + bo)
    h      = LN(h + GELU(h W1^T + b1) W2^T + b2)  GELU(x) = x (1 + erf(x/sqrt 2)) / 2
  pooled = mean of h over the positions with mask 1   (1_Pooling: mean tokens)
Sentences are cut to 128 tokens ([CLS] and [SEP] included), as finch does.

Each line: {"text": ..., "ids": [...], "vector": [384 floats, 9 significant digits]}.
"""
import json
import math
import struct
import sys

import numpy as np
from tokenizers import Tokenizer

MAX_LEN = 128

SENTENCES = [
    # BANKING77-style queries
    "I am still waiting on my card?",
    "What can I do if my card still hasn't arrived after 2 weeks?",
    "How do I track the card you sent to me?",
    "Is there a specific source that the exchange rate for the transfer I'm planning on making is pulled from?",
    "My new card has not been delivered to my home yet. What is going on?",
    "I have a card that was deactivated can I reactivate it?",
    "Why was I charged an extra fee for my cash withdrawal?",
    "My top-up didn't go through, can you check?",
    "I think someone stole my phone and is using my account",
    "how do i change my PIN",
    "Can I get a refund for a purchase I made last week?",
    "The ATM swallowed my card!!!",
    "why is my transfer still pending after 3 days",
    "I was charged twice for the same transaction at the supermarket.",
    "Which currencies can I hold in my account?",
    "Is it possible to get a virtual card for online shopping?",
    "what's the fee for topping up by bank transfer",
    "My card payment was declined in a shop in Spain",
    "I need to verify my identity, what documents do you accept?",
    "Please close my account.",
    # CLINC150-style requests from other domains
    "what is the weather going to be like tomorrow in boston",
    "set an alarm for 6:30 am",
    "how many calories are in a banana",
    "translate good morning into french",
    "book a table for four at an italian restaurant tonight",
    "what's my credit score",
    "remind me to call mom on sunday",
    "play some jazz music",
    "how long does it take to get to the airport from here",
    "tell me a joke",
    "what is the capital of australia",
    "cancel my flight reservation to denver",
    # accents, case, punctuation, numbers, other scripts
    "Café crème brûlée à la façon de Zoë",
    "Señor Muñoz paid €1.234,56 in São Paulo",
    "NAÏVE RÉSUMÉ, Ünïcödé ÅND ÇÃSÉ",
    "Transfer 250.00 GBP to IBAN GB29NWBK60161331926819 on 2024-03-15",
    "Call me at +44 20 7946 0958 or email jane.doe@example.com",
    "My card number is [CARD_NUMBER] and my name is [NAME]",
    "我的卡还没到 where is my card?",
    "東京で使えますか？",
    "Привет, моя карта не работает",
    "Γειά σου κόσμε",
    "emoji test 😀👍🏽 card 💳",
    "hyper-inflation, co-operate; re-entry: e.g., i.e., etc...",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a",
    "?!",
    "   leading and trailing spaces   ",
    "tab\tseparated\nnew line",
    "ALL CAPS SHOUTING ABOUT MY MISSING REFUND",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15",
    "don't won't can't shouldn't y'all'd've",
    # long ones, cut at 128 tokens
    "I ordered a new card three weeks ago because my old one was about to expire, and I was told it would "
    "arrive within five to seven working days, but it still has not come, and in the meantime my old card "
    "has expired so I cannot pay for anything in shops or online, which is a real problem because my rent "
    "is due on Friday and I also need to buy groceries; could you please check what happened to the "
    "delivery, whether it was sent to the right address, and if necessary cancel it and send me a "
    "replacement by express post, and also tell me whether there is any way to use my account in the "
    "meantime, for example through a virtual card or by withdrawing cash at a branch with my passport?",
    " ".join(["the exchange rate applied to my transfer looks wrong"] * 20),
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu "
    "fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
    "deserunt mollit anim id est laborum.",
    "Wikipedia: The Bank of England, formally the Governor and Company of the Bank of England, is the central "
    "bank of the United Kingdom and the model on which most modern central banks have been based. Established "
    "in 1694 to act as the English Government's banker, and still one of the bankers for the Government of the "
    "United Kingdom, it is the world's eighth-oldest bank.",
]


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(buf, dtype="<f4", count=(e - b) // 4, offset=base + b).reshape(t["shape"]).astype(np.float64)
    return out


def layer_norm(x, g, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def encode(w, cfg, ids):
    """Pooled vector of one unpadded sequence (every mask is 1)."""
    T = len(ids)
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Dh = D // H
    eps = cfg["layer_norm_eps"]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    h = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for l in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % l

        def lin(inp, name):
            return inp @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin(h, "attention.self.query").reshape(T, H, Dh).transpose(1, 0, 2)
        k = lin(h, "attention.self.key").reshape(T, H, Dh).transpose(1, 0, 2)
        v = lin(h, "attention.self.value").reshape(T, H, Dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(Dh)
        s = s - s.max(axis=-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(axis=-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(T, D)
        h = layer_norm(h + lin(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        f = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(h + f, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return h.mean(axis=0)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bert_vectors.py MODEL_DIR OUT.jsonl")
    model_dir, out_path = sys.argv[1], sys.argv[2]
    with open(model_dir + "/config.json") as f:
        cfg = json.load(f)
    assert cfg["hidden_act"] == "gelu"
    w = read_safetensors(model_dir + "/model.safetensors")
    tok = Tokenizer.from_file(model_dir + "/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    with open(out_path, "w", encoding="utf-8") as out:
        for s in SENTENCES:
            ids = tok.encode(s).ids
            vec = encode(w, cfg, ids)
            rec = {"text": s, "ids": ids, "vector": [float("%.9g" % x) for x in vec]}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print("%d sentences -> %s" % (len(SENTENCES), out_path))


if __name__ == "__main__":
    main()
