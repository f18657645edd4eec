/* Outbound webhooks (serve/webhook.h): the outbox writer, the signer, and the
 * delivery workers.
 *
 * Claims. A row is claimed for one attempt at a time by an UPDATE that sets
 * its lease and counts the attempt, over a sub-select with FOR UPDATE SKIP
 * LOCKED, committed on its own (c is in autocommit). The HTTP request runs
 * outside any transaction. The result is written by an UPDATE guarded by the
 * claim (locked_by and the attempt number), so a worker whose lease ran out
 * and whose row another worker took meanwhile changes nothing. A row is
 * claimed once per attempt, so a slow endpoint delays only its own row.
 *
 * Threads. A worker owns its PGconn and its jitter generator; the only state
 * shared with the thread that stops it is the stop flag and a pipe that wakes
 * its wait. libcurl handles are made per request. */
#include "serve/webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/db.h"
#include "core/http.h"
#include "core/log.h"
#include "core/rng.h"

enum {
  WH_DEFAULT_TIMEOUT_MS = 10000,
  WH_DEFAULT_LEASE_S = 60,
  WH_LEASE_MARGIN_S = 10,              /* the lease outlives the HTTP timeout by this much */
  WH_MAX_PAYLOAD = 1024 * 1024,        /* bytes of payload_json accepted by emit */
  WH_MAX_RETRY_AFTER_S = 24 * 60 * 60, /* a Retry-After beyond this is cut to it */
  WH_WORKER_BATCH = 32,                /* rows per worker pass before it looks at the stop flag's pipe */
  WH_MAX_URL = 2048,
};

#define WH_CHANNEL "finch_webhook"

static const char *const wh_events[] = {"intent.classified", "handoff.requested", "labeling.task_created",
                                        "rollout.changed", "job.succeeded", "job.failed"};
#define WH_EVENT_LIST                                                                                             \
  "intent.classified, handoff.requested, labeling.task_created, rollout.changed, job.succeeded or job.failed"

int finch_webhook_event_known(const char *type) {
  if (!type) return 0;
  for (size_t i = 0; i < sizeof wh_events / sizeof wh_events[0]; i++)
    if (strcmp(type, wh_events[i]) == 0) return 1;
  return 0;
}

/* --- settings and jitter ----------------------------------------------------- */

typedef struct {
  unsigned poll_ms, max_attempts, base_backoff_ms, max_backoff_ms, timeout_ms, lease_s;
  char worker_id[160];
} wh_cfg;

static atomic_uint wh_worker_seq;

static void wh_cfg_resolve(const finch_webhook_opts *o, wh_cfg *cfg) {
  finch_webhook_opts none = {0};
  if (!o) o = &none;
  cfg->poll_ms = o->poll_ms ? o->poll_ms : FINCH_WEBHOOK_DEFAULT_POLL_MS;
  cfg->max_attempts = o->max_attempts ? o->max_attempts : FINCH_WEBHOOK_DEFAULT_MAX_ATTEMPTS;
  cfg->base_backoff_ms = o->base_backoff_ms ? o->base_backoff_ms : FINCH_WEBHOOK_DEFAULT_BASE_BACKOFF_MS;
  cfg->max_backoff_ms = o->max_backoff_ms ? o->max_backoff_ms : FINCH_WEBHOOK_DEFAULT_MAX_BACKOFF_MS;
  if (cfg->max_backoff_ms < cfg->base_backoff_ms) cfg->max_backoff_ms = cfg->base_backoff_ms;
  cfg->timeout_ms = o->timeout_ms ? o->timeout_ms : WH_DEFAULT_TIMEOUT_MS;
  cfg->lease_s = o->lease_s ? o->lease_s : WH_DEFAULT_LEASE_S;
  unsigned need = cfg->timeout_ms / 1000 + WH_LEASE_MARGIN_S;
  if (cfg->lease_s < need) cfg->lease_s = need;
  if (o->worker_id && *o->worker_id) {
    snprintf(cfg->worker_id, sizeof cfg->worker_id, "%s", o->worker_id);
  } else {
    char host[64] = "host";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    snprintf(cfg->worker_id, sizeof cfg->worker_id, "%s:%ld:%u", host, (long)getpid(),
             atomic_fetch_add(&wh_worker_seq, 1u) + 1u);
  }
}

/* Seed for the jitter: /dev/urandom, else FNV-1a of the worker id mixed with
 * the process id and the clock (distinct workers still spread apart). */
static uint64_t wh_seed(const char *worker_id) {
  uint64_t s = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, &s, sizeof s);
    close(fd);
    if (n == (ssize_t)sizeof s) return s;
  }
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)worker_id; *p; p++) h = (h ^ *p) * 1099511628211ull;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return h ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)ts.tv_nsec << 16);
}

/* Full jitter after the attempts-th failed attempt: uniform in
 * [0, min(max, base * 2^(attempts-1))] milliseconds. */
static double wh_backoff_ms(const wh_cfg *cfg, finch_rng *rng, int attempts) {
  int e = attempts > 1 ? attempts - 1 : 0;
  if (e > 40) e = 40;
  double cap = (double)cfg->base_backoff_ms * (double)(1ull << e);
  if (cap > (double)cfg->max_backoff_ms) cap = (double)cfg->max_backoff_ms;
  return finch_rng_uniform(rng) * cap;
}

/* --- signing ------------------------------------------------------------------ */

void finch_webhook_sign(const char *secret, const char *id, long long ts, const char *body, size_t body_len,
                        char out_hex[65]) {
  out_hex[0] = '\0';
  char tsbuf[32];
  int tn = snprintf(tsbuf, sizeof tsbuf, "%lld", ts);
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                         OSSL_PARAM_construct_end()};
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
  unsigned char md[EVP_MAX_MD_SIZE];
  size_t mdlen = 0;
  int ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) &&
           EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) &&
           EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
           EVP_MAC_update(ctx, (const unsigned char *)tsbuf, (size_t)tn) &&
           EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
           EVP_MAC_update(ctx, (const unsigned char *)body, body_len) &&
           EVP_MAC_final(ctx, md, &mdlen, sizeof md) && mdlen == 32;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  if (!ok) return;
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < 32; i++) {
    out_hex[2 * i] = hex[md[i] >> 4];
    out_hex[2 * i + 1] = hex[md[i] & 15];
  }
  out_hex[64] = '\0';
}

/* --- the outbox writer ------------------------------------------------------------ */

finch_status finch_webhook_emit(PGconn *c, const char *event_type, const char *payload_json, int *n_queued,
                                finch_err *err) {
  if (n_queued) *n_queued = 0;
  if (!finch_webhook_event_known(event_type))
    return finch_err_set(err, FINCH_EINVAL, "unknown webhook event type '%.64s' (expected %s)",
                         event_type ? event_type : "(null)", WH_EVENT_LIST);
  if (!payload_json) return finch_err_set(err, FINCH_EINVAL, "webhook %s: payload is NULL", event_type);
  size_t len = strlen(payload_json);
  if (len > WH_MAX_PAYLOAD)
    return finch_err_set(err, FINCH_EINVAL, "webhook %s: payload of %zu bytes exceeds %d", event_type, len,
                         WH_MAX_PAYLOAD);
  json_error_t jerr;
  json_t *j = json_loadb(payload_json, len, 0, &jerr);
  if (!j)
    return finch_err_set(err, FINCH_EFORMAT, "webhook %s: payload is not valid JSON: %s (line %d, column %d)",
                         event_type, jerr.text, jerr.line, jerr.column);
  int is_obj = json_is_object(j);
  json_decref(j);
  if (!is_obj) return finch_err_set(err, FINCH_EFORMAT, "webhook %s: payload is not a JSON object", event_type);

  /* One event id for all subscriptions' rows (MATERIALIZED: computed once);
   * one idempotency key per row. created_at is the transaction's time, the
   * time of the state change being reported. */
  static const char sql[] =
      "WITH ev AS MATERIALIZED ("
      "  SELECT 'evt_' || replace(gen_random_uuid()::text, '-', '') AS id,"
      "         to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at) "
      "INSERT INTO webhook_outbox (event_type, event_id, payload, endpoint, idempotency_key, subscription_id) "
      "SELECT $1::text, ev.id,"
      "       jsonb_build_object('id', ev.id, 'type', $1::text, 'created_at', ev.at, 'data', $2::jsonb),"
      "       s.url, 'whk_' || replace(gen_random_uuid()::text, '-', ''), s.id"
      "  FROM ev, webhook_subscriptions s"
      " WHERE s.active AND ($1::text = ANY (s.event_types) OR '*' = ANY (s.event_types))";
  const char *p[] = {event_type, payload_json};
  PGresult *r = finch_db_query_on(c, sql, 2, p, err);
  if (!r) {
    finch_err_prefix(err, "webhook %s", event_type);
    return FINCH_EDB;
  }
  int n = atoi(PQcmdTuples(r));
  PQclear(r);
  if (n > 0) {
    /* Delivered at commit, dropped on rollback: wakes idle workers. */
    r = finch_db_query_on(c, "NOTIFY " WH_CHANNEL, 0, NULL, err);
    if (!r) return FINCH_EDB;
    PQclear(r);
  }
  if (n_queued) *n_queued = n;
  return FINCH_OK;
}

finch_status finch_webhook_subscribe(PGconn *c, const char *url, const char *secret, const char *events,
                                     long long *id, finch_err *err) {
  if (id) *id = 0;
  if (!url || !*url) return finch_err_set(err, FINCH_EINVAL, "webhook subscription: the URL is empty");
  size_t ulen = strlen(url);
  if (ulen > WH_MAX_URL)
    return finch_err_set(err, FINCH_EINVAL, "webhook subscription: the URL is longer than %d bytes", WH_MAX_URL);
  for (const unsigned char *q = (const unsigned char *)url; *q; q++)
    if (*q <= ' ' || *q == 0x7f)
      return finch_err_set(err, FINCH_EINVAL, "webhook subscription: URL '%.200s' contains white space or a control character", url);
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
    return finch_err_set(err, FINCH_EINVAL, "webhook subscription: URL '%.200s' is not http:// or https://", url);
  CURLU *u = curl_url();
  char *host = NULL;
  CURLUcode uc = u ? curl_url_set(u, CURLUPART_URL, url, 0) : CURLUE_OUT_OF_MEMORY;
  if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
  int bad = uc != CURLUE_OK || !host || !*host;
  curl_free(host);
  curl_url_cleanup(u);
  if (bad)
    return finch_err_set(err, FINCH_EINVAL, "webhook subscription: URL '%.200s' is malformed: %s", url,
                         uc != CURLUE_OK ? curl_url_strerror(uc) : "no host");
  if (!secret || !*secret) return finch_err_set(err, FINCH_EINVAL, "webhook subscription: the secret is empty");
  if (!events || !*events)
    return finch_err_set(err, FINCH_EINVAL, "webhook subscription: no events given (a comma-separated list of %s, or *)",
                         WH_EVENT_LIST);

  /* Normalise the list: items trimmed, each known or "*". */
  size_t elen = strlen(events);
  char *list = malloc(elen + 1), *norm = malloc(elen + 1);
  if (!list || !norm) {
    free(list), free(norm);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  memcpy(list, events, elen + 1);
  size_t no = 0;
  finch_status st = FINCH_OK;
  char *save = NULL;
  for (char *tok = list;; tok = NULL) {
    char *item = strtok_r(tok, ",", &save);
    if (!item) break;
    while (*item == ' ' || *item == '\t') item++;
    size_t il = strlen(item);
    while (il && (item[il - 1] == ' ' || item[il - 1] == '\t')) item[--il] = '\0';
    if (!il) continue;
    if (strcmp(item, "*") != 0 && !finch_webhook_event_known(item)) {
      st = finch_err_set(err, FINCH_EINVAL, "webhook subscription: unknown event type '%.64s' (expected %s, or *)",
                         item, WH_EVENT_LIST);
      break;
    }
    no += (size_t)sprintf(norm + no, "%s%s", no ? "," : "", item);
  }
  free(list);
  if (!st && !no)
    st = finch_err_set(err, FINCH_EINVAL, "webhook subscription: no events given (a comma-separated list of %s, or *)",
                       WH_EVENT_LIST);
  if (st) {
    free(norm);
    return st;
  }
  const char *p[] = {url, secret, norm};
  PGresult *r = finch_db_query_on(c,
                                  "INSERT INTO webhook_subscriptions (url, secret, event_types) "
                                  "VALUES ($1, $2, string_to_array($3, ',')) RETURNING id",
                                  3, p, err);
  free(norm);
  if (!r) return FINCH_EDB;
  if (id) *id = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return FINCH_OK;
}

/* --- delivery ------------------------------------------------------------------------- */

typedef struct {
  long status;             /* HTTP status, 0 when no response came */
  int transport_error;     /* the transfer itself failed */
  long long retry_after_s; /* Retry-After in seconds, 0 when absent */
  char error[CURL_ERROR_SIZE + 64];
} wh_result;

static size_t wh_discard(char *data, size_t size, size_t n, void *ctx) {
  (void)data, (void)ctx;
  return size * n;
}

/* One POST of body to url with the signed headers. */
static void wh_post(const wh_cfg *cfg, const char *url, const char *key, const char *event_type,
                    const char *secret, const char *body, size_t body_len, wh_result *out) {
  memset(out, 0, sizeof *out);
  CURL *e = curl_easy_init();
  if (!e) {
    out->transport_error = 1;
    snprintf(out->error, sizeof out->error, "curl_easy_init failed");
    return;
  }
  long long ts = (long long)time(NULL);
  char sig[65];
  finch_webhook_sign(secret, key, ts, body, body_len, sig);
  char h_key[200], h_id[200], h_ts[64], h_ev[96], h_sig[128];
  snprintf(h_key, sizeof h_key, "Idempotency-Key: %s", key);
  snprintf(h_id, sizeof h_id, "Finch-Webhook-Id: %s", key);
  snprintf(h_ts, sizeof h_ts, "Finch-Webhook-Timestamp: %lld", ts);
  snprintf(h_ev, sizeof h_ev, "Finch-Webhook-Event: %s", event_type);
  snprintf(h_sig, sizeof h_sig, "Finch-Signature: v1=%s", sig);
  const char *lines[] = {"Content-Type: application/json", "Expect:", h_key, h_id, h_ts, h_ev, h_sig};
  struct curl_slist *hdrs = NULL;
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    struct curl_slist *nh = curl_slist_append(hdrs, lines[i]);
    if (!nh) {
      curl_slist_free_all(hdrs);
      curl_easy_cleanup(e);
      out->transport_error = 1;
      snprintf(out->error, sizeof out->error, "out of memory");
      return;
    }
    hdrs = nh;
  }
  char ebuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "finch-webhook/1");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wh_discard);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, ebuf);
  CURLcode rc = curl_easy_perform(e);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
  curl_off_t ra = 0;
  if (curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0) out->retry_after_s = (long long)ra;
  if (rc != CURLE_OK) {
    out->transport_error = 1;
    snprintf(out->error, sizeof out->error, "%s", *ebuf ? ebuf : curl_easy_strerror(rc));
  } else {
    snprintf(out->error, sizeof out->error, "HTTP %ld", out->status);
  }
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(e);
}

/* Claims one due row; *got = 0 when none is due. The claimed row's columns:
 * 0 id, 1 endpoint, 2 idempotency_key, 3 body, 4 attempts, 5 event_type,
 * 6 secret (NULL without an active subscription), 7 subscription_id. */
static PGresult *wh_claim(PGconn *c, const wh_cfg *cfg, int *got, finch_err *err) {
  static const char sql[] =
      "UPDATE webhook_outbox o"
      "   SET locked_until = now() + make_interval(secs => $2::double precision),"
      "       locked_by = $1, attempts = o.attempts + 1, last_attempt_at = now()"
      "  FROM (SELECT w.id, CASE WHEN s.active THEN s.secret END AS secret"
      "          FROM webhook_outbox w LEFT JOIN webhook_subscriptions s ON s.id = w.subscription_id"
      "         WHERE w.status = 'pending' AND w.next_attempt_at <= now()"
      "           AND (w.locked_until IS NULL OR w.locked_until <= now())"
      "         ORDER BY w.next_attempt_at, w.id LIMIT 1"
      "           FOR UPDATE OF w SKIP LOCKED) due"
      " WHERE o.id = due.id"
      " RETURNING o.id, o.endpoint, o.idempotency_key, o.payload::text, o.attempts, o.event_type, due.secret,"
      "           o.subscription_id";
  char lease[16];
  snprintf(lease, sizeof lease, "%u", cfg->lease_s);
  const char *p[] = {cfg->worker_id, lease};
  PGresult *r = finch_db_query_on(c, sql, 2, p, err);
  *got = r && PQntuples(r) == 1;
  return r;
}

/* Writes the outcome of the attempt-th attempt of row id, if the claim still holds. */
static finch_status wh_record(PGconn *c, const wh_cfg *cfg, const char *id, const char *attempts,
                              const char *status, long http, const char *error, double delay_ms, finch_err *err) {
  static const char sql[] =
      "UPDATE webhook_outbox"
      "   SET status = $4::text, last_status = $5::int, last_error = $6, locked_until = NULL,"
      "       delivered_at = CASE WHEN $4::text = 'delivered' THEN now() ELSE delivered_at END,"
      "       next_attempt_at = CASE WHEN $4::text = 'pending'"
      "                         THEN now() + make_interval(secs => $7::double precision)"
      "                         ELSE next_attempt_at END"
      " WHERE id = $1::bigint AND locked_by = $2 AND attempts = $3::int AND status = 'pending'";
  char hs[24], ds[40];
  snprintf(hs, sizeof hs, "%ld", http);
  snprintf(ds, sizeof ds, "%.3f", delay_ms / 1000.0);
  const char *p[] = {id, cfg->worker_id, attempts, status, http > 0 ? hs : NULL, error, ds};
  PGresult *r = finch_db_query_on(c, sql, 7, p, err);
  if (!r) return FINCH_EDB;
  if (strcmp(PQcmdTuples(r), "1") != 0)
    finch_warn("webhook: outbox row %s: the claim by %s expired before its result was recorded; "
               "another worker retries it", id, cfg->worker_id);
  PQclear(r);
  return FINCH_OK;
}

/* Delivers one claimed row (row 0 of claim) and records the outcome. */
static finch_status wh_deliver_one(PGconn *c, const wh_cfg *cfg, finch_rng *rng, PGresult *claim, finch_err *err) {
  const char *id = PQgetvalue(claim, 0, 0), *url = PQgetvalue(claim, 0, 1), *key = PQgetvalue(claim, 0, 2);
  const char *body = PQgetvalue(claim, 0, 3), *attempts_s = PQgetvalue(claim, 0, 4);
  const char *type = PQgetvalue(claim, 0, 5), *secret = PQgetvalue(claim, 0, 6);
  int attempts = atoi(attempts_s);
  if (PQgetisnull(claim, 0, 6)) {
    char why[96];
    if (PQgetisnull(claim, 0, 7))
      snprintf(why, sizeof why, "no subscription");
    else
      snprintf(why, sizeof why, "subscription %s is inactive", PQgetvalue(claim, 0, 7));
    finch_info("webhook: outbox row %s is dead: %s", id, why);
    return wh_record(c, cfg, id, attempts_s, "dead", 0, why, 0, err);
  }
  wh_result res;
  wh_post(cfg, url, key, type, secret, body, (size_t)PQgetlength(claim, 0, 3), &res);
  long s = res.status;
  if (!res.transport_error && s >= 200 && s < 300) {
    finch_debug("webhook: outbox row %s delivered (HTTP %ld, attempt %d)", id, s, attempts);
    return wh_record(c, cfg, id, attempts_s, "delivered", s, NULL, 0, err);
  }
  if (!res.transport_error && s >= 400 && s < 500 && s != 408 && s != 429) {
    finch_info("webhook: outbox row %s is dead: HTTP %ld is permanent", id, s);
    return wh_record(c, cfg, id, attempts_s, "dead", s, res.error, 0, err);
  }
  if ((unsigned)attempts >= cfg->max_attempts) {
    char msg[sizeof res.error + 48];
    snprintf(msg, sizeof msg, "%s (gave up after %d attempts)", res.error, attempts);
    finch_info("webhook: outbox row %s is dead after %d attempts", id, attempts);
    return wh_record(c, cfg, id, attempts_s, "dead", s, msg, 0, err);
  }
  double delay = wh_backoff_ms(cfg, rng, attempts);
  if (res.retry_after_s > 0) {
    long long ra = res.retry_after_s > WH_MAX_RETRY_AFTER_S ? WH_MAX_RETRY_AFTER_S : res.retry_after_s;
    if ((double)ra * 1000.0 > delay) delay = (double)ra * 1000.0;
  }
  finch_debug("webhook: outbox row %s attempt %d failed (%s); retry in %.0f ms", id, attempts, res.error, delay);
  return wh_record(c, cfg, id, attempts_s, "pending", s, res.error, delay, err);
}

/* Up to max claim-deliver-record rounds; stops early when nothing is due or
 * *stop (may be NULL) is set. */
static finch_status wh_pass(PGconn *c, const wh_cfg *cfg, finch_rng *rng, int max, atomic_int *stop, int *n_done,
                            finch_err *err) {
  *n_done = 0;
  for (int i = 0; i < max; i++) {
    if (stop && atomic_load(stop)) break;
    int got = 0;
    PGresult *claim = wh_claim(c, cfg, &got, err);
    if (!claim) return FINCH_EDB;
    if (!got) {
      PQclear(claim);
      break;
    }
    finch_status st = wh_deliver_one(c, cfg, rng, claim, err);
    PQclear(claim);
    if (st) return st; /* the lease expires and the row is retried */
    (*n_done)++;
  }
  return FINCH_OK;
}

finch_status finch_webhook_deliver_due(PGconn *c, const finch_webhook_opts *opts, int max, int *n_done,
                                       finch_err *err) {
  int done = 0;
  if (n_done) *n_done = 0;
  if (PQstatus(c) != CONNECTION_OK)
    return finch_err_set(err, FINCH_EDB, "webhook delivery: no database connection: %.*s",
                         (int)strcspn(PQerrorMessage(c), "\n"), PQerrorMessage(c));
  if (PQtransactionStatus(c) != PQTRANS_IDLE)
    return finch_err_set(err, FINCH_EINVAL, "webhook delivery: the connection is inside a transaction; "
                                            "claims and results must commit on their own");
  finch_status cst = finch_http_global_init(err);
  if (cst != FINCH_OK) {
    finch_err_prefix(err, "webhook delivery");
    return cst;
  }
  wh_cfg cfg;
  wh_cfg_resolve(opts, &cfg);
  finch_rng rng = {wh_seed(cfg.worker_id)};
  finch_status st = wh_pass(c, &cfg, &rng, max, NULL, &done, err);
  if (n_done) *n_done = done;
  return st;
}

/* --- the worker ------------------------------------------------------------------------- */

struct finch_webhook_worker {
  wh_cfg cfg;
  PGconn *conn;
  finch_rng rng;
  pthread_t thread;
  atomic_int stop;
  int wake[2]; /* a byte on wake[1] ends the wait early */
};

static int wh_listen(PGconn *c) {
  PGresult *r = PQexec(c, "SET client_min_messages = warning; LISTEN " WH_CHANNEL);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok;
}

/* Consumes pending notifications; returns how many there were. */
static int wh_drain_notifies(PGconn *c) {
  int n = 0;
  if (PQstatus(c) != CONNECTION_OK || !PQconsumeInput(c)) return 0;
  PGnotify *nf;
  while ((nf = PQnotifies(c)) != NULL) {
    PQfreemem(nf);
    n++;
  }
  return n;
}

/* Waits up to ms for a notification or a wake byte. */
static void wh_wait(finch_webhook_worker *w, unsigned ms) {
  struct pollfd fds[2] = {{.fd = w->wake[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
  if (PQstatus(w->conn) == CONNECTION_OK) fds[1].fd = PQsocket(w->conn);
  int rc = poll(fds, 2, (int)ms);
  if (rc > 0 && (fds[1].revents & POLLIN)) wh_drain_notifies(w->conn);
}

static void *wh_worker_main(void *arg) {
  finch_webhook_worker *w = arg;
  int was_down = 0;
  char last_warning[sizeof ((finch_err *)0)->msg] = ""; /* a failure repeating every pass is logged once */
  while (!atomic_load(&w->stop)) {
    if (PQstatus(w->conn) != CONNECTION_OK) {
      PQreset(w->conn);
      if (PQstatus(w->conn) != CONNECTION_OK || !wh_listen(w->conn)) {
        if (!was_down)
          finch_warn("webhook worker %s: database connection lost: %.*s; retrying", w->cfg.worker_id,
                     (int)strcspn(PQerrorMessage(w->conn), "\n"), PQerrorMessage(w->conn));
        was_down = 1;
        wh_wait(w, w->cfg.poll_ms);
        continue;
      }
      if (was_down) finch_info("webhook worker %s: database connection restored", w->cfg.worker_id);
      was_down = 0;
    }
    int n = 0;
    finch_err err;
    finch_status st = wh_pass(w->conn, &w->cfg, &w->rng, WH_WORKER_BATCH, &w->stop, &n, &err);
    if (st && PQstatus(w->conn) == CONNECTION_OK && strcmp(err.msg, last_warning) != 0) {
      finch_warn("webhook worker %s: %s", w->cfg.worker_id, err.msg);
      snprintf(last_warning, sizeof last_warning, "%s", err.msg);
    } else if (!st) {
      last_warning[0] = '\0';
    }
    if (!st && n == WH_WORKER_BATCH) continue; /* more may be due */
    if (wh_drain_notifies(w->conn) > 0 && !st) continue;
    wh_wait(w, w->cfg.poll_ms);
  }
  return NULL;
}

finch_status finch_webhook_worker_start(finch_webhook_worker **out, const finch_webhook_opts *opts,
                                        finch_err *err) {
  *out = NULL;
  finch_status cst = finch_http_global_init(err);
  if (cst != FINCH_OK) {
    finch_err_prefix(err, "webhook worker");
    return cst;
  }
  finch_webhook_worker *w = calloc(1, sizeof *w);
  if (!w) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  w->wake[0] = w->wake[1] = -1;
  wh_cfg_resolve(opts, &w->cfg);
  w->rng.s = wh_seed(w->cfg.worker_id);
  atomic_init(&w->stop, 0);
  finch_status st = FINCH_OK;
  char url[8192];
  const char *conninfo = opts ? opts->conninfo : NULL;
  if (!conninfo) {
    if ((st = finch_db_resolve_url(url, sizeof url, 1, err)) != FINCH_OK) goto fail;
    conninfo = url;
  }
  w->conn = PQconnectdb(conninfo);
  if (PQstatus(w->conn) != CONNECTION_OK || !wh_listen(w->conn)) {
    st = finch_err_set(err, FINCH_EDB, "webhook worker: cannot connect to PostgreSQL: %.*s",
                       (int)strcspn(PQerrorMessage(w->conn), "\n"), PQerrorMessage(w->conn));
    goto fail;
  }
  if (pipe(w->wake) != 0) {
    w->wake[0] = w->wake[1] = -1;
    st = finch_err_set(err, FINCH_EIO, "webhook worker: pipe: %s", strerror(errno));
    goto fail;
  }
  for (int i = 0; i < 2; i++) fcntl(w->wake[i], F_SETFD, FD_CLOEXEC);
  int prc = pthread_create(&w->thread, NULL, wh_worker_main, w);
  if (prc != 0) {
    st = finch_err_set(err, FINCH_EINTERNAL, "webhook worker: pthread_create: %s", strerror(prc));
    goto fail;
  }
  finch_info("webhook worker %s started", w->cfg.worker_id);
  *out = w;
  return FINCH_OK;
fail:
  PQfinish(w->conn);
  for (int i = 0; i < 2; i++)
    if (w->wake[i] >= 0) close(w->wake[i]);
  free(w);
  return st;
}

void finch_webhook_worker_stop(finch_webhook_worker *w) {
  if (!w) return;
  atomic_store(&w->stop, 1);
  ssize_t wr;
  do {
    wr = write(w->wake[1], "x", 1);
  } while (wr < 0 && errno == EINTR);
  pthread_join(w->thread, NULL);
  finch_info("webhook worker %s stopped", w->cfg.worker_id);
  PQfinish(w->conn);
  close(w->wake[0]);
  close(w->wake[1]);
  free(w);
}

/* --- operations ------------------------------------------------------------------------------ */

finch_status finch_webhook_redeliver(PGconn *c, long long outbox_id, finch_err *err) {
  static const char sql[] =
      "WITH old AS (SELECT id, status, attempts FROM webhook_outbox WHERE id = $1::bigint FOR UPDATE),"
      " upd AS (UPDATE webhook_outbox o"
      "            SET status = 'pending', attempts = 0, next_attempt_at = now(), locked_until = NULL,"
      "                delivered_at = NULL, last_error = NULL"
      "           FROM old WHERE o.id = old.id AND old.status IN ('dead', 'delivered')"
      "         RETURNING o.id, old.status AS was, old.attempts AS was_attempts, o.idempotency_key,"
      "                   o.event_type, o.subscription_id),"
      " aud AS (INSERT INTO audit_log (actor, action, subject, details)"
      "         SELECT coalesce(nullif(current_setting('finch.actor', true), ''), session_user::text),"
      "                'webhook.redeliver', 'webhook_outbox:' || upd.id,"
      "                jsonb_build_object('previous_status', upd.was, 'previous_attempts', upd.was_attempts,"
      "                                   'idempotency_key', upd.idempotency_key, 'event_type', upd.event_type,"
      "                                   'subscription_id', upd.subscription_id)"
      "           FROM upd RETURNING id)"
      " SELECT (SELECT status FROM old), (SELECT count(*) FROM aud)";
  char ids[32];
  snprintf(ids, sizeof ids, "%lld", outbox_id);
  const char *p[] = {ids};
  PGresult *r = finch_db_query_on(c, sql, 1, p, err);
  if (!r) {
    finch_err_prefix(err, "webhook redeliver %lld", outbox_id);
    return FINCH_EDB;
  }
  finch_status st = FINCH_OK;
  if (PQgetisnull(r, 0, 0))
    st = finch_err_set(err, FINCH_ENOTFOUND, "webhook outbox row %lld does not exist", outbox_id);
  else if (atoll(PQgetvalue(r, 0, 1)) != 1)
    st = finch_err_set(err, FINCH_EINVAL, "webhook outbox row %lld is %s; only dead or delivered rows can be redelivered",
                       outbox_id, PQgetvalue(r, 0, 0));
  PQclear(r);
  if (st) return st;
  r = finch_db_query_on(c, "NOTIFY " WH_CHANNEL, 0, NULL, err);
  if (!r) return FINCH_EDB;
  PQclear(r);
  finch_info("webhook: outbox row %lld queued for redelivery", outbox_id);
  return FINCH_OK;
}

size_t finch_webhook_backlog(PGconn *c) {
  PGresult *r = PQexec(c, "SELECT count(*) FROM webhook_outbox WHERE status = 'pending'");
  size_t n = 0;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) n = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return n;
}
