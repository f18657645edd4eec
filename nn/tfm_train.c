#include "nn/tfm_train.h"

#include "nn/ops.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "nn/ckpt.h"
#include "nn/loss.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "nn/rng.h"
#include "nn/tfm_batch.h"
#include "nn/tfm_ops.h"

enum { RNG_SHUFFLE = 11, RNG_DROPOUT = 12, RNG_MASK = NN__TFM_RNG_MASK };

/* ---- checkpoints ---------------------------------------------------------- */

typedef struct {
  char magic[8];
  uint32_t version, reserved;
  uint64_t n_params, n_rows, step, total;
  uint32_t epoch, batch_in_epoch;
  uint64_t config_hash;
  nn_rng rng[3];
} ckpt_header;
_Static_assert(sizeof(ckpt_header) == 160, "ckpt_header is 160 bytes");

static uint64_t run_hash(const nn_tfm *m, const nn_tfm_train_config *c, size_t n_rows) {
  const nn_tfm_config *mc = nn_tfm_get_config(m);
  uint64_t h = 0xcbf29ce484222325ULL;
  h = nn_ckpt_fnv(h, mc, sizeof *mc);
  uint32_t u[] = {c->epochs, c->batch, (uint32_t)c->cosine};
  float f[] = {c->lr, c->weight_decay, c->warmup, c->clip, c->label_smoothing, c->mlm_prob, c->mlm_weight,
               c->cls_weight, c->tau, c->alpha, c->gate_penalty};
  h = nn_ckpt_fnv(h, u, sizeof u);
  h = nn_ckpt_fnv(h, f, sizeof f);
  h = nn_ckpt_fnv(h, &c->seed, sizeof c->seed);
  h = nn_ckpt_fnv(h, &n_rows, sizeof n_rows);
  return h;
}

static finch_status ckpt_save(const char *path, const ckpt_header *h, const uint32_t *order, const float *params,
                              size_t n_model, const float *proj, const float *mom, const float *vel, finch_err *err) {
  nn_ckpt_part parts[] = {{h, sizeof *h},
                          {order, (size_t)h->n_rows * sizeof *order},
                          {params, n_model * sizeof(float)},
                          {proj, ((size_t)h->n_params - n_model) * sizeof(float)},
                          {mom, (size_t)h->n_params * sizeof(float)},
                          {vel, (size_t)h->n_params * sizeof(float)}};
  return nn_ckpt_write(path, parts, sizeof parts / sizeof parts[0], err);
}

/* Loads a checkpoint into h, order, params, mom, vel after checking its
 * checksum and that it belongs to this run (config hash, sizes). */
static finch_status ckpt_load(const char *path, ckpt_header *h, uint64_t want_hash, size_t n_params,
                              size_t n_model, size_t n_rows, uint32_t *order, float *params, float *proj, float *mom,
                              float *vel, finch_err *err) {
  unsigned char *buf = NULL;
  finch_status st = nn_ckpt_read(path, sizeof *h + n_rows * 4 + 3 * n_params * 4 + 32, &buf, err);
  if (st) return st;
  memcpy(h, buf, sizeof *h);
  if (memcmp(h->magic, "FINCHCK", 8) != 0 || h->version != 1 || h->n_params != n_params || h->n_rows != n_rows ||
      h->config_hash != want_hash) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: checkpoint belongs to another run (configuration or data differ)", path);
    goto out;
  }
  const unsigned char *p = buf + sizeof *h;
  memcpy(order, p, n_rows * 4);
  p += n_rows * 4;
  memcpy(params, p, n_model * 4);
  p += n_model * 4;
  if (n_params > n_model) memcpy(proj, p, (n_params - n_model) * 4);
  p += (n_params - n_model) * 4;
  memcpy(mom, p, n_params * 4);
  p += n_params * 4;
  memcpy(vel, p, n_params * 4);
  for (size_t i = 0; i < n_rows; i++)
    if (order[i] >= n_rows) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: data order holds row %u of %zu", path, order[i], n_rows);
      goto out;
    }
out:
  free(buf);
  return st;
}

/* ---- training -------------------------------------------------------------- */

nn_tfm_train_config nn_tfm_train_defaults(void) {
  return (nn_tfm_train_config){.epochs = 30, .batch = 64, .lr = 1e-3f, .weight_decay = 0.01f,
                               .warmup = 0.06f, .cosine = 1, .clip = 1.0f, .label_smoothing = 0.1f,
                               .mlm_prob = 0.0f, .mlm_weight = 1.0f, .cls_weight = 1.0f, .tau = 2.0f,
                               .alpha = 0.5f, .seed = 42, .checkpoint = NULL, .checkpoint_every = 200,
                               .resume = 0, .stop_after = 0};
}

static void shuffle(uint32_t *order, size_t n, nn_rng *rng) {
  for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)nn_rng_below(rng, i);
    uint32_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
}

static float lr_at(const nn_tfm_train_config *c, uint64_t t, uint64_t total) {
  uint64_t warm = (uint64_t)(c->warmup * (float)total);
  if (!c->cosine) return nn_lr_schedule(c->lr, t, warm, total);
  if (t < warm) return c->lr * (float)(t + 1) / (float)warm;
  double prog = total > warm ? (double)(t - warm) / (double)(total - warm) : 1.0;
  return (float)(c->lr * 0.5 * (1.0 + cos(3.14159265358979323846 * prog)));
}

finch_status nn_tfm_train(nn_tfm *m, nn_backend *be, const nn_tfm_data *d, const nn_tfm_train_config *c,
                          nn_tfm_step_cb cb, void *cb_ctx, finch_err *err) {
  const nn_tfm_config *mc = nn_tfm_get_config(m);
  const nn_tfm_corpus *x = d->x;
  const int C = (int)mc->n_labels;
  const uint32_t V = mc->vocab;
  if (!x || x->n == 0) return finch_err_set(err, FINCH_EINVAL, "no training rows");
  if ((uint32_t)x->T > mc->max_len)
    return finch_err_set(err, FINCH_EINVAL, "corpus length %d exceeds the model's max_len %u", x->T, mc->max_len);
  if ((x->buckets != 0) != (mc->buckets != 0) || (x->buckets && x->buckets != mc->buckets))
    return finch_err_set(err, FINCH_EINVAL, "corpus n-gram buckets %u do not match the model's %u", x->buckets,
                         mc->buckets);
  if (c->batch == 0 || c->epochs == 0) return finch_err_set(err, FINCH_EINVAL, "batch and epochs must be positive");
  const int use_cls = C > 0 && d->labels && c->cls_weight > 0;
  const int use_mlm = c->mlm_prob > 0 && c->mlm_weight > 0;
  /* Intermediate-layer matching: validate and size the projections. */
  const nn_tfm *tm = d->teacher && d->layer_map ? d->teacher : NULL;
  const nn_tfm_config *tmc = tm ? nn_tfm_get_config(tm) : NULL;
  const int Ls = (int)mc->layers, Hs = (int)mc->heads, Ds = (int)mc->dim;
  size_t nproj = 0;
  if (tm) {
    if (!d->tx || d->tx->n != x->n || d->tx->T != x->T || (uint32_t)x->T > tmc->max_len)
      return finch_err_set(err, FINCH_EINVAL, "intermediate matching needs the teacher's corpus of the same %zu rows",
                           x->n);
    if (tmc->heads % mc->heads != 0)
      return finch_err_set(err, FINCH_EINVAL, "teacher heads %u are not a multiple of student heads %u", tmc->heads,
                           mc->heads);
    for (int l = 0; l < Ls; l++) {
      if (d->layer_map[l] >= (int32_t)tmc->layers)
        return finch_err_set(err, FINCH_EINVAL, "layer map: student layer %d -> teacher layer %d of %u", l,
                             d->layer_map[l], tmc->layers);
      if (d->layer_map[l] >= 0) nproj += (size_t)tmc->dim * (size_t)Ds + tmc->dim;
    }
  }
  if (!use_cls && !use_mlm && !nproj)
    return finch_err_set(err, FINCH_EINVAL, "nothing to learn: no labels, no MLM, no teacher layers");
  if (!be) be = nn_backend_cpu();
  /* On a device the whole step runs there, but for the losses on the (B,C)
   * logits, which the host computes as on the CPU. */
  if (be->ops != nn_ops_cpu() && (tm || use_mlm || mc->head_gates)) {
    finch_warn("training on the CPU: masked-token pre-training, head gates and intermediate-layer matching are host "
               "code, not yet on the %s backend", be->name);
    be = nn_backend_cpu();
  }
  const nn_ops *op = be->ops;
  const int on_dev = op != nn_ops_cpu();

  const size_t n = x->n, np_model = nn_tfm_n_params(m), np = np_model + nproj;
  const int Bmax = (int)c->batch;
  const uint64_t per_epoch = (n + c->batch - 1) / c->batch, total = per_epoch * c->epochs;
  /* Masked positions per batch: 15% of the tokens on average; a quarter is
   * far above what a batch draws, and the cap only stops extra picks. */
  const int mcap = Bmax * x->T / 4 + 16;
  nn_tfm_work *w = NULL;
  nn__tfm_batch_buf bb;
  int bb_ok = nn__tfm_batch_init(&bb, Bmax, x->T, C) == 0;
  float *grads = calloc(np, sizeof *grads), *mom = calloc(np, sizeof *mom), *vel = calloc(np, sizeof *vel);
  float *probs = malloc((size_t)Bmax * (size_t)(C > 0 ? C : 1) * sizeof *probs);
  float *q = malloc((size_t)Bmax * (size_t)(C > 0 ? C : 1) * sizeof *q);
  float *rl = malloc((size_t)(mcap > Bmax ? mcap : Bmax) * sizeof *rl);
  float *mprobs = use_mlm ? malloc((size_t)mcap * V * sizeof *mprobs) : NULL;
  uint32_t *order = malloc(n * sizeof *order);
  /* Teacher side: its batch, work area, projections and scratch. */
  nn_tfm_work *tw = NULL;
  nn__tfm_batch_buf tbb;
  int tbb_ok = 1;
  float *proj = NULL, *pred = NULL, *ptg = NULL;
  size_t *proj_off = NULL;
  if (tm) {
    tbb_ok = nn__tfm_batch_init(&tbb, Bmax, x->T, 1) == 0;
    proj = malloc(nproj * sizeof *proj);
    pred = malloc((size_t)Bmax * (size_t)x->T * tmc->dim * sizeof *pred);
    ptg = malloc((size_t)Bmax * (size_t)Hs * (size_t)x->T * (size_t)x->T * sizeof *ptg);
    proj_off = malloc((size_t)Ls * sizeof *proj_off);
  } else {
    memset(&tbb, 0, sizeof tbb);
  }
  /* Device side: gradients, moments, the touched n-gram rows, and host
   * copies of the logits and their gradient. */
  float *dgrads = NULL, *dmom = NULL, *dvel = NULL, *hlog = NULL, *hdl = NULL;
  uint32_t *drows = NULL;
  int dev_ok = 1;
  if (on_dev) {
    dgrads = op->alloc(be, np * sizeof(float));
    dmom = op->alloc(be, np * sizeof(float));
    dvel = op->alloc(be, np * sizeof(float));
    drows = op->alloc(be, (mc->buckets ? mc->buckets : 1) * sizeof *drows);
    hlog = malloc((size_t)Bmax * (size_t)(C > 0 ? C : 1) * sizeof *hlog);
    hdl = malloc((size_t)Bmax * (size_t)(C > 0 ? C : 1) * sizeof *hdl);
    dev_ok = dgrads && dmom && dvel && drows && hlog && hdl;
  }
  finch_status st = FINCH_OK;
  if (!dev_ok) {
    if ((st = nn_backend_check(be, err)) == FINCH_OK)
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory for training on %s (%zu parameters)", be->name, np);
    goto out;
  }
  if (!bb_ok || !tbb_ok || !grads || !mom || !vel || !probs || !q || !rl || (use_mlm && !mprobs) || !order ||
      (tm && (!proj || !pred || !ptg || !proj_off))) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for training (%zu parameters)", np);
    goto out;
  }
  if ((st = nn_tfm_work_init_on(&w, m, Bmax, be, err)) != FINCH_OK) goto out;
  if (tm) {
    if ((st = nn_tfm_work_init(&tw, tm, Bmax, err)) != FINCH_OK) goto out;
    nn_rng pr;
    nn_rng_seed(&pr, c->seed, 14);
    size_t off = 0;
    for (int l = 0; l < Ls; l++) {
      proj_off[l] = off;
      if (d->layer_map[l] < 0) continue;
      size_t wn = (size_t)tmc->dim * (size_t)Ds;
      for (size_t i = 0; i < wn; i++) proj[off + i] = 0.02f * nn_rng_normal(&pr);
      memset(proj + off + wn, 0, tmc->dim * sizeof *proj);
      off += wn + tmc->dim;
    }
  }

  ckpt_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, "FINCHCK", 8);
  h.version = 1;
  h.n_params = np;
  h.n_rows = n;
  h.total = total;
  h.config_hash = run_hash(m, c, n);
  nn_rng_seed(&h.rng[0], c->seed, RNG_SHUFFLE);
  nn_rng_seed(&h.rng[1], c->seed, RNG_DROPOUT);
  nn_rng_seed(&h.rng[2], c->seed, RNG_MASK);
  float *params = nn_tfm_params(m);
  int resumed = 0;
  if (c->checkpoint && c->resume && access(c->checkpoint, F_OK) == 0) {
    st = ckpt_load(c->checkpoint, &h, run_hash(m, c, n), np, np_model, n, order, params, proj, mom, vel, err);
    if (st) goto out;
    resumed = 1;
    if (on_dev) {
      nn_tfm_work_upload_params(w, m);
      op->upload(be, dmom, mom, np * sizeof *mom);
      op->upload(be, dvel, vel, np * sizeof *vel);
    }
  }
  if (!resumed) shuffle(order, n, &h.rng[0]);

  const nn_adamw_config ac = nn_adamw_defaults();
  const size_t nt = nn_tfm_n_tensors(m);
  const nn_tfm_tensor *ng = nn_tfm_tensor_find(m, "ng_emb");
  const double t0 = finch_clock_s();
  const uint64_t step0 = h.step;
  while (h.step < total) {
    if (h.batch_in_epoch >= per_epoch) {
      h.epoch++;
      h.batch_in_epoch = 0;
      shuffle(order, n, &h.rng[0]);
    }
    size_t a = (size_t)h.batch_in_epoch * c->batch;
    int B = (int)((n - a) < c->batch ? (n - a) : c->batch);
    nn_tfm_batch nb;
    if (nn__tfm_batch_fill(&bb, x, order + a, B, &nb) < 0) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory filling a batch");
      goto out;
    }
    int P = use_mlm ? nn__tfm_batch_mask(&bb, &nb, c->mlm_prob, V, mcap, &h.rng[2]) : 0;
    nn_tfm_forward(m, w, &nb, 1, &h.rng[1]);

    /* Losses and their gradients. */
    double cls_loss = 0, mlm_loss = 0;
    int n_lab = 0;
    if (use_cls) {
      for (int i = 0; i < B; i++) n_lab += d->labels[order[a + i]] >= 0;
      const float *logits = nn_tfm_logits(w);
      float *dl = nn_tfm_dlogits(w);
      if (on_dev) {
        op->download(be, hlog, logits, (size_t)B * C * sizeof *hlog);
        memset(hdl, 0, (size_t)B * C * sizeof *hdl);
        logits = hlog;
        dl = hdl;
      }
      for (int i = 0; i < B && n_lab; i++) {
        const size_t r = order[a + i];
        const int32_t y = d->labels[r];
        if (y < 0) continue;
        const float *z = logits + (size_t)i * C;
        float al = d->soft ? (d->alpha ? d->alpha[r] : c->alpha) : 0.0f;
        float wgt = c->cls_weight / (float)n_lab;
        float lce;
        nn_xent_ls_forward(z, &y, 1, C, c->label_smoothing, probs, &lce);
        nn_xent_ls_backward(probs, &y, 1, C, c->label_smoothing, wgt * (1 - al), dl + (size_t)i * C);
        double li = (1 - al) * lce;
        if (al > 0) {
          float lkd;
          const float *pt = d->soft + r * (size_t)C;
          nn_kl_tau_forward(z, pt, 1, C, c->tau, q, &lkd);
          nn_kl_tau_backward(q, pt, 1, C, c->tau, wgt * al, dl + (size_t)i * C);
          li += al * lkd;
        }
        cls_loss += li / n_lab;
      }
      if (on_dev) op->upload(be, nn_tfm_dlogits(w), hdl, (size_t)B * C * sizeof *hdl);
    }
    if (P > 0) {
      const float *ml = nn_tfm_mlm_forward(m, w, bb.mpos, P);
      if (!ml) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory for the masked-token head (%d positions)", P);
        goto out;
      }
      nn_xent_ls_forward(ml, bb.mtgt, P, (int)V, 0.0f, mprobs, rl);
      for (int p = 0; p < P; p++) mlm_loss += rl[p] / P;
      nn_xent_ls_backward(mprobs, bb.mtgt, P, (int)V, 0.0f, c->mlm_weight / (float)P, nn_tfm_dmlm(w));
    }
    if (mc->head_gates && c->gate_penalty > 0) {
      /* Sparsity: lambda * mean over layers, rows and heads of g. */
      const float gw = c->gate_penalty / (float)((size_t)Ls * (size_t)B * (size_t)Hs);
      for (int l = 0; l < Ls; l++) {
        float *dg = nn_tfm_dgates(w, l);
        for (int k = 0; k < B * Hs; k++) dg[k] += gw;
      }
    }
    double hid_loss = 0, att_loss = 0;
    if (tm) {
      nn_tfm_batch tnb;
      if (nn__tfm_batch_fill(&tbb, d->tx, order + a, B, &tnb) < 0) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory filling a batch");
        goto out;
      }
      memcpy(tbb.ids, bb.ids, (size_t)B * (size_t)nb.T * sizeof *tbb.ids); /* the same (masked) tokens */
      nn_tfm_forward(tm, tw, &tnb, 0, NULL);
      const int T = nb.T, N = B * T, Dt = (int)tmc->dim, g = (int)(tmc->heads / mc->heads);
      for (int l = 0; l < Ls; l++) {
        const int k = d->layer_map[l];
        if (k < 0 || (d->progressive && h.epoch < (uint32_t)((uint64_t)l * c->epochs / (uint64_t)Ls))) continue;
        float *Pw = proj + proj_off[l], *dPw = grads + np_model + proj_off[l];
        if (d->hidden_weight > 0) {
          const float *hs = nn_tfm_hidden(w, l + 1), *ht = nn_tfm_hidden(tw, k + 1);
          hid_loss += nn_mse_proj_forward(be, hs, Pw, Pw + (size_t)Dt * Ds, ht, nb.mask, N, Ds, Dt, pred);
          nn_mse_proj_backward(be, hs, Pw, ht, nb.mask, N, Ds, Dt, d->hidden_weight, pred, nn_tfm_dhidden(w, l + 1),
                               dPw, dPw + (size_t)Dt * Ds);
        }
        if (d->attn_weight > 0) {
          /* Teacher heads averaged in groups of g, one group per student head. */
          const float *at = nn_tfm_attn(tw, k);
          const size_t TT = (size_t)T * T;
          for (int b = 0; b < B; b++)
            for (int hh = 0; hh < Hs; hh++) {
              float *dst = ptg + ((size_t)b * Hs + hh) * TT;
              memset(dst, 0, TT * sizeof *dst);
              for (int j = 0; j < g; j++) {
                const float *src = at + ((size_t)b * tmc->heads + (size_t)hh * g + j) * TT;
                for (size_t e = 0; e < TT; e++) dst[e] += src[e] / (float)g;
              }
            }
          att_loss += nn_attn_kl_forward(ptg, nn_tfm_attn(w, l), nb.mask, B, Hs, T);
          nn_attn_kl_backward(ptg, nn_tfm_attn(w, l), nb.mask, B, Hs, T, d->attn_weight, nn_tfm_dattn(w, l));
        }
      }
    }
    nn_tfm_backward(m, w, &nb, on_dev ? dgrads : grads);

    /* Clip and update. */
    size_t n_touched = 0;
    const uint32_t *touched = ng ? nn_tfm_touched_ngrams(w, &n_touched) : NULL;
    double ss = 0;
    const float lr = lr_at(c, h.step, total);
    const uint64_t t1 = h.step + 1;
    if (on_dev) {
      /* n-gram rows no batch touched hold zero gradients (each update
       * zeroes the rows it used), so the norm is the whole block's. */
      ss = op->sum_sq(be, dgrads, np_model);
      const float gs = nn_clip_scale(ss, c->clip);
      float *dp = nn_tfm_work_params(w);
      for (size_t k = 0; k < nt; k++) {
        const nn_tfm_tensor *t = nn_tfm_tensor_at(m, k);
        size_t cnt = (size_t)t->rows * t->cols;
        if (t == ng || !cnt) continue;
        op->adamw(be, dp + t->off, dgrads + t->off, dmom + t->off, dvel + t->off, cnt, lr,
                  t->decay ? c->weight_decay : 0.0f, gs, t1, &ac);
        op->zero(be, dgrads + t->off, cnt * sizeof(float));
      }
      if (ng && n_touched) {
        op->upload(be, drows, touched, n_touched * sizeof *touched);
        op->adamw_rows(be, dp + ng->off, dgrads + ng->off, dmom + ng->off, dvel + ng->off, drows, n_touched,
                       (int)ng->cols, lr, ng->decay ? c->weight_decay : 0.0f, gs, t1, &ac);
      }
    }
    for (size_t k = 0; !on_dev && k < nt; k++) {
      const nn_tfm_tensor *t = nn_tfm_tensor_at(m, k);
      if (t == ng) continue;
      ss += nn_sum_sq(grads + t->off, (size_t)t->rows * t->cols);
    }
    for (size_t k = 0; !on_dev && ng && k < n_touched; k++)
      ss += nn_sum_sq(grads + ng->off + (size_t)touched[k] * ng->cols, ng->cols);
    if (nproj) ss += nn_sum_sq(grads + np_model, nproj); /* CPU only, as matching is */
    const float gs = nn_clip_scale(ss, c->clip);
    for (size_t k = 0; !on_dev && k < nt; k++) {
      const nn_tfm_tensor *t = nn_tfm_tensor_at(m, k);
      if (t == ng) continue;
      size_t cnt = (size_t)t->rows * t->cols;
      nn_adamw_update(params + t->off, grads + t->off, mom + t->off, vel + t->off, cnt, lr,
                      t->decay ? c->weight_decay : 0.0f, gs, t1, &ac);
      memset(grads + t->off, 0, cnt * sizeof *grads);
    }
    for (size_t k = 0; !on_dev && ng && k < n_touched; k++) {
      /* Lazy AdamW on the touched rows, one row at a time (their gradients
       * lie in the dense block). */
      size_t off = ng->off + (size_t)touched[k] * ng->cols;
      uint32_t zero = 0;
      nn_adamw_update_rows(params + off, grads + off, &zero, 1, (int)ng->cols, mom + off, vel + off, lr,
                           ng->decay ? c->weight_decay : 0.0f, gs, t1, &ac);
      memset(grads + off, 0, ng->cols * sizeof *grads);
    }
    if (nproj) {
      nn_adamw_update(proj, grads + np_model, mom + np_model, vel + np_model, nproj, lr, c->weight_decay, gs, t1, &ac);
      memset(grads + np_model, 0, nproj * sizeof *grads);
    }
    h.step++;
    h.batch_in_epoch++;
    if (cb) {
      double el = finch_clock_s() - t0;
      double eps = el > 0 ? (double)(h.step - step0) * c->batch / el : 0;
      nn_tfm_progress pr = {.step = h.step, .total = total, .epoch = h.epoch + 1, .epochs = c->epochs,
                            .loss = (float)(cls_loss + c->mlm_weight * mlm_loss + d->hidden_weight * hid_loss +
                                            d->attn_weight * att_loss),
                            .cls_loss = (float)cls_loss, .mlm_loss = (float)mlm_loss,
                            .hidden_loss = (float)hid_loss, .attn_loss = (float)att_loss, .lr = lr, .grad_norm = (float)sqrt(ss),
                            .ex_per_s = eps,
                            .eta_s = eps > 0 ? (double)(total - h.step) * c->batch / eps : 0};
      cb(cb_ctx, &pr);
    }
    int stop = c->stop_after && h.step - step0 >= c->stop_after;
    if (c->checkpoint && (h.step % (c->checkpoint_every ? c->checkpoint_every : 200) == 0 || h.step == total || stop)) {
      if (on_dev) {
        nn_tfm_work_download_params(w, m);
        op->download(be, mom, dmom, np * sizeof *mom);
        op->download(be, vel, dvel, np * sizeof *vel);
      }
      if ((st = ckpt_save(c->checkpoint, &h, order, params, np_model, proj, mom, vel, err)) != FINCH_OK) goto out;
    }
    if ((st = nn_backend_check(be, err)) != FINCH_OK) goto out;
    if (stop) break;
  }
  if (on_dev && w) {
    nn_tfm_work_download_params(w, m);
    st = nn_backend_check(be, err);
  }
out:
  if (on_dev) {
    op->release(be, dgrads);
    op->release(be, dmom);
    op->release(be, dvel);
    op->release(be, drows);
  }
  free(hlog);
  free(hdl);
  nn_tfm_work_free(w);
  nn_tfm_work_free(tw);
  nn__tfm_batch_free(&bb);
  nn__tfm_batch_free(&tbb);
  free(proj);
  free(pred);
  free(ptg);
  free(proj_off);
  free(grads);
  free(mom);
  free(vel);
  free(probs);
  free(q);
  free(rl);
  free(mprobs);
  free(order);
  return st;
}
