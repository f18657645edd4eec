/* ingest/formats: every input format on small fixtures (valid and malformed,
 * exact messages and line numbers); the public data sets are read in
 * test_formats_data.c.
 *
 * Most cases read a fixture to the end and compare a transcript of every call:
 *   "L:text|label|split|dialogue_id|turn|speaker|meta" for a record on line
 *      (or record number) L, "-" for a NULL field or turn -1;
 *   "L!field!message" for a reject (-1);
 *   "L?field!message" for a fatal read error (-2);
 *   "open!message" when open fails. */
#define _GNU_SOURCE /* fopencookie, for a stream that fails */
#include "ingest/formats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ingest/format_check.h"
#include "tests/test.h"

#define FIXTURES FINCH_SOURCE_DIR "/tests/ingest/fixtures"

/* Reads fp to the end in the given format; the transcript (caller frees). */
static char *transcript_fp(const char *format, FILE *fp, const char *name, const finch_format_opts *opts) {
  test_strbuf out = {0};
  test_sb_add(&out, "");
  finch_format_reader *r = (finch_format_reader *)1;
  finch_err err = {0};
  finch_status st = finch_format_open(&r, format, fp, name, opts, &err);
  if (st) {
    CHECK(r == NULL);
    CHECK(err.code == st);
    test_sb_printf(&out, "open!%s\n", err.msg);
    return out.s;
  }
  finch_record rec;
  const char *field;
  int rc, calls = 0;
  while ((rc = finch_format_next(r, &rec, &field, &err)) != 0) {
    if (++calls > 10000) {
      TEST_FAIL_("reader does not reach the end of %s", name);
      break;
    }
    if (rc == 1) {
      CHECK(field == NULL);
      char turn[16] = "-";
      if (rec.turn >= 0) snprintf(turn, sizeof turn, "%d", rec.turn);
      test_sb_printf(&out, "%lld:%s|%s|%s|%s|%s|%s|%s\n", rec.line, OR_DASH(rec.text), OR_DASH(rec.label),
                OR_DASH(rec.split), OR_DASH(rec.dialogue_id), turn, OR_DASH(rec.speaker),
                OR_DASH(rec.meta_json));
    } else {
      CHECK(rc == -1 || rc == -2);
      test_sb_printf(&out, "%lld%c%s!%s\n", rec.line, rc == -1 ? '!' : '?', OR_DASH(field), err.msg);
    }
  }
  /* The end is sticky. */
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 0);
  finch_format_close(r);
  return out.s;
}

/* The same for a fixture, named by its file name in messages. */
static char *transcript(const char *format, const char *fixture, const finch_format_opts *opts) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", FIXTURES, fixture);
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    TEST_FAIL_("cannot open %s: %s", path, strerror(errno));
    return strdup("");
  }
  char *t = transcript_fp(format, fp, fixture, opts);
  fclose(fp);
  return t;
}

#define EXPECT(format, fixture, opts, expected)                                                    \
  do {                                                                                             \
    char *got_ = transcript((format), (fixture), (opts));                                          \
    CHECK_STR_EQ(got_, (expected));                                                                \
    free(got_);                                                                                    \
  } while (0)

static void test_open_errors(void) {
  finch_format_reader *r = (finch_format_reader *)1;
  finch_err err = {0};
  FILE *fp = tmpfile();
  CHECK(fp != NULL);
  CHECK_INT_EQ(finch_format_open(&r, "xml", fp, "in.xml", NULL, &err), FINCH_EINVAL);
  CHECK(r == NULL);
  CHECK_STR_EQ(err.msg, "unknown input format 'xml' (one of banking77, csv, clinc150, sgd, jsonl)");
  CHECK_INT_EQ(finch_format_open(&r, "csv", NULL, "in.csv", NULL, &err), FINCH_EINVAL);
  CHECK_STR_EQ(finch_format_names(), "banking77, csv, clinc150, sgd, jsonl");
  fclose(fp);
  finch_format_close(NULL);
}

static void test_banking77(void) {
  EXPECT("banking77", "banking77_ok.csv", NULL,
         "2:What is my balance?|balance|-|-|-|-|-\n"
         "3:Card, lost|lost_or_stolen_card|-|-|-|-|-\n"
         "4:He said \"hi\"|greeting|-|-|-|-|-\n"
         "5:two\nlines|card_arrival|-|-|-|-|-\n");
  EXPECT("banking77", "banking77_bad_header.csv", NULL,
         "open!banking77_bad_header.csv:1: expected the header 'text,category'\n");
  EXPECT("banking77", "empty.txt", NULL, "open!empty.txt:1: expected the header 'text,category'\n");
  EXPECT("banking77", "banking77_ragged.csv", NULL,
         "2:ok row|a|-|-|-|-|-\n"
         "3!record!banking77_ragged.csv:3: expected 2 fields, found 3\n"
         "4!record!banking77_ragged.csv:4: expected 2 fields, found 1\n"
         "5!record!banking77_ragged.csv:5: unexpected character after closing quote in field 1\n"
         "6:last|b|-|-|-|-|-\n");
}

static void test_csv(void) {
  const char *ok = "2:hello there|greet|-|-|-|-|-\n"
                   "3:with, comma|ask|-|-|-|-|-\n"
                   "4:third|bye|-|-|-|-|-\n";
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "utterance", .label_col = "intent"}), ok);
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "1", .label_col = "2"}), ok);
  /* Without a label column the one named intent is found; "none" loads text alone. */
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "utterance"}), ok);
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "utterance", .label_col = FINCH_CSV_NO_LABEL}),
         "2:hello there|-|-|-|-|-|-\n"
         "3:with, comma|-|-|-|-|-|-\n"
         "4:third|-|-|-|-|-|-\n");
  /* The label may come before the text; an empty field is passed on as "". */
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "intent", .label_col = "3"}),
         "2:greet|x|-|-|-|-|-\n"
         "3:ask||-|-|-|-|-\n"
         "4:bye|z|-|-|-|-|-\n");
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "message", .label_col = "intent"}),
         "open!csv_ok.csv:1: no text column 'message' in the header; its columns are 'id', 'utterance', "
         "'intent', 'extra'\n");
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "utterance", .label_col = "label"}),
         "open!csv_ok.csv:1: no label column 'label' in the header; its columns are 'id', 'utterance', "
         "'intent', 'extra'\n");
  EXPECT("csv", "csv_ok.csv", (&(finch_format_opts){.text_col = "1", .label_col = "4"}),
         "open!csv_ok.csv:1: label column 4 is out of range: the header has 4 columns ('id', 'utterance', "
         "'intent', 'extra')\n");
  /* Without text_col the column is "text". */
  EXPECT("csv", "csv_ok.csv", NULL,
         "open!csv_ok.csv:1: no text column 'text' in the header; its columns are 'id', 'utterance', "
         "'intent', 'extra'\n");
  EXPECT("csv", "empty.txt", NULL, "open!empty.txt:1: empty input: expected a header line\n");
  EXPECT("csv", "csv_ragged.csv", (&(finch_format_opts){.text_col = "utterance", .label_col = "intent"}),
         "2!record!csv_ragged.csv:2: expected 3 fields, found 2\n"
         "3:fine|ok|-|-|-|-|-\n"
         "4!record!csv_ragged.csv:4: expected 3 fields, found 4\n");
  /* A header that is not CSV. */
  EXPECT("csv", "jsonl_ok.jsonl", NULL,
         "open!jsonl_ok.jsonl:1: unexpected quote in unquoted field 1\n");
}

/* The csv label column found by name when none is given. Before the
 * detection every row of these inputs loaded with a NULL label; now a header
 * without label, category or intent is refused, naming its columns. */
static char *transcript_str(const char *text, const finch_format_opts *opts) {
  FILE *fp = fmemopen((void *)text, strlen(text), "r");
  if (!fp) return strdup("");
  char *t = transcript_fp("csv", fp, "in.csv", opts);
  fclose(fp);
  return t;
}

#define EXPECT_STR(text, opts, expected)                                                           \
  do {                                                                                             \
    char *got_ = transcript_str((text), (opts));                                                   \
    CHECK_STR_EQ(got_, (expected));                                                                \
    free(got_);                                                                                    \
  } while (0)

static void test_csv_label_detection(void) {
  EXPECT_STR("text,Label\nhi,greet\n", NULL, "2:hi|greet|-|-|-|-|-\n");
  EXPECT_STR("CATEGORY,text\nlost,card gone\n", NULL, "2:card gone|lost|-|-|-|-|-\n");
  EXPECT_STR("id,text,Intent\n1,bye,leave\n", NULL, "2:bye|leave|-|-|-|-|-\n");
  /* label is preferred to category and intent, whatever their order. */
  EXPECT_STR("intent,text,label\na,t,b\n", NULL, "2:t|b|-|-|-|-|-\n");
  /* The text column is never its own label. */
  EXPECT_STR("intent,category\nt,c\n", (&(finch_format_opts){.text_col = "intent"}), "2:t|c|-|-|-|-|-\n");
  EXPECT_STR("text,class\nhi,greet\n", NULL,
             "open!in.csv:1: no label column: none of the header's columns ('text', 'class') is named label, "
             "category or intent; give the label column (--label-col COL), or --label-col none to load "
             "unlabelled text\n");
  EXPECT_STR("text\nhi\n", NULL,
             "open!in.csv:1: no label column: none of the header's columns ('text') is named label, category or "
             "intent; give the label column (--label-col COL), or --label-col none to load unlabelled text\n");
  EXPECT_STR("text\nhi\n", (&(finch_format_opts){.label_col = "none"}), "2:hi|-|-|-|-|-|-\n");
  /* Malformed: a detected label column still needs every record complete. */
  EXPECT_STR("text,label\nhi\nok,x\n\"open,y\n", NULL,
             "2!record!in.csv:2: expected 2 fields, found 1\n"
             "3:ok|x|-|-|-|-|-\n"
             "4!record!in.csv:4: unterminated quoted field (field 1)\n");
  EXPECT_STR("", NULL, "open!in.csv:1: empty input: expected a header line\n");
}

static void test_jsonl(void) {
  EXPECT("jsonl", "jsonl_ok.jsonl", NULL,
         "1:hello|greet|train|d1|0|user|{\"source\":\"x\",\"n\":1}\n"
         "2:hi, how can I help?|-|dev|d1|1|system|-\n"
         "4:only text|-|-|-|-|-|-\n"
         "6:numeric id|-|dev|42|-|-|-\n"
         "7:esc \"q\" \xC3\xA9|-|test|-|-|-|-\n"
         "8:no final newline|x|-|-|-|-|-\n");
  EXPECT("jsonl", "jsonl_bad.jsonl", NULL,
         "1:good|a|-|-|-|-|-\n"
         "2!record!jsonl_bad.jsonl:2: invalid JSON: string or '}' expected near end of file (column 18)\n"
         "3!text!jsonl_bad.jsonl:3: field text is not a string\n"
         "4!text!jsonl_bad.jsonl:4: missing field text\n"
         "5!split!jsonl_bad.jsonl:5: unknown split 'holdout' (expected train, dev or test)\n"
         "6!meta!jsonl_bad.jsonl:6: field meta is not an object\n"
         "7!label!jsonl_bad.jsonl:7: field label is not a string\n"
         "8!record!jsonl_bad.jsonl:8: expected a JSON object\n"
         "9!turn!jsonl_bad.jsonl:9: field turn is out of range: -1\n"
         "10!turn!jsonl_bad.jsonl:10: field turn is not an integer\n"
         "11!speaker!jsonl_bad.jsonl:11: unknown speaker 'agent' (expected user or system)\n"
         "12!dialogue_id!jsonl_bad.jsonl:12: field dialogue_id is not a string or number\n"
         "13!record!jsonl_bad.jsonl:13: invalid JSON: end of file expected near 'trailing' (column 22)\n"
         "14!split!jsonl_bad.jsonl:14: field split is not a string\n"
         "15:last|-|-|-|-|-|-\n");
  EXPECT("jsonl", "empty.txt", NULL, "");
  const char *fixtures[] = {"jsonl_ok.jsonl", "jsonl_bad.jsonl"};
  for (int i = 0; i < 2; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", FIXTURES, fixtures[i]);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
      TEST_FAIL_("cannot open %s", path);
      continue;
    }
    static char data[1 << 16];
    size_t n = fread(data, 1, sizeof data, fp);
    fclose(fp);
    test_compare_jsonl_paths(data, n, fixtures[i]);
  }
}

/* Lines and fields far beyond any buffer size: 3 MB of text. */
static void test_long_lines(void) {
  size_t n = 3u << 20;
  char *big = malloc(n + 1);
  if (!big) abort();
  for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
  big[n] = '\0';

  FILE *fp = tmpfile();
  CHECK(fp != NULL);
  fprintf(fp, "{\"text\": \"%s\", \"label\": \"long\"}\n{\"text\": \"short\"}\n", big);
  rewind(fp);
  finch_format_reader *r;
  finch_err err;
  finch_record rec;
  const char *field;
  CHECK_INT_EQ(finch_format_open(&r, "jsonl", fp, "big.jsonl", NULL, &err), FINCH_OK);
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 1);
  CHECK_INT_EQ(strlen(rec.text), n);
  CHECK(strcmp(rec.text, big) == 0);
  CHECK_STR_EQ(rec.label, "long");
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 1);
  CHECK_STR_EQ(rec.text, "short");
  CHECK_INT_EQ(rec.line, 2);
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 0);
  finch_format_close(r);
  fclose(fp);

  fp = tmpfile();
  CHECK(fp != NULL);
  fprintf(fp, "text,category\n\"%s\",long\nshort,x\n", big);
  rewind(fp);
  CHECK_INT_EQ(finch_format_open(&r, "banking77", fp, "big.csv", NULL, &err), FINCH_OK);
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 1);
  CHECK_INT_EQ(strlen(rec.text), n);
  CHECK_STR_EQ(rec.label, "long");
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 1);
  CHECK_INT_EQ(rec.line, 3);
  CHECK_INT_EQ(finch_format_next(r, &rec, &field, &err), 0);
  finch_format_close(r);
  fclose(fp);
  free(big);
}

/* Lines that stray from the common case: each must come out of the fast path
 * exactly as out of jansson (which the fast path leaves the hard ones to). */
static void test_jsonl_paths_agree(void) {
  static const char lines[] =
      "{\"text\": \"a\\u00e9\\ud83d\\ude00b\", \"label\": \"x\"}\n"
      "{\"text\": \"\\ud83d\"}\n"
      "{\"text\": \"\\ud83dx\"}\n"
      "{\"text\": \"\\ude00\"}\n"
      "{\"text\": \"\\ud83d\\u0041\"}\n"
      "{\"text\": \"\\u0000\"}\n"
      "{\"text\": \"a\x01" "b\"}\n"
      "{\"text\": \"a\x7f" "b\"}\n"
      "{\"text\": \"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\"}\n"
      "{\"text\": \"\xc3\"}\n"
      "{\"text\": \"\xc3\"\"}\n"
      "{\"text\": \"\xc0\xaf\"}\n"
      "{\"text\": \"\xe0\x80\xaf\"}\n"
      "{\"text\": \"\xed\xa0\x80\"}\n"
      "{\"text\": \"\xf4\x90\x80\x80\"}\n"
      "{\"text\": \"\xf5\x80\x80\x80\"}\n"
      "{\"text\": \"x\", \"k\xff\": 1}\n"
      "{\"text\": \"x\"} \xc3\xa9\n"
      "{\"text\": \"x\", \"turn\": 123456789012345678901234}\n"
      "{\"text\": \"x\", \"turn\": -123456789012345678901234}\n"
      "{\"text\": \"x\", \"turn\": 999999999999999999}\n"
      "{\"text\": \"x\", \"turn\": 1e2}\n"
      "{\"text\": \"x\", \"turn\": -0}\n"
      "{\"text\": \"x\", \"turn\": 01}\n"
      "{\"text\": \"x\", \"turn\": 2147483647}\n"
      "{\"text\": \"x\", \"turn\": 2147483648}\n"
      "{\"text\": \"x\", \"dialogue_id\": 1.5}\n"
      "{\"text\": \"x\", \"dialogue_id\": -12}\n"
      "{\"text\": \"x\", \"dialogue_id\": 1e400}\n"
      "{\"text\": \"x\", \"dialogue_id\": 0.1E-2}\n"
      "{\"text\": \"x\", \"dialogue_id\": false}\n"
      "{\"text\": \"x\", \"text\": \"the second\"}\n"
      "{\"text\": \"x\", \"meta\": {\"a\": [1, {\"b\": \"}\\\"]\"}]}, \"meta\": {\"c\": 1}}\n"
      "{\"text\": \"x\", \"meta\": {\"c\": 1}, \"meta\": null}\n"
      "{\"text\": \"x\", \"meta\": {\"c\": 1}, \"meta\": 5}\n"
      "{\"text\": \"x\", \"meta\": {\"a\": }}\n"
      "{\"text\": \"x\", \"meta\": {\"a\": \"\\ud800\"}}\n"
      "{\"text\": \"x\", \"meta\": {\"s p\": \"\\u00e9\", \"n\": 1.50, \"z\": [true, null]}}\n"
      "{\"text\": \"x\", \"meta\": []}\n"
      "{\"text\": \"x\", \"meta\": \"s\"}\n"
      "{\"text\": \"x\", \"other\": [1, 2, {\"x\": \"y\\\"]\"}], \"label\": \"l\"}\n"
      "{\"text\": \"x\", \"other\": [1, 2}\n"
      "{\"text\": \"x\", \"other\": [1, 2]]}\n"
      "{\"text\": \"x\", \"other\": {\"a\": 1]}\n"
      "{\"text\": \"x\", \"other\": [\"\\\n"
      "{\"te\\u0078t\": \"escaped key\"}\n"
      "{\"text\": \"x\",}\n"
      "{,\"text\": \"x\"}\n"
      "{\"text\" \"x\"}\n"
      "{\"text\": \"x\"}}\n"
      "{\"text\": \"x\"} {}\n"
      "{\"text\": tru}\n"
      "{\"text\": \"x\", \"b\": true, \"c\": false, \"d\": null, \"e\": nul}\n"
      "{\"text\": \"x\", \"b\": truex}\n"
      "{\"text\": \"x\", \"n\": -}\n"
      "{\"text\": \"x\", \"n\": 1.}\n"
      "{\"text\": \"x\", \"n\": 1e}\n"
      "{\"text\": \"x\", \"n\": 1e+}\n"
      "{\"text\": \"x\", \"n\": .5}\n"
      "{\"text\": \"x\", \"n\": +5}\n"
      "{\"text\": \"x\\/y\\b\\f\\n\\r\\t\\\\\\\"\"}\n"
      "{\"text\": \"x\\q\"}\n"
      "{\"text\": \"x\\u12\"}\n"
      "{\"text\": \"x\\u12G4\"}\n"
      "{\"text\": \"x\\uABCD\\uabcd\"}\n"
      "  {\"text\": \"white space around\"}  \t\r\n"
      "{ \"text\" : \"inner\" , \"label\" : \"spaces\" }\n"
      "{}\n"
      "{ }\n"
      "[]\n"
      "\"string\"\n"
      "42\n"
      "{\n"
      "}\n"
      "{\"text\": \"x\", \"label\": null, \"speaker\": \"User\", \"split\": \"VAL\", \"dialogue_id\": null, "
      "\"turn\": null}\n"
      "{\"text\": \"x\", \"split\": \"Validation\", \"speaker\": \"SYSTEM\"}\n"
      "{\"text\": \"x\"\n"
      "{\"text\": \"unterminated\n"
      "{\"text\": \"x\\\n"
      "{\"text\": \"nul \0 byte\"}\n"
      "{\"text\": \"x\"}\0\n"
      "{\"text\": \"last\"}";
  test_compare_jsonl_paths(lines, sizeof lines - 1, "tricky.jsonl");

  /* Nesting past the fast path's depth limit, and past jansson's. */
  for (int depth = 1000; depth <= 2100; depth += 1100) {
    test_strbuf b = {0};
    test_sb_add(&b, "{\"text\": \"deep\", \"other\": ");
    for (int i = 0; i < depth; i++) test_sb_add(&b, "[");
    for (int i = 0; i < depth; i++) test_sb_add(&b, "]");
    test_sb_add(&b, "}\n{\"text\": \"after\"}\n");
    test_compare_jsonl_paths(b.s, b.len, "deep.jsonl");
    free(b.s);
  }
}

/* A stream that fails on read (a directory) is a fatal error (-2) for the
 * streaming formats, and an open failure for the JSON documents. */
static void test_read_error(void) {
  const char *formats[] = {"jsonl", "csv", "banking77", "clinc150", "sgd"};
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
    FILE *fp = fopen(FIXTURES, "r");
    if (!fp) {
      printf("skip read-error test: cannot fopen a directory here\n");
      return;
    }
    char *t = transcript_fp(formats[i], fp, "dir", NULL);
    if (strcmp(formats[i], "jsonl") == 0) CHECK_STR_EQ(t, "1?-!dir:1: read error\n");
    else CHECK(strncmp(t, "open!dir", 8) == 0);
    free(t);
    fclose(fp);
  }
}

/* A stream that delivers data[0, fail_at) and then fails. */
typedef struct {
  const char *data;
  size_t pos, fail_at;
} flaky;

static ssize_t flaky_read(void *cookie, char *buf, size_t n) {
  flaky *f = cookie;
  if (f->pos >= f->fail_at) {
    errno = EIO;
    return -1;
  }
  if (n > f->fail_at - f->pos) n = f->fail_at - f->pos;
  memcpy(buf, f->data + f->pos, n);
  f->pos += n;
  return (ssize_t)n;
}

static char *transcript_flaky(const char *format, const char *data, size_t fail_at) {
  flaky f = {data, 0, fail_at};
  FILE *fp = fopencookie(&f, "r", (cookie_io_functions_t){.read = flaky_read});
  if (!fp) {
    TEST_FAIL_("fopencookie: %s", strerror(errno));
    return strdup("");
  }
  char *t = transcript_fp(format, fp, "flaky", &(finch_format_opts){.text_col = "text", .label_col = "1"});
  fclose(fp);
  return t;
}

/* A read error in mid-stream ends the input with -2 (and then 0), after the
 * records read before it; the line cut short by it is not reported as bad. */
static void test_read_error_midway(void) {
  const char *jsonl = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\"}\n";
  char *t = transcript_flaky("jsonl", jsonl, 20);
  CHECK_STR_EQ(t, "1:a|-|-|-|-|-|-\n2?-!flaky:2: read error\n");
  free(t);
  t = transcript_flaky("jsonl", jsonl, 28);
  CHECK_STR_EQ(t, "1:a|-|-|-|-|-|-\n2:b|-|-|-|-|-|-\n3?-!flaky:3: read error\n");
  free(t);
  const char *csv = "text,category\na,b\nc,d\n";
  t = transcript_flaky("banking77", csv, 20);
  CHECK_STR_EQ(t, "2:a|b|-|-|-|-|-\n3?-!flaky:3: read error\n");
  free(t);
  t = transcript_flaky("csv", csv, 20);
  CHECK_STR_EQ(t, "2:a|b|-|-|-|-|-\n3?-!flaky:3: read error\n");
  free(t);
}

static void test_clinc150(void) {
  const char *domains = FIXTURES "/clinc_domains.json";
  EXPECT("clinc150", "clinc_ok.json", NULL,
         "1:how much is in checking|balance|train|-|-|-|-\n"
         "2:freeze my card|freeze_account|train|-|-|-|-\n"
         "3:play jazz|play_music|train|-|-|-|-\n"
         "4:what is my balance|balance|dev|-|-|-|-\n"
         "5:tell me a joke about dogs|oos|train|-|-|-|-\n"
         "6:how tall is everest|oos|dev|-|-|-|-\n"
         "7:routing number please|routing|test|-|-|-|-\n");
  EXPECT("clinc150", "clinc_ok.json", (&(finch_format_opts){.domains_path = domains}),
         "1:how much is in checking|balance|train|-|-|-|{\"domain\":\"banking\"}\n"
         "2:freeze my card|freeze_account|train|-|-|-|{\"domain\":\"banking\"}\n"
         "3:play jazz|play_music|train|-|-|-|-\n"
         "4:what is my balance|balance|dev|-|-|-|{\"domain\":\"banking\"}\n"
         "5:tell me a joke about dogs|oos|train|-|-|-|{\"domain\":\"oos\"}\n"
         "6:how tall is everest|oos|dev|-|-|-|{\"domain\":\"oos\"}\n"
         "7:routing number please|routing|test|-|-|-|{\"domain\":\"banking\"}\n");
  EXPECT("clinc150", "clinc_bad.json", NULL,
         "1:ok|balance|train|-|-|-|-\n"
         "2!record!clinc_bad.json: record 2 (train[1]): expected [text, intent]\n"
         "3!record!clinc_bad.json: record 3 (train[2]): expected [text, intent]\n"
         "4!record!clinc_bad.json: record 4 (train[3]): expected [text, intent]\n"
         "5!record!clinc_bad.json: record 5 (train[4]): expected [text, intent]\n"
         "6:fine|transfer|train|-|-|-|-\n"
         "7!record!clinc_bad.json: record 7 (val[0]): expected [text, intent]\n");
  EXPECT("clinc150", "clinc_invalid.json", NULL,
         "open!clinc_invalid.json:2: invalid JSON: ']' expected near '\"d\"' (column 10)\n");
  EXPECT("clinc150", "clinc_not_lists.json", NULL,
         "open!clinc_not_lists.json: 'train' is not a list of [text, intent]\n");
  EXPECT("clinc150", "clinc_no_lists.json", NULL,
         "open!clinc_no_lists.json: none of the CLINC150 lists train, val, test, oos_train, oos_val, "
         "oos_test\n");
  EXPECT("clinc150", "sgd_ok.json", NULL,
         "open!sgd_ok.json: expected a JSON object of train, val, test, oos_* lists\n");
  EXPECT("clinc150", "clinc_ok.json", (&(finch_format_opts){.domains_path = FIXTURES "/no-such.json"}),
         "open!cannot open " FIXTURES "/no-such.json: No such file or directory\n");
  EXPECT("clinc150", "clinc_ok.json", (&(finch_format_opts){.domains_path = FIXTURES "/clinc_invalid.json"}),
         "open!" FIXTURES "/clinc_invalid.json:2: invalid JSON: ']' expected near '\"d\"' (column 10)\n");
  EXPECT("clinc150", "clinc_ok.json", (&(finch_format_opts){.domains_path = FIXTURES "/clinc_bad.json"}),
         "open!" FIXTURES "/clinc_bad.json: domain 'train': intent 0 is not a string\n");
}

static void test_sgd(void) {
  EXPECT("sgd", "sgd_ok.json", NULL,
         "1:What's my balance?|CheckBalance|-|1_00001|0|user|{\"service\":\"Banks_1\"}\n"
         "2:Checking or savings?|-|-|1_00001|1|system|{\"service\":\"Banks_1\"}\n"
         /* INFORM_INTENT outranks a NEGATE_INTENT frame listed first. */
         "3:No, thanks. I want to transfer money.|TransferMoney|-|1_00001|2|user|{\"service\":\"Banks_1\"}\n"
         "4:Done.|-|-|1_00001|3|system|{\"service\":\"Banks_1\"}\n"
         /* A changed state outranks actions with an unchanged state. */
         "5:Find me a movie.|FindMovies|-|1_00001|4|user|{\"service\":\"Media_1\"}\n"
         /* Nothing tells the frames apart: the first. */
         "6:Hm.|TransferMoney|-|1_00001|5|user|{\"service\":\"Banks_1\"}\n"
         "7:Bye.|NONE|-|2_00001|0|user|{\"service\":\"Music_1\"}\n"
         "8:Goodbye.|-|-|2_00001|1|system|-\n");
  EXPECT("sgd", "sgd_single.json", NULL,
         "1:Hi|CheckBalance|-|7|0|user|{\"service\":\"Banks_1\"}\n"
         "2:Hello|-|-|7|1|system|{\"service\":\"Banks_1\"}\n");
  EXPECT("sgd", "sgd_bad.json", NULL,
         "1!text!sgd_bad.json: dialogue b1 turn 0: no utterance\n"
         "2!text!sgd_bad.json: dialogue b1 turn 1: utterance is not a string\n"
         "3!speaker!sgd_bad.json: dialogue b1 turn 2: unknown speaker 'BOT'\n"
         "4!frames!sgd_bad.json: dialogue b1 turn 3: frames is not a list\n"
         "5!label!sgd_bad.json: dialogue b1 turn 4: frame 0 has no state.active_intent\n"
         "6:fine|CheckBalance|-|b1|5|user|{\"service\":\"Banks_1\"}\n"
         "7!record!sgd_bad.json: dialogue b1 turn 6: expected an object\n"
         "8!record!sgd_bad.json: dialogue #2: expected an object\n"
         "9!record!sgd_bad.json: dialogue b3: no list of turns\n"
         "10!record!sgd_bad.json: dialogue #4: no dialogue_id (a string)\n"
         "11:still read|-|-|b5|0|system|{\"service\":\"Banks_1\"}\n"
         /* A user turn without frames has no label, and is no error. */
         "12:no frames, no label|-|-|b5|1|user|-\n");
  EXPECT("sgd", "sgd_not_dialogues.json", NULL,
         "open!sgd_not_dialogues.json: expected a list of SGD dialogues or one dialogue object\n");
  EXPECT("sgd", "clinc_invalid.json", NULL,
         "open!clinc_invalid.json:2: invalid JSON: ']' expected near '\"d\"' (column 10)\n");
}

int main(void) {
  test_open_errors();
  test_banking77();
  test_csv();
  test_csv_label_detection();
  test_jsonl();
  test_jsonl_paths_agree();
  test_long_lines();
  test_read_error();
  test_read_error_midway();
  test_clinc150();
  test_sgd();
  TEST_DONE();
}
