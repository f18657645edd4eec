/* External teachers: soft labels from an OpenAI-compatible completions
 * endpoint (finch_external_query, distill/external.h), batched, retried and
 * cached in teacher_outputs. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/hash.h"
#include "core/http.h"
#include "core/log.h"
#include "distill/external.h"
#include "distill/external_internal.h"

/* Part of an endpoint teacher's identity: a new prompt is a new teacher. */
#define EXT_PROMPT_VERSION "finch-external-prompt-v1"
#define EXT_PROMPT_HEAD "Classify the intent of a bank customer's message. Intents:\n"
#define EXT_MAX_RETRY_AFTER_S 60
#define EXT_MAX_DELAY_MS 30000

/* --- the endpoint ---------------------------------------------------------- */

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
  long retry_after_s;
} ext_reply;

static size_t ext_write_cb(char *data, size_t size, size_t nmemb, void *ctx) {
  ext_reply *r = ctx;
  size_t n = size * nmemb;
  if (r->len + n + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 65536;
    while (cap < r->len + n + 1) cap *= 2;
    char *p = realloc(r->buf, cap);
    if (!p) {
      r->oom = 1;
      return 0;
    }
    r->buf = p;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, data, n);
  r->len += n;
  r->buf[r->len] = '\0';
  return n;
}

static size_t ext_header_cb(char *line, size_t size, size_t nitems, void *ctx) {
  ext_reply *r = ctx;
  size_t n = size * nitems;
  long v = finch_http_retry_after(line, n, EXT_MAX_RETRY_AFTER_S);
  if (v >= 0) r->retry_after_s = v; /* an HTTP date: the backoff */
  return n;
}

static void ext_sleep_ms(long long ms) {
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint64_t ext_rand(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

typedef struct {
  CURL *easy;
  struct curl_slist *hdrs;
  char url[4096];     /* the request URL */
  char display[4096]; /* the URL without credentials, for messages */
  int max_retries;
  long backoff_ms;
  uint64_t rng;
  long long n_requests;
  char errbuf[CURL_ERROR_SIZE];
} ext_client;

/* Posts body; on success r->buf holds the 2xx answer. */
static finch_status ext_post(ext_client *cl, const char *body, ext_reply *r, finch_err *err) {
  curl_easy_setopt(cl->easy, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(cl->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
  curl_easy_setopt(cl->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(cl->easy, CURLOPT_HEADERDATA, r);
  char *errbuf = cl->errbuf;
  for (int failures = 0;;) {
    r->len = 0;
    r->oom = 0;
    r->retry_after_s = 0;
    if (r->buf) r->buf[0] = '\0';
    errbuf[0] = '\0';
    cl->n_requests++;
    CURLcode rc = curl_easy_perform(cl->easy);
    long code = 0;
    curl_easy_getinfo(cl->easy, CURLINFO_RESPONSE_CODE, &code);
    if (r->oom) return finch_err_set(err, FINCH_ENOMEM, "POST %s: out of memory for the answer", cl->display);
    if (rc == CURLE_OK && code >= 200 && code < 300) return FINCH_OK;
    char reason[CURL_ERROR_SIZE + 256];
    int retry;
    if (rc == CURLE_OK) {
      retry = finch_http_retryable_status(code);
      snprintf(reason, sizeof reason, "HTTP %ld: %.200s", code, r->buf ? r->buf : "");
    } else {
      retry = finch_http_retryable_curl(rc);
      snprintf(reason, sizeof reason, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    if (!retry) return finch_err_set(err, FINCH_EIO, "POST %s: %s", cl->display, reason);
    if (++failures > cl->max_retries)
      return finch_err_set(err, FINCH_EIO, "POST %s: %s (gave up after %d attempt%s)", cl->display, reason, failures,
                           failures == 1 ? "" : "s");
    long long base = cl->backoff_ms;
    for (int i = 1; i < failures && base < EXT_MAX_DELAY_MS; i++) base *= 2;
    if (base > EXT_MAX_DELAY_MS) base = EXT_MAX_DELAY_MS;
    long long delay = base - base / 2 + (base / 2 > 0 ? (long long)(ext_rand(&cl->rng) % (uint64_t)(base / 2 + 1)) : 0);
    if (r->retry_after_s * 1000LL > delay) delay = r->retry_after_s * 1000LL;
    finch_warn("POST %s: %s; retry %d of %d in %lld ms", cl->display, reason, failures, cl->max_retries, delay);
    ext_sleep_ms(delay);
  }
}

/* url without "user:password@". */
static void ext_display_url(const char *url, char *out, size_t n) {
  const char *host = strstr(url, "://");
  host = host ? host + 3 : url;
  size_t hl = strcspn(host, "/?#");
  const char *at = memchr(host, '@', hl);
  if (!at) {
    snprintf(out, n, "%s", url);
    return;
  }
  snprintf(out, n, "%.*s%s", (int)(host - url), url, at + 1);
}

static finch_status ext_client_open(ext_client *cl, const finch_external_query_opts *o, finch_err *err) {
  memset(cl, 0, sizeof *cl);
  finch_status st = finch_http_global_init(err);
  if (st != FINCH_OK) return st;
  size_t ul = strlen(o->url);
  while (ul > 0 && o->url[ul - 1] == '/') ul--;
  const char *suffix = "/v1/completions";
  if (ul >= 15 && strncmp(o->url + ul - 15, "/v1/completions", 15) == 0) suffix = "";
  else if (ul >= 3 && strncmp(o->url + ul - 3, "/v1", 3) == 0) suffix = "/completions";
  if (ul + strlen(suffix) + 1 > sizeof cl->url) return finch_err_set(err, FINCH_EINVAL, "the endpoint URL is too long");
  snprintf(cl->url, sizeof cl->url, "%.*s%s", (int)ul, o->url, suffix);
  ext_display_url(cl->url, cl->display, sizeof cl->display);
  if (strncmp(cl->url, "http://", 7) != 0 && strncmp(cl->url, "https://", 8) != 0)
    return finch_err_set(err, FINCH_EINVAL, "endpoint %s: not an http:// or https:// URL", cl->display);
  cl->max_retries = o->max_retries >= 0 ? o->max_retries : 5;
  cl->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : 500;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  cl->rng = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ (uint64_t)(uintptr_t)cl;
  if (!cl->rng) cl->rng = 1;
  cl->easy = curl_easy_init();
  if (!cl->easy) return finch_err_set(err, FINCH_ENOMEM, "curl_easy_init failed");
  cl->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
  cl->hdrs = cl->hdrs ? curl_slist_append(cl->hdrs, "Expect:") : NULL;
  if (cl->hdrs && o->api_key && *o->api_key) {
    size_t kn = strlen(o->api_key) + 32;
    char *auth = malloc(kn);
    if (auth) {
      snprintf(auth, kn, "Authorization: Bearer %s", o->api_key);
      struct curl_slist *h = curl_slist_append(cl->hdrs, auth);
      memset(auth, 0, kn);
      free(auth);
      cl->hdrs = h;
    } else {
      cl->hdrs = NULL;
    }
  }
  if (!cl->hdrs) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  CURL *e = cl->easy;
  curl_easy_setopt(e, CURLOPT_URL, cl->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the _STR forms */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, cl->hdrs);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 15L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT, o->timeout_s > 0 ? o->timeout_s : 300L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "finch");
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cl->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ext_write_cb);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, ext_header_cb);
  return FINCH_OK;
}

static void ext_client_close(ext_client *cl) {
  if (cl->easy) curl_easy_cleanup(cl->easy);
  curl_slist_free_all(cl->hdrs);
}

/* The log-likelihood of each label from a row's C echoed choices ch[0..C),
 * up to a constant: the sum of the logprobs of each choice's tokens after the
 * longest run of leading tokens that all C share (at least one token each is
 * kept), the last token (the one generated) left out. A shared token has the
 * same context, hence the same logprob, in every choice, so leaving it out
 * shifts every score alike, which softmax ignores. No character offsets are
 * needed: servers compute them differently for SentencePiece tokens. */
static finch_status ext_row_scores(json_t *const *ch, size_t C, size_t first, double *score, const char *where,
                                   finch_err *err) {
  json_t *toks0 = NULL;
  size_t keep = SIZE_MAX; /* shared leading tokens */
  for (size_t c = 0; c < C; c++) {
    json_t *lp = json_object_get(ch[c], "logprobs");
    json_t *toks = json_object_get(lp, "tokens"), *tlp = json_object_get(lp, "token_logprobs");
    if (!json_is_array(toks) || !json_is_array(tlp))
      return finch_err_set(err, FINCH_EFORMAT, "%s: choice %zu: no logprobs.tokens and token_logprobs (does the "
                           "server support \"echo\" with \"logprobs\"?)", where, first + c);
    size_t nt = json_array_size(toks);
    if (json_array_size(tlp) != nt || nt < 3)
      return finch_err_set(err, FINCH_EFORMAT, "%s: choice %zu: %zu tokens and %zu logprobs: not an echoed prompt",
                           where, first + c, nt, json_array_size(tlp));
    if (c == 0) {
      toks0 = toks;
      keep = nt;
    }
    size_t k = 0;
    while (k < keep && k < nt && json_equal(json_array_get(toks, k), json_array_get(toks0, k))) k++;
    keep = k < nt - 2 ? k : nt - 2;
  }
  for (size_t c = 0; c < C; c++) {
    json_t *tlp = json_object_get(json_object_get(ch[c], "logprobs"), "token_logprobs");
    size_t nt = json_array_size(tlp);
    double sum = 0;
    for (size_t k = keep; k + 1 < nt; k++) {
      json_t *v = json_array_get(tlp, k);
      if (!json_is_number(v))
        return finch_err_set(err, FINCH_EFORMAT, "%s: choice %zu: token %zu of the label has no logprob", where,
                             first + c, k);
      sum += json_number_value(v);
    }
    score[c] = sum;
  }
  return FINCH_OK;
}

finch_status finch_external_query(finch_db *db, const finch_external_query_opts *o, finch_external_result *res,
                                  finch_err *err) {
  memset(res, 0, sizeof *res);
  if (!o->dataset || !o->url || !o->model || !*o->url || !*o->model)
    return finch_err_set(err, FINCH_EINVAL, "soft-labels query needs a dataset, an endpoint URL and a model name");
  float T = o->temperature > 0 ? o->temperature : 1.0f;
  char temp[32];
  distill__ext_temp_str(T, temp, sizeof temp);
  size_t batch = o->batch > 0 ? (size_t)o->batch : 8;
  ext_client cl;
  ext_data d;
  memset(&d, 0, sizeof d);
  finch_status st = ext_client_open(&cl, o, err);
  char *head = NULL, *body = NULL;
  size_t *todo = NULL;
  unsigned char *done = NULL;
  double *score = NULL;
  float *probs = NULL;
  long long *ids = NULL;
  char **prefix = NULL;
  ext_reply reply = {0};
  json_t *answer = NULL;
  if (st) goto out;
  st = distill__ext_data_load(db, o->dataset, 0, &d, err);
  if (st) goto out;
  res->n_labels = (long long)d.C;
  res->n_train = (long long)d.n;

  /* The teacher: endpoint, model and prompt version. */
  size_t kn = strlen(cl.display) + strlen(o->model) + sizeof EXT_PROMPT_VERSION + 4;
  char *key = malloc(kn);
  if (!key) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(key, kn, "%s\n%s\n%s", cl.display, o->model, EXT_PROMPT_VERSION);
  char sha[FINCH_SHA256_HEX_LEN];
  finch_sha256_hex(key, strlen(key), sha);
  free(key);
  st = distill__ext_teacher(db, o->dataset, &d, cl.display, sha, 0, "endpoint", o->model, o->name, &res->model_id,
                   &res->reused, err);
  if (st) goto out;

  /* Rows stored earlier at this temperature are skipped. */
  done = calloc(d.n + 1, 1);
  todo = malloc((d.n + 1) * sizeof *todo);
  if (!done || !todo) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  char mid[32];
  snprintf(mid, sizeof mid, "%lld", res->model_id);
  const char *p[] = {mid, temp};
  PGresult *r = finch_db_query(db, "SELECT utterance_id FROM teacher_outputs WHERE model_id = $1 AND temperature = $2::real",
                               2, p, err);
  if (!r) {
    st = FINCH_EDB;
    goto out;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    long row = distill__ext_row_by_id(&d, strtoll(PQgetvalue(r, i, 0), NULL, 10));
    if (row >= 0 && !done[row]) {
      done[row] = 1;
      res->n_cached++;
    }
  }
  PQclear(r);
  size_t ntodo = 0;
  for (size_t i = 0; i < d.n; i++)
    if (!done[i]) todo[ntodo++] = i;
  finch_info("endpoint teacher %lld (%s, model %s): %zu training row(s) to score, %lld already stored, %zu labels",
             res->model_id, cl.display, o->model, ntodo, res->n_cached, d.C);

  /* The prompt head is shared by every prompt: the label list. */
  size_t hn = sizeof EXT_PROMPT_HEAD;
  for (size_t c = 0; c < d.C; c++) hn += strlen(d.labels[c]) + 1;
  head = malloc(hn);
  score = malloc(batch * d.C * sizeof *score);
  probs = malloc(batch * d.C * sizeof *probs);
  ids = malloc(batch * sizeof *ids);
  prefix = calloc(batch, sizeof *prefix);
  if (!head || !score || !probs || !ids || !prefix) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  size_t k = (size_t)snprintf(head, hn, "%s", EXT_PROMPT_HEAD);
  for (size_t c = 0; c < d.C; c++) k += (size_t)snprintf(head + k, hn - k, "%s\n", d.labels[c]);

  PGresult *texts = NULL;
  for (size_t b0 = 0; !st && b0 < ntodo; b0 += batch) {
    size_t nb = ntodo - b0 < batch ? ntodo - b0 : batch;
    /* The rows' stored (redacted) text. */
    char *idl = malloc(nb * 24 + 4);
    if (!idl) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    size_t il = (size_t)sprintf(idl, "{");
    for (size_t i = 0; i < nb; i++) {
      ids[i] = d.ids[todo[b0 + i]];
      il += (size_t)sprintf(idl + il, "%s%lld", i ? "," : "", ids[i]);
    }
    sprintf(idl + il, "}");
    const char *tp[] = {idl};
    texts = finch_db_query(db, "SELECT u.id, u.text FROM utterances u WHERE u.id = ANY($1::bigint[]) ORDER BY u.id",
                           1, tp, err);
    free(idl);
    if (!texts) {
      st = FINCH_EDB;
      break;
    }
    if ((size_t)PQntuples(texts) != nb) {
      st = finch_err_set(err, FINCH_EINTERNAL, "training rows vanished while scoring (%d of %zu)", PQntuples(texts), nb);
      break;
    }
    /* ids ascend in todo, as in the query's ORDER BY. */
    json_t *prompts = json_array();
    for (size_t i = 0; prompts && i < nb; i++) {
      const char *t = PQgetvalue(texts, (int)i, 1);
      size_t pn = strlen(head) + strlen(t) + 32;
      free(prefix[i]);
      prefix[i] = malloc(pn);
      if (!prefix[i]) break;
      snprintf(prefix[i], pn, "%sMessage: %s\nIntent:", head, t);
      size_t qn = pn + 1;
      for (size_t c = 0; c < d.C; c++) {
        size_t cn = qn + strlen(d.labels[c]);
        char *q = malloc(cn);
        if (!q) break;
        snprintf(q, cn, "%s %s", prefix[i], d.labels[c]);
        json_array_append_new(prompts, json_string(q));
        free(q);
      }
    }
    PQclear(texts);
    texts = NULL;
    if (!prompts || json_array_size(prompts) != nb * d.C) {
      json_decref(prompts);
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    json_t *req = json_pack("{s:s, s:o, s:i, s:i, s:i, s:b}", "model", o->model, "prompt", prompts, "max_tokens", 1,
                            "temperature", 0, "logprobs", 1, "echo", 1);
    free(body);
    body = req ? json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(req);
    if (!body) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    st = ext_post(&cl, body, &reply, err);
    if (st) break;
    json_decref(answer);
    json_error_t je;
    answer = json_loadb(reply.buf ? reply.buf : "", reply.len, 0, &je);
    json_t *choices = json_object_get(answer, "choices");
    if (!json_is_array(choices) || json_array_size(choices) != nb * d.C) {
      st = finch_err_set(err, FINCH_EFORMAT, "POST %s: expected %zu choices, got %s", cl.display, nb * d.C,
                         !answer ? je.text : json_is_array(choices) ? "another number" : "no \"choices\" array");
      break;
    }
    json_t **bych = calloc(nb * d.C, sizeof *bych); /* choices by index */
    if (!bych) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    for (size_t q = 0; !st && q < nb * d.C; q++) {
      json_t *ch = json_array_get(choices, q);
      json_t *iv = json_object_get(ch, "index");
      size_t idx = json_is_integer(iv) ? (size_t)json_integer_value(iv) : q;
      if (!json_is_object(ch) || (json_is_integer(iv) && json_integer_value(iv) < 0) || idx >= nb * d.C || bych[idx])
        st = finch_err_set(err, FINCH_EFORMAT, "POST %s: choice %zu has a bad or repeated index", cl.display, q);
      else
        bych[idx] = ch;
    }
    for (size_t i = 0; !st && i < nb; i++)
      st = ext_row_scores(bych + i * d.C, d.C, i * d.C, score + i * d.C, cl.display, err);
    free(bych);
    if (st) break;
    for (size_t i = 0; i < nb; i++) {
      double mx = -INFINITY, sum = 0;
      for (size_t c = 0; c < d.C; c++) mx = score[i * d.C + c] > mx ? score[i * d.C + c] : mx;
      for (size_t c = 0; c < d.C; c++) sum += exp((score[i * d.C + c] - mx) / T);
      for (size_t c = 0; c < d.C; c++) probs[i * d.C + c] = (float)(exp((score[i * d.C + c] - mx) / T) / sum);
    }
    st = finch_db_exec(db, "BEGIN", err);
    if (st) break;
    st = distill__ext_store(db, res->model_id, temp, ids, probs, nb, d.C, err);
    if (!st) st = finch_db_exec(db, "COMMIT", err);
    if (st) {
      finch_db_rollback(db);
      break;
    }
    res->n_scored += (long long)nb;
    finch_info("scored %lld of %zu rows (%lld request%s)", res->n_scored, ntodo, cl.n_requests,
               cl.n_requests == 1 ? "" : "s");
  }
  PQclear(texts);
  if (!st) st = distill__ext_count_stored(db, res->model_id, temp, &d, &res->n_labelled, err);
  res->n_unlabelled = res->n_train - res->n_labelled;
out:
  res->n_requests = cl.n_requests;
  json_decref(answer);
  free(reply.buf);
  for (size_t i = 0; prefix && i < batch; i++) free(prefix[i]);
  free(prefix);
  free(head);
  free(body);
  free(todo);
  free(done);
  free(score);
  free(probs);
  free(ids);
  distill__ext_data_free(&d);
  ext_client_close(&cl);
  return st;
}
