/* core/csv: the RFC 4180 reader on well-formed and malformed input.
 *
 * Most cases write a small file, read it to the end and compare a transcript
 * of every call: "L#N:f1|f2" for a record of N fields starting on line L,
 * "L!message" for a reject (the message without its "name:line: " prefix). */
#include "core/csv.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test.h"

static char tmp_path[4096];

static FILE *write_temp(const char *data, size_t len) {
  FILE *fp = fopen(tmp_path, "w+b");
  if (!fp) {
    TEST_FAIL_("cannot create %s", tmp_path);
    return NULL;
  }
  if (len && fwrite(data, 1, len, fp) != len) TEST_FAIL_("short write to %s", tmp_path);
  rewind(fp);
  return fp;
}

/* A growing string for transcripts. */
typedef struct {
  char *s;
  size_t len, cap;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->s = realloc(b->s, b->cap);
    if (!b->s) abort();
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Reads data to the end and returns the transcript (caller frees). */
static char *transcript_n(const char *data, size_t len) {
  strbuf out = {0};
  sb_add(&out, "", 0);
  FILE *fp = write_temp(data, len);
  if (!fp) return out.s;
  finch_csv *r = finch_csv_open(fp, tmp_path);
  CHECK(r != NULL);
  char **f;
  size_t nf;
  finch_err err = {0};
  int rc, calls = 0;
  while ((rc = finch_csv_next(r, &f, &nf, &err)) != 0) {
    if (++calls > 1000) {
      TEST_FAIL_("reader does not reach end of input");
      break;
    }
    size_t line = finch_csv_line(r);
    if (rc == 1) {
      sb_printf(&out, "%zu#%zu:", line, nf);
      for (size_t i = 0; i < nf; i++) {
        if (i) sb_add(&out, "|", 1);
        sb_add(&out, f[i], strlen(f[i]));
      }
    } else {
      CHECK_INT_EQ(rc, -1);
      CHECK(f == NULL && nf == 0);
      char prefix[4200];
      snprintf(prefix, sizeof prefix, "%s:%zu: ", tmp_path, line);
      int prefixed = strncmp(err.msg, prefix, strlen(prefix)) == 0;
      if (!prefixed) TEST_FAIL_("error \"%s\" does not start with \"%s\"", err.msg, prefix);
      sb_printf(&out, "%zu!%s", line, err.msg + (prefixed ? strlen(prefix) : 0));
    }
    sb_add(&out, "\n", 1);
  }
  /* End of input is sticky. */
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 0);
  finch_csv_close(r);
  fclose(fp);
  return out.s;
}

#define EXPECT_CSV(input, expected)                                                                \
  do {                                                                                             \
    char *got_ = transcript_n((input), sizeof(input) - 1);                                         \
    CHECK_STR_EQ(got_, (expected));                                                                \
    free(got_);                                                                                    \
  } while (0)

static void test_well_formed(void) {
  EXPECT_CSV("", "");
  EXPECT_CSV("a,b,c\n1,2,3\n", "1#3:a|b|c\n2#3:1|2|3\n");
  /* No newline after the last record. */
  EXPECT_CSV("a,b\nc,d", "1#2:a|b\n2#2:c|d\n");
  /* CRLF record ends; a lone CR inside an unquoted field is data. */
  EXPECT_CSV("a,b\r\nc,d\r\n", "1#2:a|b\n2#2:c|d\n");
  EXPECT_CSV("a\rb,c\n", "1#2:a\rb|c\n");
  /* Quoted commas and doubled quotes. */
  EXPECT_CSV("\"a,b\",\"say \"\"hi\"\"\",\"\"\"\"\n", "1#3:a,b|say \"hi\"|\"\n");
  /* Empty fields, quoted and not; an empty line is one empty field. */
  EXPECT_CSV(",,\n\"\",x,\n\nend\n", "1#3:||\n2#3:|x|\n3#1:\n4#1:end\n");
  EXPECT_CSV("\n", "1#1:\n");
  /* UTF-8 passes through byte for byte, quoted or not. */
  EXPECT_CSV("café,\"日本語, テキスト\",😀\n", "1#3:café|日本語, テキスト|😀\n");
  /* A UTF-8 byte-order mark at the start is not part of the first field. */
  EXPECT_CSV("\xEF\xBB\xBF\"text\",label\nx,y\n", "1#2:text|label\n2#2:x|y\n");
}

static void test_multiline_fields(void) {
  /* LF and CRLF inside quotes are data; the next record's line number counts
   * them, and a record's number is the line it starts on. */
  EXPECT_CSV("x,\"line1\nline2\"\ny,z\n\"p\r\nq\r\n\",r\ns,t\n",
             "1#2:x|line1\nline2\n3#2:y|z\n4#2:p\r\nq\r\n|r\n7#2:s|t\n");
  EXPECT_CSV("\"\n\n\n\"\nlast", "1#1:\n\n\n\n5#1:last\n");
}

static void test_malformed(void) {
  /* A quote inside an unquoted field. */
  EXPECT_CSV("ok,1\nbad\"x,2\nnext,3\n",
             "1#2:ok|1\n2!unexpected quote in unquoted field 1\n3#2:next|3\n");
  /* Garbage after a closing quote, including a lone CR. */
  EXPECT_CSV("a,\"b\"c,d\ne,f\n",
             "1!unexpected character after closing quote in field 2\n2#2:e|f\n");
  EXPECT_CSV("\"a\"\rb\nc\n", "1!unexpected character after closing quote in field 1\n2#1:c\n");
  EXPECT_CSV("1,\"He said \"hi\" to me\",greeting\n2,fine,x\n",
             "1!unexpected character after closing quote in field 2\n2#3:2|fine|x\n");
  /* An error on a later line of a multi-line record: resynchronise after the
   * line the error was found on, and keep counting lines. */
  EXPECT_CSV("\"a\nb\"x,1\nc,2\n",
             "1!unexpected character after closing quote in field 1\n3#2:c|2\n");
  /* Unterminated quote: reading resumes on the line after the bad record's
   * first line, so one stray quote does not swallow the rest of the file. */
  EXPECT_CSV("a,b\nc,\"oops\nd,e\nf,g\n",
             "1#2:a|b\n2!unterminated quoted field (field 2)\n3#2:d|e\n4#2:f|g\n");
  EXPECT_CSV("a,\"oops", "1!unterminated quoted field (field 2)\n");
  EXPECT_CSV("x\n\"a\r\nb\r\n", "1#1:x\n2!unterminated quoted field (field 1)\n3#1:b\n");
  /* Two stray quotes in a row resynchronise twice. */
  EXPECT_CSV("\"one\n\"two\nthree\n",
             "1!unexpected character after closing quote in field 1\n3#1:three\n");
  /* NUL bytes would silently cut a field. */
  EXPECT_CSV("a\0b,c\nd\n", "1!NUL byte in field 1\n2#1:d\n");
  EXPECT_CSV("\"a\0b\",c\nd\n", "1!NUL byte in field 1\n2#1:d\n");
  /* Malformed records in CRLF files. */
  EXPECT_CSV("a,b\r\nc,d\"\r\ne,f\r\n",
             "1#2:a|b\n2!unexpected quote in unquoted field 2\n3#2:e|f\n");
}

static void test_error_record(void) {
  /* The full message names the source and line; err carries FINCH_EFORMAT,
   * and finch_csv_line() reports the bad record's first line. */
  const char data[] = "h1,h2\n\"multi\nline\",x\nbad,\"q\"z\nok,1\n";
  FILE *fp = write_temp(data, sizeof data - 1);
  if (!fp) return;
  finch_csv *r = finch_csv_open(fp, "banking77.csv");
  char **f;
  size_t nf;
  finch_err err = {0};
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK_INT_EQ(finch_csv_line(r), 2);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), -1);
  CHECK_INT_EQ(err.code, FINCH_EFORMAT);
  CHECK_STR_EQ(err.msg, "banking77.csv:4: unexpected character after closing quote in field 2");
  CHECK_INT_EQ(finch_csv_line(r), 4);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK_INT_EQ(finch_csv_line(r), 5);
  CHECK_STR_EQ(f[0], "ok");
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 0);
  finch_csv_close(r);
  fclose(fp);
}

/* Many lines, so records and quoted fields straddle the reader's buffer
 * boundaries; every field and line number is checked. */
static void test_large_input(void) {
  strbuf in = {0};
  const size_t n = 100000;
  for (size_t i = 0; i < n; i++) {
    if (i % 3 == 0)
      sb_printf(&in, "%zu,\"row %zu, \"\"quoted\"\"\nsecond line\"\n", i, i);
    else
      sb_printf(&in, "%zu,row %zu\r\n", i, i);
  }
  FILE *fp = write_temp(in.s, in.len);
  free(in.s);
  if (!fp) return;
  finch_csv *r = finch_csv_open(fp, "big.csv");
  char **f;
  size_t nf, line = 1, bad = 0;
  finch_err err = {0};
  for (size_t i = 0; i < n; i++) {
    char want[128];
    if (finch_csv_next(r, &f, &nf, &err) != 1 || nf != 2) {
      TEST_FAIL_("record %zu: not read (%s)", i, err.msg);
      bad++;
      break;
    }
    if (strtoull(f[0], NULL, 10) != i || finch_csv_line(r) != line) bad++;
    if (i % 3 == 0) {
      snprintf(want, sizeof want, "row %zu, \"quoted\"\nsecond line", i);
      line += 2;
    } else {
      snprintf(want, sizeof want, "row %zu", i);
      line += 1;
    }
    if (strcmp(f[1], want) != 0) bad++;
  }
  CHECK_INT_EQ(bad, 0);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 0);
  finch_csv_close(r);
  fclose(fp);
}

/* No fixed limits: a 3 MB field, a 20000-field record, and an unterminated
 * quote followed by more than a buffer's worth of good records. */
static void test_no_limits(void) {
  strbuf in = {0};
  const size_t big = 3u << 20;
  char *field = malloc(big + 1);
  memset(field, 'x', big);
  field[big] = '\0';
  sb_add(&in, "\"", 1);
  sb_add(&in, field, big);
  sb_add(&in, "\",y\n", 4);
  for (int i = 0; i < 20000; i++) sb_add(&in, i ? ",f" : "f", i ? 2 : 1);
  sb_add(&in, "\nlast,\"stray\n", 13);
  const size_t tail = 20000;
  for (size_t i = 0; i < tail; i++) sb_printf(&in, "good %zu,after the stray quote\n", i);
  FILE *fp = write_temp(in.s, in.len);
  free(in.s);
  if (!fp) {
    free(field);
    return;
  }
  finch_csv *r = finch_csv_open(fp, "limits.csv");
  char **f;
  size_t nf;
  finch_err err = {0};
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK_INT_EQ(nf, 2);
  CHECK(nf == 2 && strcmp(f[0], field) == 0 && strcmp(f[1], "y") == 0);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK_INT_EQ(nf, 20000);
  CHECK(nf == 20000 && strcmp(f[19999], "f") == 0);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), -1);
  CHECK_STR_EQ(err.msg, "limits.csv:3: unterminated quoted field (field 2)");
  size_t good = 0;
  for (size_t i = 0; i < tail; i++) {
    char want[64];
    snprintf(want, sizeof want, "good %zu", i);
    if (finch_csv_next(r, &f, &nf, &err) == 1 && nf == 2 && strcmp(f[0], want) == 0 &&
        finch_csv_line(r) == 4 + i)
      good++;
  }
  CHECK_INT_EQ(good, tail);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 0);
  finch_csv_close(r);
  fclose(fp);
  free(field);
}

/* A pipe delivers the input in small pieces; the BOM check and the reader
 * must not depend on one read returning everything. */
static void test_pipe(void) {
  int fds[2];
  if (pipe(fds) != 0) {
    TEST_FAIL_("pipe failed");
    return;
  }
  const char data[] = "\xEF\xBB\xBF" "a,\"b\nc\"\n1,2";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    for (size_t i = 0; i < sizeof data - 1; i++) {
      if (write(fds[1], data + i, 1) != 1) _exit(1);
      usleep(1000);
    }
    _exit(0);
  }
  close(fds[1]);
  FILE *fp = fdopen(fds[0], "rb");
  setvbuf(fp, NULL, _IONBF, 0);
  finch_csv *r = finch_csv_open(fp, "<stdin>");
  char **f;
  size_t nf;
  finch_err err = {0};
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK(nf == 2 && strcmp(f[0], "a") == 0 && strcmp(f[1], "b\nc") == 0);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 1);
  CHECK_INT_EQ(finch_csv_line(r), 3);
  CHECK(nf == 2 && strcmp(f[0], "1") == 0 && strcmp(f[1], "2") == 0);
  CHECK_INT_EQ(finch_csv_next(r, &f, &nf, &err), 0);
  finch_csv_close(r);
  fclose(fp);
  waitpid(pid, NULL, 0);
}

int main(void) {
  const char *dir = getenv("FINCH_TEST_TMP");
  if (!dir || !*dir) dir = "/tmp";
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) TEST_SKIP("cannot create %s", dir);
  snprintf(tmp_path, sizeof tmp_path, "%s/test_csv.%ld.csv", dir, (long)getpid());

  test_well_formed();
  test_multiline_fields();
  test_malformed();
  test_error_record();
  test_large_input();
  test_no_limits();
  test_pipe();

  remove(tmp_path);
  TEST_DONE();
}
