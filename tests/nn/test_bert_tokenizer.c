/* The BERT WordPiece tokenizer (nn/bert_tokenizer.h): a small tokenizer.json
 * the test writes itself (lower case, accents, CJK, punctuation, ##, [UNK],
 * the word length limit, added tokens, truncation), and malformed files
 * refused with errors that name the file and the field.
 *
 * Run as `test_bert_tokenizer golden`, it encodes every sentence of
 * tests/nn/golden/bert_tokens.jsonl (written by scripts/golden/bert_tokens.py
 * with the reference implementation) with the real all-MiniLM-L6-v2
 * tokenizer.json from $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/ and requires the
 * same ids for all of them; it skips when that file is absent. */
#include "nn/bert_tokenizer.h"

#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

static char dir[512];

static const char *vocab_json =
    "{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"[MASK]\":4,\"hello\":5,\"world\":6,\"un\":7,"
    "\"##aff\":8,\"##able\":9,\",\":10,\"!\":11,\"cafe\":12,\"a\":13,\"##a\":14,\"\xe7\x9a\x84\":15,\"##s\":16,"
    "\"card\":17,\"<\":18,\">\":19,\"email\":20,\"$\":21,\"5\":22,\"i\":23,\"##stanbul\":24}";

static const char *added_json =
    "[{\"id\":0,\"content\":\"[PAD]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
    "\"normalized\":false,\"special\":true},"
    "{\"id\":4,\"content\":\"[MASK]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
    "\"normalized\":false,\"special\":true}]";

static const char *bert_norm =
    "{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,\"strip_accents\":null,"
    "\"lowercase\":true}";

static const char *post_json =
    "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"[CLS]\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"[SEP]\",\"type_id\":0}}],"
    "\"special_tokens\":{\"[CLS]\":{\"id\":\"[CLS]\",\"ids\":[2],\"tokens\":[\"[CLS]\"]},"
    "\"[SEP]\":{\"id\":\"[SEP]\",\"ids\":[3],\"tokens\":[\"[SEP]\"]}}}";

static const char *write_file(const char *name, const char *text) {
  static char path[640];
  snprintf(path, sizeof path, "%s/%s.json", dir, name);
  FILE *fp = fopen(path, "w");
  CHECK(fp != NULL);
  if (fp) {
    fputs(text, fp);
    fclose(fp);
  }
  return path;
}

/* A tokenizer.json from its parts. */
static const char *write_tok(const char *name, const char *added, const char *norm, const char *type,
                             const char *unk, const char *vocab) {
  static char text[8192];
  snprintf(text, sizeof text,
           "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":%s,\"normalizer\":%s,"
           "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},\"post_processor\":%s,"
           "\"decoder\":{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true},"
           "\"model\":{\"type\":\"%s\",\"unk_token\":\"%s\",\"continuing_subword_prefix\":\"##\","
           "\"max_input_chars_per_word\":100,\"vocab\":%s}}",
           added, norm, post_json, type, unk, vocab);
  return write_file(name, text);
}

/* Encodes text (len bytes) and compares with want (n ids, [CLS]/[SEP] included). */
static void expect_ids(const nn_bert_tok_t *t, const char *text, size_t len, int max_len, const int32_t *want,
                       int n) {
  int32_t ids[512];
  int got = -1;
  finch_err err = {0};
  finch_status st = nn_bert_tok_encode(t, text, len, max_len, ids, &got, &err);
  if (st != FINCH_OK) {
    TEST_FAIL_("encode \"%s\": %s", text, err.msg);
    return;
  }
  int same = got == n;
  for (int i = 0; same && i < n; i++) same = ids[i] == want[i];
  if (!same) {
    char buf[1024];
    size_t at = 0;
    for (int i = 0; i < got && at < sizeof buf - 16; i++) at += (size_t)snprintf(buf + at, sizeof buf - at, " %d", ids[i]);
    buf[at] = 0;
    TEST_FAIL_("encode \"%s\" (max_len %d): got%s (%d ids), want %d ids", text, max_len, buf, got, n);
  }
}

#define EXPECT(text, ...)                                                                                     \
  do {                                                                                                        \
    const int32_t want_[] = {__VA_ARGS__};                                                                    \
    expect_ids(t, text, strlen(text), 512, want_, (int)(sizeof want_ / sizeof want_[0]));                     \
  } while (0)

static void test_small(void) {
  finch_err err = {0};
  nn_bert_tok_t *t = NULL;
  const char *path = write_tok("small", added_json, bert_norm, "WordPiece", "[UNK]", vocab_json);
  CHECK_INT_EQ(nn_bert_tok_load(path, &t, &err), FINCH_OK);
  if (!t) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  nn_bert_tok_info info = nn_bert_tok_get_info(t);
  CHECK_INT_EQ(info.vocab_size, 25);
  CHECK_INT_EQ(info.unk_id, 1);
  CHECK_INT_EQ(info.cls_id, 2);
  CHECK_INT_EQ(info.sep_id, 3);
  CHECK_INT_EQ(info.pad_id, 0);
  CHECK_INT_EQ(info.max_word_chars, 100);
  CHECK(info.lowercase && info.strip_accents && info.clean_text && info.chinese_chars);
  CHECK_INT_EQ(nn_bert_tok_id(t, "##aff", 5), 8);
  CHECK_INT_EQ(nn_bert_tok_id(t, "##af", 4), -1);
  CHECK_STR_EQ(nn_bert_tok_token(t, 24), "##stanbul");
  CHECK(nn_bert_tok_token(t, 25) == NULL);

  EXPECT("", 2, 3);
  EXPECT(" \t\n ", 2, 3);
  EXPECT("Hello, World!", 2, 5, 10, 6, 11, 3);
  EXPECT("hello,world!!", 2, 5, 10, 6, 11, 11, 3);
  EXPECT("unaffable", 2, 7, 8, 9, 3);
  EXPECT("UNAFFABLE cards", 2, 7, 8, 9, 17, 16, 3);
  EXPECT("Caf\xc3\xa9 CAF\xc3\x89S", 2, 12, 12, 16, 3);           /* Café CAFÉS */
  EXPECT("cafe\xcc\x81", 2, 12, 3);                                 /* e + combining acute */
  EXPECT("\xc4\xb0stanbul", 2, 23, 24, 3);                          /* İstanbul */
  EXPECT("hello unknown", 2, 5, 1, 3);
  EXPECT("unaffablex", 2, 1, 3);                                    /* no piece for the rest: one [UNK] */
  EXPECT("<EMAIL> $5", 2, 18, 20, 19, 21, 22, 3);
  EXPECT("\xe7\x9a\x84\xe7\x9a\x84", 2, 15, 15, 3);                 /* 的的: CJK split */
  EXPECT("a\xe7\x9a\x84" "a", 2, 13, 15, 13, 3);
  EXPECT("hel\x01lo\xe2\x80\x8b world\xef\xbb\xbf", 2, 5, 6, 3);    /* controls and Cf dropped */
  EXPECT("hello\xc2\xa0world\xe3\x80\x80" "card", 2, 5, 6, 17, 3);  /* NBSP, ideographic space */
  EXPECT("[MASK] hello[MASK]world", 2, 4, 5, 4, 6, 3);              /* added tokens, raw text */
  EXPECT("[mask]", 2, 1, 1, 1, 3);                                  /* lower case is not the token */
  EXPECT("[PAD][MASK]", 2, 0, 4, 3);
  {
    const int32_t want[] = {2, 5, 3};
    expect_ids(t, "hel\0lo", 6, 512, want, 3); /* NUL is cleaned like a control */
  }
  /* The word length limit: 100 characters are split, 101 are [UNK]. */
  char word[128];
  memset(word, 'a', 101);
  word[100] = 0;
  int32_t want[102];
  want[0] = 2;
  want[1] = 13;
  for (int i = 2; i <= 100; i++) want[i] = 14;
  want[101] = 3;
  expect_ids(t, word, 100, 512, want, 102);
  word[100] = 'a';
  word[101] = 0;
  EXPECT(word, 2, 1, 3);
  /* Truncation keeps [CLS] and [SEP]. */
  {
    const int32_t w4[] = {2, 5, 6, 3}, w2[] = {2, 3}, w6[] = {2, 13, 14, 14, 14, 3};
    expect_ids(t, "hello world hello world", 23, 4, w4, 4);
    expect_ids(t, "hello world", 11, 2, w2, 2);
    expect_ids(t, word, 50, 6, w6, 6);
  }
  int32_t ids[4];
  int n = -1;
  CHECK_INT_EQ(nn_bert_tok_encode(t, "hello", 5, 1, ids, &n, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "max_len 1");
  CHECK_INT_EQ(nn_bert_tok_encode(t, "ok \xff", 4, 4, ids, &n, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "invalid UTF-8 at byte 3");
  nn_bert_tok_free(t);
  nn_bert_tok_free(NULL);

  /* No lower case, accents kept, no added tokens. */
  path = write_tok("cased", "[]",
                   "{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":false,"
                   "\"strip_accents\":false,\"lowercase\":false}",
                   "WordPiece", "[UNK]", vocab_json);
  CHECK_INT_EQ(nn_bert_tok_load(path, &t, &err), FINCH_OK);
  if (t) {
    info = nn_bert_tok_get_info(t);
    CHECK(!info.lowercase && !info.strip_accents && !info.chinese_chars);
    EXPECT("hello Hello caf\xc3\xa9", 2, 5, 1, 1, 3);
    EXPECT("\xe7\x9a\x84\xe7\x9a\x84", 2, 1, 3); /* one word: 的的 is not in the vocabulary */
    EXPECT("[MASK]", 2, 1, 1, 1, 3);
  }
  nn_bert_tok_free(t);
}

/* Loading path must fail with code and a message naming the file and frag. */
static void expect_fail(const char *path, finch_status code, const char *frag) {
  finch_err err = {0};
  nn_bert_tok_t *t = (nn_bert_tok_t *)0x1;
  finch_status st = nn_bert_tok_load(path, &t, &err);
  CHECK_INT_EQ(st, code);
  CHECK(t == NULL);
  CHECK_CONTAINS(err.msg, path);
  CHECK_CONTAINS(err.msg, frag);
  if (st == FINCH_OK) nn_bert_tok_free(t);
}

static void test_malformed(void) {
  char missing[600];
  snprintf(missing, sizeof missing, "%s/none.json", dir);
  expect_fail(missing, FINCH_ENOTFOUND, "cannot open");
  expect_fail(write_file("notjson", "{\"model\": {\"vocab\": "), FINCH_EFORMAT, "not valid JSON");
  expect_fail(write_file("array", "[1, 2]"), FINCH_EFORMAT, "not a JSON object");
  expect_fail(write_file("nomodel", "{\"normalizer\": null}"), FINCH_EFORMAT, "model missing");
  expect_fail(write_file("novocab", "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\"}}"), FINCH_EFORMAT,
              "model.vocab missing");
  expect_fail(write_tok("bpe", "[]", bert_norm, "BPE", "[UNK]", vocab_json), FINCH_EFORMAT,
              "model.type is 'BPE'; only WordPiece is read");
  expect_fail(write_tok("nounk", "[]", bert_norm, "WordPiece", "[UNK]", "{\"[CLS]\":0,\"[SEP]\":1,\"[PAD]\":2}"),
              FINCH_EFORMAT, "model.unk_token '[UNK]' is not in model.vocab");
  expect_fail(write_tok("nopad", "[]", bert_norm, "WordPiece", "[UNK]", "{\"[CLS]\":0,\"[SEP]\":1,\"[UNK]\":2,\"x\":3}"),
              FINCH_EFORMAT, "padding.pad_token '[PAD]' is not in model.vocab");
  expect_fail(write_tok("badid", "[]", bert_norm, "WordPiece", "[UNK]", "{\"[UNK]\":0,\"hello\":\"5\"}"),
              FINCH_EFORMAT, "model.vocab['hello'] is not an integer");
  expect_fail(write_tok("range", "[]", bert_norm, "WordPiece", "[UNK]", "{\"[UNK]\":0,\"hello\":7}"), FINCH_EFORMAT,
              "model.vocab['hello'] = 7 is outside [0, 2)");
  expect_fail(write_tok("dupid", "[]", bert_norm, "WordPiece", "[UNK]", "{\"[UNK]\":0,\"a\":1,\"b\":1}"),
              FINCH_EFORMAT, "'a' and 'b' both have id 1");
  expect_fail(write_tok("norm", "[]", "{\"type\":\"NFKC\"}", "WordPiece", "[UNK]", vocab_json), FINCH_EFORMAT,
              "normalizer.type is 'NFKC'");
  expect_fail(write_tok("normbool", "[]", "{\"type\":\"BertNormalizer\",\"lowercase\":1}", "WordPiece", "[UNK]",
                        vocab_json),
              FINCH_EFORMAT, "normalizer.lowercase is not a boolean");
  expect_fail(write_tok("addnorm", "[{\"id\":5,\"content\":\"hello\",\"normalized\":true}]", bert_norm, "WordPiece",
                        "[UNK]", vocab_json),
              FINCH_EFORMAT, "added_tokens[0] ('hello'): normalized added tokens are not read");
  expect_fail(write_tok("addid", "[{\"id\":99,\"content\":\"zz\"}]", bert_norm, "WordPiece", "[UNK]", vocab_json),
              FINCH_EFORMAT, "added_tokens[0].id is not a token id in [0, 25)");
}

/* Every sentence of the golden file, encoded with the real tokenizer.json. */
static void test_golden(void) {
  const char *root = getenv("FINCH_PRETRAINED_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/all-minilm-l6-v2/tokenizer.json", root ? root : "");
  if (!root || access(path, R_OK) != 0)
    TEST_SKIP("no tokenizer at $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/tokenizer.json (FINCH_PRETRAINED_DIR=%s); "
              "run scripts/fetch-pretrained.sh and point FINCH_PRETRAINED_DIR at its directory",
              root ? root : "(unset)");
  finch_err err = {0};
  nn_bert_tok_t *t = NULL;
  CHECK_INT_EQ(nn_bert_tok_load(path, &t, &err), FINCH_OK);
  if (!t) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  CHECK_INT_EQ(nn_bert_tok_get_info(t).vocab_size, 30522);
  const char *golden = FINCH_SOURCE_DIR "/tests/nn/golden/bert_tokens.jsonl";
  FILE *fp = fopen(golden, "r");
  CHECK(fp != NULL);
  if (!fp) {
    nn_bert_tok_free(t);
    return;
  }
  char *line = NULL;
  size_t cap = 0;
  int total = 0, agree = 0, lineno = 0;
  long ids_total = 0;
  int32_t ids[4096];
  while (getline(&line, &cap, fp) > 0) {
    lineno++;
    json_error_t jerr;
    json_t *row = json_loads(line, JSON_ALLOW_NUL, &jerr);
    json_t *text = json_object_get(row, "text");
    if (!json_is_string(text)) {
      TEST_FAIL_("%s:%d: no text: %s", golden, lineno, row ? "" : jerr.text);
      json_decref(row);
      continue;
    }
    total++;
    int ok = 1;
    static const struct {
      const char *field;
      int max_len;
    } runs[] = {{"ids", 4096}, {"ids16", 16}};
    for (int r = 0; r < 2; r++) {
      json_t *want = json_object_get(row, runs[r].field);
      int n = -1;
      if (nn_bert_tok_encode(t, json_string_value(text), json_string_length(text), runs[r].max_len, ids, &n,
                             &err) != FINCH_OK) {
        TEST_FAIL_("%s:%d: %s", golden, lineno, err.msg);
        ok = 0;
        continue;
      }
      int same = (size_t)n == json_array_size(want);
      for (int i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(want, (size_t)i));
      if (!same) {
        ok = 0;
        char *w = json_dumps(want, JSON_COMPACT);
        char got[2048];
        size_t at = 0;
        for (int i = 0; i < n && at < sizeof got - 16; i++)
          at += (size_t)snprintf(got + at, sizeof got - at, "%s%d", i ? "," : "", ids[i]);
        got[at] = 0;
        TEST_FAIL_("%s:%d: %s: got [%s], want %s", golden, lineno, runs[r].field, got, w ? w : "?");
        free(w);
      }
      if (r == 0) ids_total += n;
    }
    agree += ok;
    json_decref(row);
  }
  free(line);
  fclose(fp);
  nn_bert_tok_free(t);
  printf("%s: %d/%d sentences agree with the reference tokenizer (%ld ids)\n", golden, agree, total, ids_total);
  CHECK(total >= 1000);
  CHECK_INT_EQ(agree, total);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "golden") == 0) {
    test_golden();
    TEST_DONE();
  }
  const char *base = getenv("FINCH_TEST_TMP");
  snprintf(dir, sizeof dir, "%s/nn_bert_tokenizer.%d", base ? base : "/tmp", (int)getpid());
  if (base) mkdir(base, 0755);
  CHECK(mkdir(dir, 0755) == 0);
  test_small();
  test_malformed();
  TEST_DONE();
}
