#!/usr/bin/env python3
"""Writes tests/nn/golden/bert_tokens.jsonl: token ids of the reference BERT
tokenizer (Hugging Face `tokenizers`) for a fixed, varied set of sentences, so
that tests/nn/test_bert_tokenizer.c can hold nn/bert_tokenizer.c to them.

Run once, by hand, when the set changes (the tests never need Python):
  python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers
  FINCH_DATA_DIR=/work/shared/data /tmp/tokvenv/bin/python scripts/golden/bert_tokens.py \
      $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/tokenizer.json tests/nn/golden/bert_tokens.jsonl

Each line: {"text": ..., "ids": [...], "ids16": [...]}; "ids" is the encoding
with [CLS] and [SEP] and no truncation, "ids16" the same truncated to 16 ids.
The sentences: BANKING77 and CLINC150 texts and Wikipedia sentences from
$FINCH_DATA_DIR (a fixed random sample), then generated ones: accents, CJK,
emoji, numbers, punctuation, PII placeholders, special tokens in the text,
very long words, control characters, odd white space and empty strings.
Every character is from Unicode 8.0 or earlier, or an emoji: the reference's
character categories date from Unicode 8.0 (see nn/bert_tokenizer.h).
"""
import csv
import json
import os
import random
import sys

from tokenizers import Tokenizer


def data_sentences(rng, data_dir):
    out = []
    with open(os.path.join(data_dir, "banking77", "train.csv"), newline="", encoding="utf-8") as fp:
        rows = [r["text"] for r in csv.DictReader(fp)]
    out += rng.sample(rows, 450)
    with open(os.path.join(data_dir, "clinc150", "train_val.json"), encoding="utf-8") as fp:
        clinc = json.load(fp)
    rows = [t for part in ("train", "oos_train") for t, _ in clinc[part]]
    out += rng.sample(rows, 300)
    with open(os.path.join(data_dir, "clinc150", "wiki_sents.txt"), encoding="utf-8") as fp:
        rows = [line.rstrip("\n") for line in fp if line.strip()]
    out += rng.sample(rows, 100)
    return out


FIXED = [
    "", " ", "   \t\n  ", "\n", "\u00a0\u3000\u2003", "a", "A", ".", "!!!", "...", "[CLS]", "[SEP] [PAD] [MASK] [UNK]",
    "my card [MASK] was declined", "hello[SEP]world", "[cls] lower case is not special", "[CLS][CLS]",
    "Café crème brûlée à la carte", "naïve coöperation façade jalapeño", "Ångström Øresund Łódź Œuvre",
    "ÉCOLE ÉLÉMENTAIRE", "İstanbul ıi İi", "Straße groß STRASSE", "ΣΑΣ σας Ελληνικά", "Москва ПРИВЕТ мир",
    "ﬁnance ﬂow ﬀ", "x² + y³ = z⁴", "½ ¼ ¾ ⅓", "Ⅻ ⅻ", "ＦＵＬＬ ｗｉｄｔｈ １２３", "ｶﾀｶﾅ",
    "我想查询我的银行卡余额", "我的卡被吞了怎么办？", "日本語のテキストです。", "한국어 문장입니다", "中文English混合text",
    "東京タワーへ行きたい", "𠀀𠀁 rare CJK", "Thai: ภาษาไทย", "हिन्दी पाठ", "العربية نص", "עברית", "ქართული",
    "I ❤️ my bank 😀😀", "👍🏽 thanks", "👨‍👩‍👧 family account", "🇬🇧 🇺🇸 flags", "🥰🤩 new emoji", "⭐✨🔥💳💰",
    "$100 €50 £20 ¥1000 ₹500 ₿", "1,234,567.89", "3.14159", "-42", "+1 (555) 123-4567", "100%",
    "2024-01-15T10:30:00Z", "v1.2.3-beta", "0x1F600", "1st 2nd 3rd 4th", "12:30pm", "1e10",
    "Hello, World!", "What?!?", "(parentheses) [brackets] {braces} <angles>", "«guillemets» „quotes“ ‘single’ “double”",
    "em—dash en–dash hyphen-ated", "ellipsis… and · middle dot", "¿Qué? ¡Sí!", "a/b\\c|d", "~`@#^&*_=+",
    "semi;colon:colon", "it's don't won't", "rock'n'roll", "e-mail e.g. i.e. U.S.A.",
    "My card number is <CARD> and my email is <EMAIL>", "Call me at <PHONE>, IBAN <IBAN>", "<NAME> <ADDRESS> <DOB>",
    "send to <EMAIL>!!!", "john.doe@example.com", "https://www.example.com/path?query=1&x=2#frag",
    "@user #hashtag", "C:\\Program Files\\App", "<html><body>hi</body></html>",
    "a" * 99, "a" * 100, "a" * 101, "b" * 150, "pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious", "antidisestablishmentarianism " * 3,
    "x" * 300 + " end", ("word " * 60).strip(), "unbelievably uncharacteristically",
    "tab\there", "new\nline", "carriage\rreturn", "null\x00byte", "bell\x07char", "esc\x1b[0m",
    "del\x7fchar", "c1\x85next", "vt\x0bff\x0c", "unit\x1fsep", "zero\u200bwidth", "joiner\u200djoin",
    "bom\ufeffstart", "soft\u00adhyphen", "rtl\u200fmark", "replacement\ufffdchar", "private\ue000use",
    "line\u2028sep", "para\u2029sep", "ogham\u1680space", "narrow\u202fnbsp", "combining e\u0301 a\u0300 o\u0308",
    "stacked a\u0301\u0302\u0303", "Hangul jamo \u1100\u1161", "한", "ｱ", "ⓐⓑⓒ", "🅰🅱",
    "MiXeD CaSe WoRdS", "ALL CAPS SHOUTING", "camelCaseWord snake_case_word kebab-case-word",
    "    leading and trailing    ", "multiple     spaces", "repeated!!!!!!!!!!", "?" * 40,
]


def generated(rng):
    pieces = {
        "accent": ["café", "résumé", "naïve", "über", "señor", "ça", "Zürich", "São Paulo", "Kraków", "Dvořák",
                   "mañana", "façade", "crème", "Ålesund", "Ærø", "Šibenik", "İzmir", "Øst"],
        "cjk": ["银行", "转账", "信用卡", "余额", "カード", "銀行", "口座", "은행", "카드", "龍", "𪚥"],
        "emoji": ["😀", "💳", "🏦", "❤️", "👍", "🙏🏻", "🔥", "💸", "🤔", "✅", "❌", "🚀", "👩‍💻"],
        "num": ["0", "7", "42", "3.5", "1,000", "99.99", "2023", "10k", "5th", "#12345", "$20", "€7.50", "٣", "४२"],
        "punct": [".", ",", "!", "?", ";", ":", "-", "--", "...", "(", ")", "\"", "'", "/", "&", "*", "—", "…",
                  "、", "。", "！", "？", "«", "»", "•", "§", "¶", "†"],
        "pii": ["<CARD>", "<EMAIL>", "<PHONE>", "<IBAN>", "<NAME>", "<ADDRESS>", "<ACCOUNT>", "<SSN>", "<DATE>"],
        "word": ["card", "transfer", "money", "account", "why", "is", "my", "the", "pending", "refund", "atm",
                 "exchange", "rate", "top", "up", "verify", "identity", "cancel", "declined", "fee", "charged"],
        "space": [" ", "  ", "\t", "\n", "\u00a0", "\u3000", "\r\n"],
        "control": ["\x01", "\x02", "\x7f", "\u200b", "\u200e", "\ufeff", "\x00", "\x1e"],
    }
    kinds = list(pieces)
    out = []
    for i in range(360):
        n = rng.randint(1, 14)
        toks = []
        for _ in range(n):
            kind = rng.choice(kinds + ["word"] * 4)
            toks.append(rng.choice(pieces[kind]))
            if rng.random() < 0.6:
                toks.append(" ")
        s = "".join(toks)
        r = rng.random()
        if r < 0.15:
            s = s.upper()
        elif r < 0.2:
            s = s + rng.choice("abcdefghij") * rng.randint(90, 120)
        out.append(s)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bert_tokens.py TOKENIZER_JSON OUT_JSONL")
    data_dir = os.environ.get("FINCH_DATA_DIR", "/work/shared/data")
    rng = random.Random(14)
    sentences = data_sentences(rng, data_dir) + FIXED + generated(rng)
    tok = Tokenizer.from_file(sys.argv[1])
    tok.no_padding()
    tok.no_truncation()
    full = [e.ids for e in tok.encode_batch(sentences)]
    tok.enable_truncation(16)
    short = [e.ids for e in tok.encode_batch(sentences)]
    with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as fp:
        for s, a, b in zip(sentences, full, short):
            fp.write(json.dumps({"text": s, "ids": a, "ids16": b}, ensure_ascii=False) + "\n")
    print(f"{sys.argv[2]}: {len(sentences)} sentences, {sum(map(len, full))} ids")


if __name__ == "__main__":
    main()
