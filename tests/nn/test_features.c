/* Tokenizer, vocabulary and feature rows. */
#include "nn/features.h"

#include "tests/test.h"

static int tok_eq(const nn_tokens *t, size_t i, const char *want) {
  return i < t->n && strlen(want) == t->tok[i].len && memcmp(t->norm + t->tok[i].off, want, t->tok[i].len) == 0;
}

int main(void) {
  finch_err err = {0};
  nn_tokens t = {0};

  CHECK_INT_EQ(nn_tokenize("I'm still waiting on my card?", &t, &err), FINCH_OK);
  CHECK_INT_EQ(t.n, 6);
  CHECK(tok_eq(&t, 0, "i'm"));
  CHECK(tok_eq(&t, 5, "card"));

  /* Typographic apostrophe, quotes, hyphen, full-width letters, placeholder. */
  CHECK_INT_EQ(nn_tokenize("Can\xe2\x80\x99t 'top-up' my \xef\xbc\xa3\xef\xbc\xa1\xef\xbc\xb2\xef\xbc\xa4 <card>!", &t, &err), FINCH_OK);
  CHECK_INT_EQ(t.n, 6);
  CHECK(tok_eq(&t, 0, "can't"));
  CHECK(tok_eq(&t, 1, "top"));
  CHECK(tok_eq(&t, 2, "up"));
  CHECK(tok_eq(&t, 4, "card"));
  CHECK(tok_eq(&t, 5, "<card>"));
  CHECK_INT_EQ(t.tok[5].kind, NN_TOKEN_PLACEHOLDER);
  /* "<" without a closing ">" is punctuation. */
  CHECK_INT_EQ(nn_tokenize("a < b", &t, &err), FINCH_OK);
  CHECK_INT_EQ(t.n, 2);

  /* CJK: one token per ideograph, Latin runs stay words. */
  CHECK_INT_EQ(nn_tokenize("我的卡 card", &t, &err), FINCH_OK);
  CHECK_INT_EQ(t.n, 4);
  CHECK(tok_eq(&t, 1, "的"));
  CHECK_INT_EQ(t.tok[1].kind, NN_TOKEN_CJK);
  CHECK(tok_eq(&t, 3, "card"));

  CHECK_INT_EQ(nn_tokenize("", &t, &err), FINCH_OK);
  CHECK_INT_EQ(t.n, 0);
  CHECK_INT_EQ(nn_tokenize("bad \xff byte", &t, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "UTF-8");
  nn_tokens_free(&t);

  /* The hash is pinned (checked against an independent FNV-1a + splitmix64
   * computation): a model file's rows depend on it. */
  CHECK(nn_feature_hash('w', "card", 4) != nn_feature_hash('c', "card", 4));
  CHECK(nn_feature_hash('w', "card", 4) == 0x41cbab9eba088e87ULL);

  /* Vocabulary: min_count 2, ordered by count then bytes. */
  const char *texts[] = {"card card pin", "Card pin top", "top up", "up"};
  nn_feat_config cfg = {.buckets = 0, .minn = 0, .maxn = 0, .word_ngrams = 1, .min_count = 2};
  nn_featurizer *f = NULL;
  CHECK_INT_EQ(nn_featurizer_build(&f, texts, 4, &cfg, &err), FINCH_OK);
  CHECK_INT_EQ(nn_featurizer_n_words(f), 4);
  CHECK_STR_EQ(nn_featurizer_word(f, 0), "card"); /* 3 */
  CHECK_STR_EQ(nn_featurizer_word(f, 1), "pin");  /* 2, then bytes */
  CHECK_STR_EQ(nn_featurizer_word(f, 2), "top");
  CHECK_STR_EQ(nn_featurizer_word(f, 3), "up");
  CHECK_INT_EQ(nn_featurizer_lookup(f, "up", 2), 3);
  CHECK_INT_EQ(nn_featurizer_lookup(f, "nope", 4), -1);
  CHECK_INT_EQ(nn_featurizer_rows(f), 4);

  /* Without buckets only in-vocabulary words give rows. */
  nn_ids ids = {0};
  CHECK_INT_EQ(nn_featurize(f, "CARD, unknown pin", &ids, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(ids.n, 2);
  CHECK_INT_EQ(ids.ids[0], 0);
  CHECK_INT_EQ(ids.ids[1], 1);
  nn_featurizer_free(f);

  /* With buckets: word + bigram + char n-grams. "ab cd", minn = maxn = 3:
   * ab (OOV), <ab, ab>, cd (OOV), bigram, <cd, cd>  = 7 rows, all hashed. */
  cfg = (nn_feat_config){.buckets = 1000, .minn = 3, .maxn = 3, .word_ngrams = 2, .min_count = 1};
  const char *none[] = {"zz"};
  CHECK_INT_EQ(nn_featurizer_build(&f, none, 1, &cfg, &err), FINCH_OK);
  CHECK_INT_EQ(nn_featurize(f, "ab cd", &ids, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(ids.n, 7);
  for (size_t i = 0; i < ids.n; i++) CHECK(ids.ids[i] >= 1 && ids.ids[i] < 1001);
  /* Placeholders get no character n-grams. */
  CHECK_INT_EQ(nn_featurize(f, "<card>", &ids, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(ids.n, 1);
  nn_ids_free(&ids);
  nn_featurizer_free(f);

  /* Build names the text with bad UTF-8; from_words rejects duplicates. */
  const char *bad[] = {"fine", "bad \xc3"};
  CHECK_INT_EQ(nn_featurizer_build(&f, bad, 2, &cfg, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "text 1");
  const char *dup[] = {"a", "b", "a"};
  CHECK_INT_EQ(nn_featurizer_from_words(&f, dup, 3, &cfg, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "duplicate");
  cfg.word_ngrams = 3;
  CHECK_INT_EQ(nn_featurizer_from_words(&f, dup, 1, &cfg, &err), FINCH_EINVAL);
  TEST_DONE();
}
