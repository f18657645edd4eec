/* core/source on local files, standard input and file:// URLs: plain and
 * gzip bodies (several members, corrupt, truncated, trailing junk), errors
 * naming the path, and the lineage each source reports. Every body read is
 * compared byte for byte, and every SHA-256 against one computed here. HTTP
 * is in test_source_http.c. */
#include "core/source.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/core/source_bodies.h"
#include "tests/test.h"

static test_source_bodies bodies;

static char tmp_dir[4096];

static void tmp_file(char *buf, size_t size, const char *name) { snprintf(buf, size, "%s/%s", tmp_dir, name); }

static void test_file_plain(void) {
  char path[4200], want[FINCH_SHA256_HEX_LEN], sha[FINCH_SHA256_HEX_LEN];
  const char text[] = "text,category\nwhere is my card,card_arrival\n";
  tmp_file(path, sizeof path, "plain.csv");
  test_write_bytes(path, text, strlen(text));
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, path, NULL, &err), FINCH_OK);
  if (!s) return;
  char *real = realpath(path, NULL);
  CHECK_STR_EQ(finch_source_lineage(s), real);
  free(real);
  CHECK_STR_EQ(finch_source_name(s), path);
  CHECK_INT_EQ(finch_source_size(s), strlen(text));
  CHECK_INT_EQ(finch_source_raw_bytes(s), 0);
  char line[128];
  CHECK(fgets(line, sizeof line, finch_source_file(s)) != NULL);
  CHECK_STR_EQ(line, "text,category\n");
  size_t len;
  unsigned char *rest = test_read_all(finch_source_file(s), &len, NULL);
  CHECK_STR_EQ((char *)rest, "where is my card,card_arrival\n");
  CHECK_INT_EQ(finch_source_raw_bytes(s), strlen(text));
  CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
  test_sha_of(text, strlen(text), want);
  CHECK_STR_EQ(sha, want);
  free(rest);

  /* A read that stops early leaves no hash. */
  CHECK_INT_EQ(finch_source_open(&s, path, NULL, &err), FINCH_OK);
  if (s) {
    CHECK(getc(finch_source_file(s)) == 't');
    strcpy(sha, "x");
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    CHECK_STR_EQ(sha, "");
  }

  /* Empty, and one byte that starts like gzip. */
  unsigned char *body;
  tmp_file(path, sizeof path, "empty.txt");
  test_write_bytes(path, "", 0);
  CHECK_INT_EQ(test_fetch(path, NULL, &body, &len, sha, &err), FINCH_OK);
  CHECK_INT_EQ(len, 0);
  test_sha_of("", 0, want);
  CHECK_STR_EQ(sha, want);
  free(body);
  tmp_file(path, sizeof path, "one.txt");
  test_write_bytes(path, "\x1f", 1);
  CHECK_INT_EQ(test_fetch(path, NULL, &body, &len, sha, &err), FINCH_OK);
  CHECK(len == 1 && body[0] == 0x1f);
  free(body);
}

static void test_file_gzip(void) {
  char path[4200], want[FINCH_SHA256_HEX_LEN], sha[FINCH_SHA256_HEX_LEN];
  /* Named .txt: detected by its magic. Two members, as `cat a.gz b.gz`. */
  tmp_file(path, sizeof path, "compressed.txt");
  test_write_bytes(path, bodies.gz, bodies.gz_len);
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, path, NULL, &err), FINCH_OK);
  if (s) {
    CHECK_INT_EQ(finch_source_size(s), bodies.gz_len);
    size_t len;
    int bad;
    unsigned char *body = test_read_all(finch_source_file(s), &len, &bad);
    CHECK(!bad);
    CHECK_INT_EQ(len, bodies.gz_text_len);
    CHECK(len == bodies.gz_text_len && memcmp(body, bodies.gz_text, len) == 0);
    CHECK_INT_EQ(finch_source_raw_bytes(s), bodies.gz_len);
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    test_sha_of(bodies.gz, bodies.gz_len, want);
    CHECK_STR_EQ(sha, want);
    free(body);
  }

  /* A large member read through small reads. */
  size_t glen;
  unsigned char *g = test_gzip(bodies.big, 1000000, &glen);
  tmp_file(path, sizeof path, "big.bin");
  test_write_bytes(path, g, glen);
  free(g);
  CHECK_INT_EQ(finch_source_open(&s, path, NULL, &err), FINCH_OK);
  if (s) {
    size_t pos = 0;
    int c, same = 1;
    while ((c = getc(finch_source_file(s))) != EOF) {
      if (pos >= 1000000 || c != bodies.big[pos]) same = 0;
      pos++;
    }
    CHECK_INT_EQ(pos, 1000000);
    CHECK(same);
    CHECK_INT_EQ(finch_source_close(s, NULL, &err), FINCH_OK);
  }

  /* Corrupt: flip bytes in the deflate data. */
  unsigned char *bad = malloc(bodies.gz_len);
  memcpy(bad, bodies.gz, bodies.gz_len);
  for (size_t i = 20; i < 60; i++) bad[i] ^= 0x5a;
  tmp_file(path, sizeof path, "corrupt.csv");
  test_write_bytes(path, bad, bodies.gz_len);
  CHECK_INT_EQ(finch_source_open(&s, path, NULL, &err), FINCH_OK);
  if (s) {
    size_t len;
    int ferr;
    unsigned char *body = test_read_all(finch_source_file(s), &len, &ferr);
    CHECK(ferr);
    strcpy(sha, "x");
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "corrupt gzip data: ");
    CHECK_STR_EQ(sha, "");
    free(body);
  }

  /* Truncated: the member never ends. */
  tmp_file(path, sizeof path, "truncated.gz");
  test_write_bytes(path, bodies.gz, 100);
  unsigned char *body;
  size_t len;
  CHECK_INT_EQ(test_fetch(path, NULL, &body, &len, sha, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "corrupt gzip data: unexpected end of input");
  CHECK_STR_EQ(sha, "");
  free(body);

  /* Garbage after a complete member. */
  memcpy(bad, bodies.gz, bodies.gz_len);
  unsigned char *trail = test_concat(bodies.gz, bodies.gz_len, "junk", 4);
  test_write_bytes(path, trail, bodies.gz_len + 4);
  CHECK_INT_EQ(test_fetch(path, NULL, &body, &len, sha, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "corrupt gzip data");
  free(body);
  free(trail);
  free(bad);
}

static void test_file_errors(void) {
  char path[4200];
  finch_err err = {0};
  finch_source *s = (finch_source *)&err; /* must be reset to NULL */
  tmp_file(path, sizeof path, "no-such-file.csv");
  finch_status st = finch_source_open(&s, path, NULL, &err);
  CHECK(st == FINCH_ENOTFOUND || st == FINCH_EIO);
  CHECK(s == NULL);
  char want[4300];
  snprintf(want, sizeof want, "%s: %s", path, strerror(ENOENT));
  CHECK_STR_EQ(err.msg, want);

  CHECK_INT_EQ(finch_source_open(&s, tmp_dir, NULL, &err), FINCH_EIO); /* a directory */
  CHECK_CONTAINS(err.msg, strerror(EISDIR));

  CHECK_INT_EQ(finch_source_open(&s, "ftp://example.com/data.csv", NULL, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "'ftp'");
  CHECK_INT_EQ(finch_source_open(&s, "", NULL, &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_source_open(&s, "file://otherhost/x", NULL, &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_source_open(&s, "file:///tmp/bad%zzescape", NULL, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "percent");
}

static void test_file_url(void) {
  char path[4200], url[8600], sha[FINCH_SHA256_HEX_LEN];
  tmp_file(path, sizeof path, "with space%.txt");
  test_write_bytes(path, test_plain_body, strlen(test_plain_body));
  char *real = realpath(path, NULL);
  if (!real) {
    TEST_FAIL_("realpath %s", path);
    return;
  }
  /* Percent-encode everything but unreserved characters and '/'. */
  size_t j = (size_t)snprintf(url, sizeof url, "file://");
  for (const char *p = real; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("/-._~", c))
      url[j++] = (char)c;
    else
      j += (size_t)sprintf(url + j, "%%%02X", c);
  }
  url[j] = '\0';
  CHECK_CONTAINS(url, "with%20space%25.txt");
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, url, NULL, &err), FINCH_OK);
  if (s) {
    CHECK_STR_EQ(finch_source_lineage(s), real);
    CHECK_STR_EQ(finch_source_name(s), url);
    size_t len;
    unsigned char *body = test_read_all(finch_source_file(s), &len, NULL);
    CHECK_STR_EQ((char *)body, test_plain_body);
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    free(body);
  }
  /* file://localhost/ is this host too. */
  char url2[8700];
  snprintf(url2, sizeof url2, "file://localhost%s", url + 7);
  CHECK_INT_EQ(finch_source_open(&s, url2, NULL, &err), FINCH_OK);
  if (s) finch_source_close(s, NULL, &err);
  /* A missing file through a URL names the decoded path. */
  CHECK_INT_EQ(finch_source_open(&s, "file:///no/such%20dir/x.csv", NULL, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "/no/such dir/x.csv: ");
  free(real);
}

/* "-": standard input, replaced for the test by a pipe holding gzip data. */
static void test_stdin(void) {
  int saved = dup(STDIN_FILENO), p[2];
  if (saved < 0 || pipe(p) != 0) {
    TEST_FAIL_("pipe: %s", strerror(errno));
    return;
  }
  size_t glen;
  unsigned char *g = test_gzip(test_plain_body, strlen(test_plain_body), &glen);
  CHECK(glen < 4096 && write(p[1], g, glen) == (ssize_t)glen); /* fits the pipe buffer */
  close(p[1]);
  dup2(p[0], STDIN_FILENO);
  close(p[0]);
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, "-", NULL, &err), FINCH_OK);
  if (s) {
    CHECK_STR_EQ(finch_source_lineage(s), "<stdin>");
    CHECK_INT_EQ(finch_source_size(s), -1);
    size_t len;
    unsigned char *body = test_read_all(finch_source_file(s), &len, NULL);
    CHECK_STR_EQ((char *)body, test_plain_body);
    char sha[FINCH_SHA256_HEX_LEN], want[FINCH_SHA256_HEX_LEN];
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    test_sha_of(g, glen, want);
    CHECK_STR_EQ(sha, want);
    free(body);
  }
  CHECK(fcntl(STDIN_FILENO, F_GETFD) != -1); /* close leaves standard input open */
  dup2(saved, STDIN_FILENO);
  close(saved);
  free(g);
}

static void remove_tmp_dir(void) {
  static const char *const names[] = {"plain.csv",   "empty.txt",    "one.txt",        "compressed.txt",
                                      "big.bin",     "corrupt.csv",  "truncated.gz",   "with space%.txt"};
  char path[4200];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    tmp_file(path, sizeof path, names[i]);
    remove(path);
  }
  rmdir(tmp_dir);
}
int main(void) {
  const char *dir = getenv("FINCH_TEST_TMP");
  if (!dir || !*dir) dir = "/tmp";
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) TEST_SKIP("cannot create %s", dir);
  snprintf(tmp_dir, sizeof tmp_dir, "%s/test_source.XXXXXX", dir);
  if (!mkdtemp(tmp_dir)) TEST_SKIP("cannot create a directory under %s", dir);
  test_bodies_make(&bodies);

  test_file_plain();
  test_file_gzip();
  test_file_errors();
  test_file_url();
  test_stdin();

  test_bodies_free(&bodies);
  remove_tmp_dir();
  TEST_DONE();
}
