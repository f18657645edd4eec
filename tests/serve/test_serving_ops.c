/* Operating the intent server (serve/serve.h), over real HTTP on loopback:
 * access logs without raw text, SIGHUP reloads and SIGTERM draining of
 * `finch serve`, and in database mode the admin role on /metrics and POST
 * /v1/admin/reload and the webhook backlog gauge. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve/auth.h"
#include "serve/serve.h"
#include "serve/webhook.h"
#include "tests/dbtest.h"
#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"
#include "tests/serve/serving_fixture.h"

/* --- access logs ---------------------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
  if (b) b[got] = '\0';
  fclose(f);
  return b;
}

static const char secret_text[] = "Zebrafinch secret my card 4111 1111 1111 1111 has not arrived";

/* Checks each line of a log is a JSON object with the fields; returns the
 * number of /v1/intent lines. */
static int check_log_lines(const char *log, int want_text) {
  int n = 0;
  char *copy = strdup(log), *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (!j) {
      TEST_FAIL_("log line is not JSON (%s): %s", je.text, line);
      continue;
    }
    const char *path = json_string_value(json_object_get(j, "path"));
    if (!json_string_value(json_object_get(j, "ts")) || !json_string_value(json_object_get(j, "request_id")) ||
        !json_is_integer(json_object_get(j, "status")) || !json_is_number(json_object_get(j, "latency_ms")) ||
        !path)
      TEST_FAIL_("log line lacks a field: %s", line);
    if (path && strcmp(path, "/v1/intent") == 0 && json_integer_value(json_object_get(j, "status")) == 200) {
      n++;
      CHECK_STR_EQ(json_string_value(json_object_get(j, "engine")), "model");
      CHECK_STR_EQ(json_string_value(json_object_get(j, "intent")), "card_arrival");
      CHECK(json_is_number(json_object_get(j, "confidence")));
      CHECK_INT_EQ(json_integer_value(json_object_get(j, "batch")), 1);
      const char *text = json_string_value(json_object_get(j, "text"));
      if (want_text) {
        CHECK_CONTAINS(text, "secret my card");
        if (text && strstr(text, "4111")) TEST_FAIL_("the card number is in the log: %s", text);
      } else if (text) {
        TEST_FAIL_("a text in the log without log_text: %s", line);
      }
    }
    json_decref(j);
  }
  free(copy);
  return n;
}

static void test_access_log(int log_text) {
  char path[4096], name[64];
  snprintf(name, sizeof name, "test_serving.%ld.%d.log", (long)getpid(), log_text);
  fixture_tmp_path(path, sizeof path, name);
  remove(path);
  finch_server *s = sv_start((finch_serve_opts){.access_log = path, .log_text = log_text});
  if (!s) return;
  unsigned port = finch_server_port(s);
  sv_reply r = sv_intent(port, secret_text, "X-Request-Id: logged-1");
  CHECK_INT_EQ(r.status, 200);
  sv_reply_free(&r);
  r = sv_http(NULL, port, "GET", "/healthz", NULL, NULL, NULL);
  sv_reply_free(&r);
  finch_server_stop(s); /* every line is written once stop returns */
  char *log = slurp(path);
  if (!log) {
    TEST_FAIL_("no access log at %s", path);
    return;
  }
  CHECK_CONTAINS(log, "\"request_id\":\"logged-1\"");
  CHECK_CONTAINS(log, "\"path\":\"/healthz\"");
  if (strstr(log, "Zebrafinch") || strstr(log, "zebrafinch")) {
    if (!log_text) TEST_FAIL_("the raw text is in the access log: %s", log);
  }
  if (strstr(log, "4111")) TEST_FAIL_("the card number is in the access log: %s", log);
  CHECK_INT_EQ(check_log_lines(log, log_text), 1);
  free(log);
  remove(path);
}

/* --- `finch serve`: SIGHUP reloads, SIGTERM drains ------------------------ */

/* Connects to 127.0.0.1:port; -1 on failure. */
static int tcp_connect(unsigned port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

static void test_cli_signals(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || access(bin, X_OK) != 0) {
    fprintf(stderr, "FINCH_BIN not set: skipping the finch serve part\n");
    return;
  }
  char served[4096], tmp[4096], log[4096], name[64];
  snprintf(served, sizeof served, "%s.cli", sv_model_a);
  snprintf(tmp, sizeof tmp, "%s.cli.tmp", sv_model_a);
  snprintf(name, sizeof name, "test_serving.%ld.cli.log", (long)getpid());
  fixture_tmp_path(log, sizeof log, name);
  remove(log);
  if (sv_copy_file(sv_model_a, served) != 0) {
    TEST_FAIL_("cannot copy the model");
    return;
  }
  char *argv[] = {(char *)bin, "serve", "--model", served, "--port", "0", "--no-database", "--access-log", log, NULL};
  api_child c;
  if (api_child_start(&c, argv) != 0) {
    TEST_FAIL_("cannot start %s", bin);
    return;
  }
  char line[1024];
  if (api_child_wait_line(&c, "finch: serving ", line, sizeof line, 60) != 0) {
    TEST_FAIL_("finch serve did not start");
    api_child_kill(&c);
    return;
  }
  const char *colon = strrchr(line, ':');
  unsigned port = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
  sv_reply r = sv_intent(port, secret_text, NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK_CONTAINS(r.body, sv_sha_a);
  sv_reply_free(&r);

  /* SIGHUP: the same path, now holding B. */
  if (sv_copy_file(sv_model_b, tmp) != 0 || rename(tmp, served) != 0) TEST_FAIL_("cannot replace the model");
  kill(c.pid, SIGHUP);
  int reloaded = 0;
  for (int i = 0; i < 500 && !reloaded; i++) {
    r = sv_http(NULL, port, "GET", "/healthz", NULL, NULL, NULL);
    reloaded = r.status == 200 && strstr(r.body, sv_sha_b) != NULL;
    sv_reply_free(&r);
    if (!reloaded) sv_sleep_ms(10);
  }
  if (!reloaded) TEST_FAIL_("SIGHUP did not reload the model");

  /* SIGTERM while a request is in flight: its headers and half its body are
   * in; the rest comes after the signal, and the answer must still come. */
  static const char body[] = "{\"text\": \"my card has not arrived\"}";
  char head[256];
  int hn = snprintf(head, sizeof head,
                    "POST /v1/intent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n%.10s",
                    sizeof body - 1, body);
  int fd = tcp_connect(port);
  if (fd < 0 || write(fd, head, (size_t)hn) != hn) {
    TEST_FAIL_("cannot send the slow request");
  } else {
    sv_sleep_ms(300); /* the server has the headers */
    kill(c.pid, SIGTERM);
    sv_sleep_ms(300); /* the server drains: it accepts no new connection, and waits for this request */
    size_t rest = sizeof body - 1 - 10;
    if (write(fd, body + 10, rest) != (ssize_t)rest) TEST_FAIL_("cannot finish the slow request");
    char resp[2048] = {0};
    size_t got = 0;
    double deadline = sv_now_s() + 10;
    while (got < sizeof resp - 1 && sv_now_s() < deadline) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      if (poll(&p, 1, 100) <= 0) continue;
      ssize_t k = read(fd, resp + got, sizeof resp - 1 - got);
      if (k <= 0) break;
      got += (size_t)k;
      if (strstr(resp, "\r\n\r\n") && strstr(resp, "}")) break;
    }
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0) TEST_FAIL_("the request in flight at SIGTERM got: %.200s", resp);
    CHECK_CONTAINS(resp, sv_sha_b);
  }
  if (fd >= 0) close(fd);
  int status = api_child_wait_exit(&c, 15);
  if (status == -1)
    TEST_FAIL_("finch serve did not exit after SIGTERM");
  else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    TEST_FAIL_("finch serve exited with status %d", status);
  api_child_kill(&c);

  char *text = slurp(log);
  if (!text) {
    TEST_FAIL_("no access log at %s", log);
  } else {
    if (strstr(text, "Zebrafinch") || strstr(text, "zebrafinch") || strstr(text, "4111"))
      TEST_FAIL_("the raw text is in the access log: %s", text);
    CHECK_CONTAINS(text, "\"path\":\"/v1/intent\",\"status\":200");
    free(text);
  }
  remove(log);
  remove(served);
}

/* --- database mode: keys on /metrics and reload, webhook backlog --------- */

static void make_key(PGconn *c, const char *name, finch_role role, char *out) {
  finch_err err;
  char key[FINCH_API_KEY_LEN + 1];
  if (finch_auth_key_create(c, name, role, "test", key, NULL, &err)) {
    TEST_FAIL_("cannot create key: %s", err.msg);
    out[0] = '\0';
    return;
  }
  strcpy(out, key);
}

static void test_database_mode(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char url[4096];
  if (finch_db_resolve_url(url, sizeof url, 1, &err)) {
    TEST_FAIL_("%s", err.msg);
    finch_db_close(db);
    return;
  }
  PGconn *c = finch_db_conn(db);
  char k_admin[64], k_int[64];
  make_key(c, "ops", FINCH_ROLE_ADMIN, k_admin);
  make_key(c, "ivr", FINCH_ROLE_INTEGRATION, k_int);
  /* A subscriber that never answers, and two events for it. */
  if (finch_webhook_subscribe(c, "http://127.0.0.1:9/hook", "s3cret", "*", NULL, &err))
    TEST_FAIL_("subscribe: %s", err.msg);
  int queued = 0;
  for (int i = 0; i < 2; i++)
    if (finch_webhook_emit(c, "intent.classified", "{\"n\": 1}", &queued, &err)) TEST_FAIL_("emit: %s", err.msg);

  char served[4096];
  snprintf(served, sizeof served, "%s.db", sv_model_a);
  sv_copy_file(sv_model_a, served);
  finch_server *s = sv_start((finch_serve_opts){.model_path = served, .conninfo = url, .no_webhook_worker = 1,
                                             .rate_per_s = 1000, .rate_burst = 1000});
  if (!s) {
    finch_db_close(db);
    return;
  }
  unsigned port = finch_server_port(s);
  sv_reply r = sv_http(NULL, port, "GET", "/metrics", NULL, NULL, NULL);
  CHECK_INT_EQ(r.status, 401);
  sv_reply_free(&r);
  r = sv_http(NULL, port, "GET", "/metrics", NULL, NULL, k_int);
  CHECK_INT_EQ(r.status, 403);
  sv_reply_free(&r);
  char *t = sv_scrape(port, k_admin);
  if (t) {
    CHECK_NEAR(sv_metric(t, "finch_webhook_backlog"), 2, 0);
    CHECK(strstr(t, "finch_requests_total{path=\"/metrics\",status=\"401\"}") != NULL);
    free(t);
  }
  r = sv_http(NULL, port, "POST", "/v1/intent", "{\"text\": \"my card has not arrived\"}", NULL, k_int);
  CHECK_INT_EQ(r.status, 200);
  sv_reply_free(&r);

  r = sv_http(NULL, port, "POST", "/v1/admin/reload", NULL, NULL, k_int);
  CHECK_INT_EQ(r.status, 403);
  sv_reply_free(&r);
  if (sv_copy_file(sv_model_b, served) != 0) TEST_FAIL_("cannot replace the model");
  r = sv_http(NULL, port, "POST", "/v1/admin/reload", NULL, NULL, k_admin);
  CHECK_INT_EQ(r.status, 200);
  json_t *j = json_loads(r.body, 0, NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "model")), sv_sha_b);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "previous")), sv_sha_a);
  json_decref(j);
  sv_reply_free(&r);
  r = sv_http(NULL, port, "GET", "/v1/admin/reload", NULL, NULL, k_admin);
  CHECK_INT_EQ(r.status, 405);
  sv_reply_free(&r);
  /* A broken file: 500, B stays. */
  sv_copy_file(sv_model_bad, served);
  r = sv_http(NULL, port, "POST", "/v1/admin/reload", NULL, NULL, k_admin);
  CHECK_INT_EQ(r.status, 500);
  CHECK_CONTAINS(r.body, sv_sha_b);
  sv_reply_free(&r);
  CHECK_STR_EQ(finch_server_model_sha256(s), sv_sha_b);
  finch_server_stop(s);

  /* Without a database the endpoint cannot check keys: 503. */
  s = sv_start((finch_serve_opts){0});
  if (s) {
    r = sv_http(NULL, finch_server_port(s), "POST", "/v1/admin/reload", NULL, NULL, NULL);
    CHECK_INT_EQ(r.status, 503);
    sv_reply_free(&r);
    finch_server_stop(s);
  }
  remove(served);
  finch_db_close(db);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sv_models_make("test_serving_ops");
  finch_err err = {0};
  curl_global_init(CURL_GLOBAL_DEFAULT);

  test_access_log(0);
  test_access_log(1);
  test_cli_signals();
  /* The database part resets its database (tests/dbtest.h); on a database
   * named by FINCH_DATABASE_URL only when allowed. */
  const char *allow = getenv("FINCH_TEST_ALLOW_RESET");
  if (finch_config_load_env(&err) != FINCH_OK)
    TEST_FAIL_("%s", err.msg);
  else if (*finch_config_get("database_url") && !(allow && strcmp(allow, "1") == 0))
    fprintf(stderr, "FINCH_DATABASE_URL is set and FINCH_TEST_ALLOW_RESET is not 1: skipping the database part\n");
  else
    test_database_mode();

  curl_global_cleanup();
  sv_models_remove();
  TEST_DONE();
}
