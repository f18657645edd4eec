#include "tests/serve/fixture.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/model.h"

int fixture_tmp_path(char *buf, size_t size, const char *name) {
  const char *dir = getenv("FINCH_TEST_TMP");
  if (!dir || !*dir) dir = "/tmp";
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) return 0;
  int n = snprintf(buf, size, "%s/%s", dir, name);
  return n > 0 && (size_t)n < size;
}

static const char *const fixture_labels[] = {"card_arrival", "exchange_rate", "request_refund"};

static const char *const fixture_card[] = {
    "my card has not arrived",          "my card hasn't arrived yet",
    "when will my card arrive",         "i am still waiting for my card",
    "card still not arrived",           "where is my new card",
    "my card did not come in the mail", "has my card been sent",
    "how long until my card arrives",   "the card i ordered has not arrived",
    "still no card",                    "my new card is late",
    "i never received my card",         "card delivery is taking too long",
    "is my card on its way",            "track my card delivery",
    "i haven't got my card yet",        "my card still hasn't come",
    "waiting for my card to arrive",    "when does the card arrive",
};

static const char *const fixture_rate[] = {
    "what is the exchange rate",
    "what exchange rate do you use",
    "how much is the euro to dollar rate",
    "current exchange rates please",
    "is the exchange rate good today",
    "what rate will i get for pounds",
    "how do you calculate exchange rates",
    "exchange rate for usd to gbp",
    "show me today's exchange rate",
    "which exchange rate applies to my transfer",
    "what are your currency rates",
    "rate for converting euros",
    "how much will i get when exchanging dollars",
    "tell me the conversion rate",
    "where can i see exchange rates",
    "exchange rate for yen",
    "do you have good exchange rates",
    "currency conversion rate",
    "what is the rate for swiss francs",
    "how are foreign exchange rates set",
};

static const char *const fixture_refund[] = {
    "i want a refund",
    "can i get a refund",
    "please refund my purchase",
    "how do i request a refund",
    "i would like my money back",
    "refund this transaction please",
    "i need a refund for an item",
    "can you give me a refund",
    "the merchant owes me a refund",
    "start a refund for my order",
    "i want to return something and get refunded",
    "how long does a refund take",
    "request refund",
    "give me my money back",
    "i'd like to be refunded",
    "refund my payment",
    "i am asking for a refund",
    "please process my refund request",
    "get a refund on a purchase",
    "i want my money back for this order",
};

finch_status fixture_build_model(const char *path, char *sha256_hex, finch_err *err) {
  enum { PER = 20, N = 3 * PER };
  const char *texts[N];
  int32_t labels[N];
  /* Interleaved, so that any batch sees every label. */
  for (int i = 0; i < PER; i++) {
    texts[3 * i] = fixture_card[i];
    texts[3 * i + 1] = fixture_rate[i];
    texts[3 * i + 2] = fixture_refund[i];
    labels[3 * i] = 0;
    labels[3 * i + 1] = 1;
    labels[3 * i + 2] = 2;
  }
  nn_dataset ds = {.texts = texts, .labels = labels, .soft = NULL, .n = N};
  nn_train_config cfg = nn_train_config_student();
  cfg.epochs = 40;
  cfg.batch = 8;
  cfg.min_count = 1;
  cfg.seed = 7;
  nn_model *m = NULL;
  finch_status st = nn_model_train(&m, &ds, fixture_labels, 3, &cfg, NULL, NULL, NULL, NULL, err);
  if (st != FINCH_OK) return st;
  st = nn_model_save(m, path, NN_DTYPE_F32, sha256_hex, err);
  nn_model_free(m);
  return st;
}

/* --- HTTP client ---------------------------------------------------------- */

typedef struct {
  const char *data;
  size_t len, pos;
} fixture_upload;

static size_t fixture_read(char *buf, size_t size, size_t n, void *ctx) {
  fixture_upload *u = ctx;
  size_t want = size * n, left = u->len - u->pos;
  if (want > left) want = left;
  if (want > 4096) want = 4096; /* several chunks */
  memcpy(buf, u->data + u->pos, want);
  u->pos += want;
  return want;
}

static size_t fixture_write(char *data, size_t size, size_t n, void *ctx) {
  fixture_reply *r = ctx;
  size_t add = size * n;
  char *p = realloc(r->body, r->len + add + 1);
  if (!p) return 0;
  memcpy(p + r->len, data, add);
  r->body = p;
  r->len += add;
  r->body[r->len] = '\0';
  return add;
}

int fixture_http(unsigned port, const char *method, const char *path, const char *body,
                 size_t body_len, int flags, fixture_reply *out) {
  memset(out, 0, sizeof *out);
  out->body = calloc(1, 1);
  CURL *c = curl_easy_init();
  if (!c || !out->body) {
    snprintf(out->error, sizeof out->error, "curl_easy_init failed");
    curl_easy_cleanup(c);
    return -1;
  }
  char url[512];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
  struct curl_slist *hdrs = NULL;
  fixture_upload up = {body, body_len, 0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fixture_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  if (body) {
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (flags & FIXTURE_NO_EXPECT) hdrs = curl_slist_append(hdrs, "Expect:");
    if (flags & FIXTURE_BODY_CHUNKED) {
      hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_READFUNCTION, fixture_read);
      curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);

  CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
  char *ct = NULL;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
  if (ct) snprintf(out->content_type, sizeof out->content_type, "%s", ct);
  if (rc != CURLE_OK)
    snprintf(out->error, sizeof out->error, "%s %s: %s", method, url, curl_easy_strerror(rc));
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(c);
  return rc == CURLE_OK ? 0 : -1;
}

void fixture_reply_free(fixture_reply *r) {
  free(r->body);
  r->body = NULL;
}
