/* The fine-tuning loop of the BERT encoder and its head (nn/bert_train.h):
 * seeded, length-bucketed batches, cross-entropy (label smoothing
 * optional), global-norm clipping, AdamW with linear warm-up and decay, exact
 * checkpoints, and prediction over encoded rows. The step runs on the op
 * table; only the (B,C) loss is host code, as in nn/tfm_train.c. */
#include "nn/bert_train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "nn/ckpt.h"
#include "nn/loss.h"
#include "nn/ops.h"
#include "nn/optim.h"

enum { RNG_SHUFFLE = 21, RNG_DROPOUT = 22, RNG_HEAD = 23 };

/* ---- encoded texts ----------------------------------------------------- */

finch_status nn_bert_ids_encode(nn_bert_ids *x, const nn_bert_tok_t *tok, const char *const *texts, size_t n, int T,
                                finch_err *err) {
  memset(x, 0, sizeof *x);
  if (T < 2 || T > 65535) return finch_err_set(err, FINCH_EINVAL, "BERT sequence length %d is outside [2, 65535]", T);
  x->T = T;
  x->n = n;
  x->ids = malloc((n ? n : 1) * (size_t)T * sizeof *x->ids);
  x->len = malloc((n ? n : 1) * sizeof *x->len);
  if (!x->ids || !x->len) {
    nn_bert_ids_free(x);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory encoding %zu texts", n);
  }
  const int32_t pad = nn_bert_tok_get_info(tok).pad_id;
  for (size_t i = 0; i < n; i++) {
    int32_t *row = x->ids + i * (size_t)T;
    int len = 0;
    finch_err e2 = {0};
    finch_status st = nn_bert_tok_encode(tok, texts[i], strlen(texts[i]), T, row, &len, &e2);
    if (st != FINCH_OK) {
      nn_bert_ids_free(x);
      return finch_err_set(err, st, "text %zu: %s", i, e2.msg);
    }
    for (int t = len; t < T; t++) row[t] = pad;
    x->len[i] = (uint16_t)len;
  }
  return FINCH_OK;
}

void nn_bert_ids_free(nn_bert_ids *x) {
  free(x->ids);
  free(x->len);
  memset(x, 0, sizeof *x);
}

/* ids (B,Tb) and mask (B,Tb) of rows rows[0..B) of x, trimmed to the longest
 * of them; returns Tb. */
static int gather(const nn_bert_ids *x, const uint32_t *rows, int B, int32_t *ids, uint8_t *mask) {
  int Tb = 1;
  for (int i = 0; i < B; i++)
    if (x->len[rows[i]] > Tb) Tb = x->len[rows[i]];
  for (int i = 0; i < B; i++) {
    memcpy(ids + (size_t)i * Tb, x->ids + (size_t)rows[i] * x->T, (size_t)Tb * sizeof *ids);
    for (int t = 0; t < Tb; t++) mask[(size_t)i * Tb + t] = t < x->len[rows[i]];
  }
  return Tb;
}

/* ---- checkpoints ------------------------------------------------------- */

typedef struct {
  char magic[8];
  uint32_t version, C;
  uint64_t n_params, n_rows, step, total;
  uint32_t epoch, batch_in_epoch;
  uint64_t config_hash;
  nn_rng rng[2];
} ckpt_header;
_Static_assert(sizeof(ckpt_header) == 128, "ckpt_header is 128 bytes");

static uint64_t run_hash(const nn_bert *m, int C, const nn_bert_train_config *c, const nn_bert_ids *x,
                         const int32_t *y) {
  uint64_t h = nn_ckpt_fnv(0xcbf29ce484222325ULL, nn_bert_get_config(m), sizeof(nn_bert_config));
  uint32_t u[] = {(uint32_t)C, c->epochs, c->batch, c->bucket, (uint32_t)c->init_head, (uint32_t)x->T};
  float f[] = {c->lr, c->head_lr, c->weight_decay, c->warmup, c->clip, c->label_smoothing, c->hidden_dropout,
               c->attn_dropout};
  h = nn_ckpt_fnv(h, u, sizeof u);
  h = nn_ckpt_fnv(h, f, sizeof f);
  h = nn_ckpt_fnv(h, &c->seed, sizeof c->seed);
  h = nn_ckpt_fnv(h, &x->n, sizeof x->n);
  h = nn_ckpt_fnv(h, x->len, x->n * sizeof *x->len);
  return nn_ckpt_fnv(h, y, x->n * sizeof *y);
}

/* Reads path into h and the parts after it (parts[0] is the header) once its
 * size, checksum, magic and run hash match. */
static finch_status ckpt_load(const char *path, ckpt_header *h, uint64_t want_hash, nn_ckpt_part *parts, size_t np,
                              finch_err *err) {
  size_t want = 32;
  for (size_t i = 0; i < np; i++) want += parts[i].n;
  unsigned char *buf = NULL;
  finch_status st = nn_ckpt_read(path, want, &buf, err);
  if (st) return st;
  ckpt_header got;
  memcpy(&got, buf, sizeof got);
  if (memcmp(got.magic, "FINCHBK", 8) != 0 || got.version != 1 || got.C != h->C || got.n_params != h->n_params ||
      got.n_rows != h->n_rows || got.config_hash != want_hash) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: checkpoint belongs to another run (configuration or data differ)", path);
    goto out;
  }
  *h = got;
  size_t at = parts[0].n;
  for (size_t i = 1; i < np; at += parts[i].n, i++) memcpy((void *)parts[i].p, buf + at, parts[i].n);
out:
  free(buf);
  return st;
}

/* ---- training ---------------------------------------------------------- */

nn_bert_train_config nn_bert_train_defaults(void) {
  return (nn_bert_train_config){.epochs = 3, .batch = 32, .lr = 1e-4f, .head_lr = 2e-3f, .weight_decay = 0.01f,
                                .warmup = 0.1f, .clip = 1.0f, .label_smoothing = 0.0f, .hidden_dropout = 0.1f,
                                .attn_dropout = 0.1f, .bucket = 50, .init_head = 1, .seed = 42,
                                .checkpoint = NULL, .checkpoint_every = 200, .resume = 0, .stop_after = 0};
}

static void swap_u32(uint32_t *a, uint32_t *b) {
  uint32_t t = *a;
  *a = *b;
  *b = t;
}

static int by_key(const void *a, const void *b) {
  const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* rows (k) sorted by length, ties by row: through keys (k), length << 32 | row. */
static void sort_by_len(uint32_t *rows, size_t k, const uint16_t *len, uint64_t *keys) {
  for (size_t i = 0; i < k; i++) keys[i] = (uint64_t)len[rows[i]] << 32 | rows[i];
  qsort(keys, k, sizeof *keys, by_key);
  for (size_t i = 0; i < k; i++) rows[i] = (uint32_t)keys[i];
}

/* Scratch of epoch_order for windows of win rows in bucket batches. */
typedef struct {
  uint64_t *keys; /* (win) */
  uint32_t *rows; /* (win) */
  uint32_t *perm; /* (bucket) */
} order_scratch;

/* One epoch's order of the n rows: a Fisher-Yates shuffle; then, with
 * bucketing, each window of bucket * batch rows sorted by length (ties by
 * row) and its whole batches put in a shuffled order, so a batch holds rows
 * of similar length and pads little. */
static void epoch_order(uint32_t *order, size_t n, const uint16_t *len, uint32_t batch, uint32_t bucket,
                        const order_scratch *s, nn_rng *rng) {
  for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
  for (size_t i = n; i > 1; i--) swap_u32(&order[i - 1], &order[nn_rng_below(rng, i)]);
  if (bucket < 2) return;
  const size_t win = (size_t)bucket * batch;
  for (size_t a = 0; a < n; a += win) {
    const size_t k = n - a < win ? n - a : win, nb = k / batch; /* whole batches; a partial one stays last */
    sort_by_len(order + a, k, len, s->keys);
    for (size_t i = 0; i < nb; i++) s->perm[i] = (uint32_t)i;
    for (size_t i = nb; i > 1; i--) swap_u32(&s->perm[i - 1], &s->perm[nn_rng_below(rng, i)]);
    memcpy(s->rows, order + a, nb * batch * sizeof *s->rows);
    for (size_t i = 0; i < nb; i++)
      memcpy(order + a + i * batch, s->rows + (size_t)s->perm[i] * batch, batch * sizeof *s->rows);
  }
}

finch_status nn_bert_finetune(nn_bert *m, float *head_w, float *head_b, int C, nn_backend *be, const nn_bert_ids *x,
                              const int32_t *y, const nn_bert_train_config *c, nn_bert_step_cb cb, void *cb_ctx,
                              finch_err *err) {
  const nn_bert_config *mc = nn_bert_get_config(m);
  if (!x || x->n == 0) return finch_err_set(err, FINCH_EINVAL, "no training rows");
  if (x->n > UINT32_MAX) return finch_err_set(err, FINCH_EINVAL, "%zu training rows are above 2^32", x->n);
  if ((uint32_t)x->T > mc->max_pos)
    return finch_err_set(err, FINCH_EINVAL, "rows of %d tokens exceed the encoder's %u positions", x->T, mc->max_pos);
  if (C < 1) return finch_err_set(err, FINCH_EINVAL, "%d labels: the head needs at least one", C);
  if (c->batch == 0 || c->epochs == 0) return finch_err_set(err, FINCH_EINVAL, "batch and epochs must be positive");
  if (c->bucket > 4096) return finch_err_set(err, FINCH_EINVAL, "bucket %u is above 4096", c->bucket);
  for (size_t i = 0; i < x->n; i++) {
    if (y[i] < 0 || y[i] >= C) return finch_err_set(err, FINCH_EINVAL, "row %zu: label %d outside [0, %d)", i, y[i], C);
    if (x->len[i] < 1 || x->len[i] > x->T)
      return finch_err_set(err, FINCH_EINVAL, "row %zu: length %u outside [1, %d]", i, x->len[i], x->T);
  }
  if (!be) be = nn_backend_cpu();
  const nn_ops *op = be->ops;
  const int on_host = op == nn_ops_cpu();
  const size_t n = x->n, D = mc->dim, np_enc = nn_bert_n_params(m), np = nn_bert_train_n_params(m, C);
  const size_t nhw = (size_t)C * D;
  const int Bmax = (int)c->batch;
  const uint64_t per_epoch = (n + c->batch - 1) / c->batch, total = per_epoch * c->epochs;

  nn_bert_train_work *w = NULL;
  float *P = op->alloc(be, np * sizeof(float)), *G = op->alloc(be, np * sizeof(float));
  float *M = op->alloc(be, np * sizeof(float)), *V = op->alloc(be, np * sizeof(float));
  /* Host views of P, M, V for checkpoints: the blocks themselves on the CPU. */
  float *hP = on_host ? P : malloc(np * sizeof(float)), *hM = on_host ? M : malloc(np * sizeof(float));
  float *hV = on_host ? V : malloc(np * sizeof(float));
  float *logits = malloc((size_t)Bmax * C * sizeof *logits), *dl = malloc((size_t)Bmax * C * sizeof *dl);
  float *probs = malloc((size_t)Bmax * C * sizeof *probs), *rl = malloc((size_t)Bmax * sizeof *rl);
  int32_t *ids = malloc((size_t)Bmax * x->T * sizeof *ids), *yb = malloc((size_t)Bmax * sizeof *yb);
  uint8_t *mask = malloc((size_t)Bmax * x->T);
  uint32_t *order = malloc(n * sizeof *order);
  const size_t win = (size_t)(c->bucket > 1 ? c->bucket : 1) * c->batch;
  order_scratch os = {malloc(win * sizeof *os.keys), malloc(win * sizeof *os.rows),
                      malloc((c->bucket + 1) * sizeof *os.perm)};
  finch_status st = FINCH_OK;
  if (!P || !G || !M || !V) {
    if ((st = nn_backend_check(be, err)) == FINCH_OK)
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory for fine-tuning on %s (%zu parameters)", be->name, np);
    goto out;
  }
  if (!hP || !hM || !hV || !logits || !dl || !probs || !rl || !ids || !yb || !mask || !order || !os.keys || !os.rows || !os.perm) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for fine-tuning (%zu parameters)", np);
    goto out;
  }
  if ((st = nn_bert_train_work_init(&w, m, C, Bmax, x->T, be, err)) != FINCH_OK) goto out;

  ckpt_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, "FINCHBK", 8);
  h.version = 1;
  h.C = (uint32_t)C;
  h.n_params = np;
  h.n_rows = n;
  h.total = total;
  h.config_hash = run_hash(m, C, c, x, y);
  nn_rng_seed(&h.rng[0], c->seed, RNG_SHUFFLE);
  nn_rng_seed(&h.rng[1], c->seed, RNG_DROPOUT);
  /* The starting block: the encoder, then the head. */
  memcpy(hP, nn_bert_params(m), np_enc * sizeof(float));
  if (c->init_head) {
    nn_rng hr;
    nn_rng_seed(&hr, c->seed, RNG_HEAD);
    for (size_t i = 0; i < nhw; i++) hP[np_enc + i] = 0.02f * nn_rng_normal(&hr);
    memset(hP + np_enc + nhw, 0, (size_t)C * sizeof(float));
  } else {
    memcpy(hP + np_enc, head_w, nhw * sizeof(float));
    memcpy(hP + np_enc + nhw, head_b, (size_t)C * sizeof(float));
  }
  memset(hM, 0, np * sizeof(float));
  memset(hV, 0, np * sizeof(float));
  nn_ckpt_part parts[] = {{&h, sizeof h}, {order, n * sizeof *order}, {hP, np * 4}, {hM, np * 4}, {hV, np * 4}};
  const size_t nparts = sizeof parts / sizeof *parts;
  if (c->checkpoint && c->resume && access(c->checkpoint, F_OK) == 0) {
    if ((st = ckpt_load(c->checkpoint, &h, h.config_hash, parts, nparts, err)) != FINCH_OK) goto out;
    for (size_t i = 0; i < n; i++)
      if (order[i] >= n) {
        st = finch_err_set(err, FINCH_EFORMAT, "%s: data order holds row %u of %zu", c->checkpoint, order[i], n);
        goto out;
      }
  } else {
    epoch_order(order, n, x->len, c->batch, c->bucket, &os, &h.rng[0]);
  }
  if (!on_host) {
    op->upload(be, P, hP, np * sizeof(float));
    op->upload(be, M, hM, np * sizeof(float));
    op->upload(be, V, hV, np * sizeof(float));
  }
  op->zero(be, G, np * sizeof(float));

  const nn_adamw_config ac = nn_adamw_defaults();
  const size_t nt = nn_bert_n_tensors(m);
  const uint64_t warm = (uint64_t)(c->warmup * (float)total), step0 = h.step;
  const double t0 = finch_clock_s();
  while (h.step < total) {
    if (h.batch_in_epoch >= per_epoch) {
      h.epoch++;
      h.batch_in_epoch = 0;
      epoch_order(order, n, x->len, c->batch, c->bucket, &os, &h.rng[0]);
    }
    const size_t a = (size_t)h.batch_in_epoch * c->batch;
    const int B = (int)((n - a) < c->batch ? (n - a) : c->batch);
    const int Tb = gather(x, order + a, B, ids, mask);                                    /* ids, mask (B,Tb) */
    if ((st = nn_bert_train_forward(m, w, P, ids, mask, B, Tb, c->hidden_dropout, c->attn_dropout, &h.rng[1],
                                    err)) != FINCH_OK)
      goto out;
    /* The mean loss over the batch and its gradient, on the host. */
    for (int i = 0; i < B; i++) yb[i] = y[order[a + i]];
    op->download(be, logits, nn_bert_train_logits(w), (size_t)B * C * sizeof *logits);  /* (B,C) */
    nn_xent_ls_forward(logits, yb, B, C, c->label_smoothing, probs, rl);
    double loss = 0;
    for (int i = 0; i < B; i++) loss += rl[i];
    loss /= B;
    memset(dl, 0, (size_t)B * C * sizeof *dl);
    nn_xent_ls_backward(probs, yb, B, C, c->label_smoothing, 1.0f / (float)B, dl);
    op->upload(be, nn_bert_train_dlogits(w), dl, (size_t)B * C * sizeof *dl);
    nn_bert_train_backward(m, w, P, G);

    /* Clip and update: AdamW per tensor, decay on matrices and tables. */
    const double ss = op->sum_sq(be, G, np);
    const float gs = nn_clip_scale(ss, c->clip);
    const float lr = nn_lr_schedule(c->lr, h.step, warm, total), hlr = nn_lr_schedule(c->head_lr, h.step, warm, total);
    const uint64_t t1 = h.step + 1;
    for (size_t k = 0; k < nt; k++) {
      const nn_bert_tensor *t = nn_bert_tensor_at(m, k);
      const size_t cnt = (size_t)t->rows * t->cols;
      op->adamw(be, P + t->off, G + t->off, M + t->off, V + t->off, cnt, lr, t->decay ? c->weight_decay : 0.0f, gs,
                t1, &ac);
    }
    op->adamw(be, P + np_enc, G + np_enc, M + np_enc, V + np_enc, nhw, hlr, c->weight_decay, gs, t1, &ac);
    op->adamw(be, P + np_enc + nhw, G + np_enc + nhw, M + np_enc + nhw, V + np_enc + nhw, (size_t)C, hlr, 0.0f, gs,
              t1, &ac);
    op->zero(be, G, np * sizeof(float));
    h.step++;
    h.batch_in_epoch++;
    if (cb) {
      const double el = finch_clock_s() - t0, seen = (double)(h.step - step0) * c->batch;
      const double eps = el > 0 ? seen / el : 0;
      nn_bert_progress pr = {.step = h.step, .total = total, .epoch = h.epoch + 1, .epochs = c->epochs,
                             .loss = (float)loss, .lr = lr, .grad_norm = (float)sqrt(ss), .ex_per_s = eps,
                             .eta_s = eps > 0 ? (double)(total - h.step) * c->batch / eps : 0};
      cb(cb_ctx, &pr);
    }
    const int stop = c->stop_after && h.step - step0 >= c->stop_after;
    if (c->checkpoint && (h.step % (c->checkpoint_every ? c->checkpoint_every : 200) == 0 || h.step == total || stop)) {
      if (!on_host) {
        op->download(be, hP, P, np * sizeof(float));
        op->download(be, hM, M, np * sizeof(float));
        op->download(be, hV, V, np * sizeof(float));
      }
      if ((st = nn_ckpt_write(c->checkpoint, parts, nparts, err)) != FINCH_OK) goto out;
    }
    if ((st = nn_backend_check(be, err)) != FINCH_OK) goto out;
    if (stop) break;
  }
  if (!on_host) op->download(be, hP, P, np * sizeof(float));
  if ((st = nn_backend_check(be, err)) != FINCH_OK) goto out;
  memcpy(nn_bert_params_mut(m), hP, np_enc * sizeof(float));
  memcpy(head_w, hP + np_enc, nhw * sizeof(float));
  memcpy(head_b, hP + np_enc + nhw, (size_t)C * sizeof(float));
out:
  nn_bert_train_work_free(w);
  op->release(be, P), op->release(be, G), op->release(be, M), op->release(be, V);
  if (!on_host) free(hP), free(hM), free(hV);
  free(logits), free(dl), free(probs), free(rl), free(ids), free(yb), free(mask), free(order);
  free(os.keys), free(os.rows), free(os.perm);
  return st;
}

/* ---- prediction -------------------------------------------------------- */

finch_status nn_bert_predict_ids(const nn_bert *m, const float *head_w, const float *head_b, int C, nn_backend *be,
                                 const nn_bert_ids *x, int batch, int32_t *pred, finch_err *err) {
  if (x->n == 0) return FINCH_OK;
  if (batch < 1) batch = 1;
  const size_t D = nn_bert_get_config(m)->dim;
  uint32_t *rows = malloc(x->n * sizeof *rows);
  uint64_t *keys = malloc(x->n * sizeof *keys);
  int32_t *ids = malloc((size_t)batch * x->T * sizeof *ids);
  uint8_t *mask = malloc((size_t)batch * x->T);
  float *pooled = malloc((size_t)batch * D * sizeof *pooled);
  nn_bert_work *w = NULL;
  finch_status st = FINCH_OK;
  if (!rows || !keys || !ids || !mask || !pooled) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory predicting %zu rows", x->n);
    goto out;
  }
  for (size_t i = 0; i < x->n; i++) rows[i] = (uint32_t)i;
  sort_by_len(rows, x->n, x->len, keys);
  if ((st = nn_bert_work_init(&w, m, batch, x->T, be, err)) != FINCH_OK) goto out;
  for (size_t r0 = 0; r0 < x->n; r0 += (size_t)batch) {
    const int B = x->n - r0 < (size_t)batch ? (int)(x->n - r0) : batch;
    const int Tb = gather(x, rows + r0, B, ids, mask);
    if ((st = nn_bert_forward(m, w, ids, mask, B, Tb, err)) != FINCH_OK) goto out;
    nn_bert_pooled_host(w, pooled);
    for (int i = 0; i < B; i++) {
      int best = 0;
      float bz = 0;
      for (int k = 0; k < C; k++) {
        float z = head_b[k];
        for (size_t d = 0; d < D; d++) z += head_w[(size_t)k * D + d] * pooled[(size_t)i * D + d];
        if (k == 0 || z > bz) bz = z, best = k;
      }
      pred[rows[r0 + (size_t)i]] = best;
    }
  }
out:
  nn_bert_work_free(w);
  free(rows), free(keys), free(ids), free(mask), free(pooled);
  return st;
}
