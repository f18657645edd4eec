/* The training work area of the BERT encoder (nn/bert_train.h): the forward
 * with dropout keeping every layer's activations, and the backward through
 * the head, the mean pool, every post-LN layer and the embeddings, built
 * from the ops of the work area's backend (nn/ops.h).
 *
 * Attention-probability dropout is not part of the op table's attention, so
 * with p_a > 0 the forward recomputes the context from the dropped
 * probabilities (ctx = drop(att) v, one strided GEMM), and the backward
 * hands the attention op a zero context gradient with the probabilities'
 * gradient (d drop(att) = dctx v^T, masked) as its extra input, then adds
 * v's share, drop(att)^T dctx. At the sequence lengths fine-tuned here the
 * attention is a small share of a step, so the extra GEMMs cost little. */
#include "nn/bert_train.h"

#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

/* Offsets into the training block of one layer's tensors. */
typedef struct {
  size_t wqkv, bqkv, wo, bo, ln1_g, ln1_b, w1, b1, w2, b2, ln2_g, ln2_b;
} grad_layer_offs;

/* One layer's saved activations, sized for Bmax rows of Tmax positions. */
typedef struct {
  float *qkvh;          /* (3,B,Hh,T,Dh) head-major q | k | v */
  float *att;           /* (B,Hh,T,T) softmax probabilities */
  float *att_d, *m_att; /* (B,Hh,T,T) the probabilities after dropout, and the mask */
  float *ctx;           /* (N,D) context, heads merged */
  float *m_o;           /* (N,D) dropout mask of the attention output */
  float *u1, *mu1, *rs1; /* (N,D) LN1's input h + attention output; (N) its row statistics */
  float *a;             /* (N,D) LN1's output */
  float *f, *g;         /* (N,F) GELU's input and output */
  float *m_f;           /* (N,D) dropout mask of the feed-forward output */
  float *u2, *mu2, *rs2; /* (N,D) LN2's input a + feed-forward output; (N) its statistics */
} grad_layer_acts;

struct nn_bert_train_work {
  nn_bert_config cfg;
  int C;
  nn_backend *be;
  int on_host;      /* be's memory is host memory */
  int Bmax, Tmax;
  int B, T;         /* of the last forward */
  int drop_h, drop_a; /* the last forward's dropout was on */
  size_t tok, pos, ln_emb_g, ln_emb_b, head_w, head_b;
  grad_layer_offs *off;   /* (L) */
  grad_layer_acts *layer; /* (L) */
  int32_t *ids;     /* (Bmax,Tmax) the batch's ids and mask in backend memory */
  uint8_t *mask;
  float *h_mask;    /* host staging of a dropout mask (device backends only) */
  float *block;     /* the one allocation of everything below */
  float *x, *mu_e, *rs_e, *m_e; /* (N,D) embeddings; (N) LN_emb statistics; (N,D) mask of h0 */
  float **h;        /* L+1 of (N,D): h0 and every layer's output */
  float *pooled, *dpooled; /* (B,D) */
  float *logits, *dlogits; /* (B,C) */
  float *s_dh, *s_du, *s_ds; /* (N,D) scratch of the backward */
  float *s_qkv;     /* (N,3D) */
  float *s_dqkv;    /* (3,B,Hh,T,Dh) */
  float *s_ctxh;    /* (B,Hh,T,Dh) */
  float *s_zero;    /* (B,Hh,T,Dh) zeros: the context gradient handed over with dropout */
  float *s_nf;      /* (N,F) */
  float *s_att;     /* (B,Hh,T,T) the probabilities' gradient */
  float *s_tt;      /* (B,Hh,T,T) the attention backward's scratch */
};

size_t nn_bert_train_n_params(const nn_bert *m, int C) {
  return nn_bert_n_params(m) + (size_t)C * (nn_bert_get_config(m)->dim + 1);
}

/* Hands out n floats at *off of base, 64-byte aligned; with base NULL it
 * only counts, so one function both sizes and carves the allocation. */
static float *take(float *base, size_t *off, size_t n) {
  float *p = base ? base + *off : NULL;
  *off += (n + 15) & ~(size_t)15;
  return p;
}

static size_t layout(nn_bert_train_work *w, float *base) {
  const nn_bert_config *c = &w->cfg;
  const size_t B = (size_t)w->Bmax, T = (size_t)w->Tmax, N = B * T, D = c->dim, F = c->ff, C = (size_t)w->C;
  const size_t ND = N * D, A = B * c->heads * T * T;
  size_t off = 0;
  w->x = take(base, &off, ND);
  w->mu_e = take(base, &off, N);
  w->rs_e = take(base, &off, N);
  w->m_e = take(base, &off, ND);
  for (uint32_t l = 0; l <= c->layers; l++) w->h[l] = take(base, &off, ND);
  for (uint32_t l = 0; l < c->layers; l++) {
    grad_layer_acts *a = &w->layer[l];
    a->qkvh = take(base, &off, 3 * ND);
    a->att = take(base, &off, A);
    a->att_d = take(base, &off, A);
    a->m_att = take(base, &off, A);
    a->ctx = take(base, &off, ND);
    a->m_o = take(base, &off, ND);
    a->u1 = take(base, &off, ND);
    a->mu1 = take(base, &off, N);
    a->rs1 = take(base, &off, N);
    a->a = take(base, &off, ND);
    a->f = take(base, &off, N * F);
    a->g = take(base, &off, N * F);
    a->m_f = take(base, &off, ND);
    a->u2 = take(base, &off, ND);
    a->mu2 = take(base, &off, N);
    a->rs2 = take(base, &off, N);
  }
  w->pooled = take(base, &off, B * D);
  w->dpooled = take(base, &off, B * D);
  w->logits = take(base, &off, B * C);
  w->dlogits = take(base, &off, B * C);
  w->s_dh = take(base, &off, ND);
  w->s_du = take(base, &off, ND);
  w->s_ds = take(base, &off, ND);
  w->s_qkv = take(base, &off, 3 * ND);
  w->s_dqkv = take(base, &off, 3 * ND);
  w->s_ctxh = take(base, &off, ND);
  w->s_zero = take(base, &off, ND);
  w->s_nf = take(base, &off, N * F);
  w->s_att = take(base, &off, A);
  w->s_tt = take(base, &off, A);
  return off;
}

void nn_bert_train_work_free(nn_bert_train_work *w) {
  if (!w) return;
  nn_backend *be = w->be;
  be->ops->release(be, w->block);
  be->ops->release(be, w->ids);
  be->ops->release(be, w->mask);
  free(w->h_mask);
  free(w);
}

/* The offsets of the encoder's tensors, by their place in m's table (the
 * order nn/bert.h documents); 0, or -1 when the table is not that order. */
static int find_offsets(nn_bert_train_work *w, const nn_bert *m) {
  static const char *names[12] = {"wqkv", "bqkv", "wo", "bo", "ln1_g", "ln1_b",
                                  "w1", "b1", "w2", "b2", "ln2_g", "ln2_b"};
  const nn_bert_tensor *t0 = nn_bert_tensor_at(m, 0), *t1 = nn_bert_tensor_at(m, 1);
  const nn_bert_tensor *t2 = nn_bert_tensor_at(m, 2), *t3 = nn_bert_tensor_at(m, 3);
  if (!t0 || !t1 || !t2 || !t3 || strcmp(t0->name, "tok_emb") || strcmp(t1->name, "pos_emb") ||
      strcmp(t2->name, "ln_emb_g") || strcmp(t3->name, "ln_emb_b"))
    return -1;
  w->tok = t0->off, w->pos = t1->off, w->ln_emb_g = t2->off, w->ln_emb_b = t3->off;
  for (uint32_t l = 0; l < w->cfg.layers; l++) {
    size_t *o = (size_t *)&w->off[l];
    for (int k = 0; k < 12; k++) {
      const nn_bert_tensor *t = nn_bert_tensor_at(m, 4 + 12 * (size_t)l + (size_t)k);
      const char *dot = t ? strchr(t->name, '.') : NULL;
      if (!dot || strcmp(dot + 1, names[k])) return -1;
      o[k] = t->off;
    }
  }
  w->head_w = nn_bert_n_params(m);
  w->head_b = w->head_w + (size_t)w->C * w->cfg.dim;
  return 0;
}

finch_status nn_bert_train_work_init(nn_bert_train_work **out, const nn_bert *m, int C, int Bmax, int Tmax,
                                     nn_backend *be, finch_err *err) {
  *out = NULL;
  if (!be) be = nn_backend_cpu();
  const nn_bert_config *c = nn_bert_get_config(m);
  if (C < 1 || C > 1000000) return finch_err_set(err, FINCH_EINVAL, "BERT head labels %d are outside [1, 10^6]", C);
  if (Bmax < 1 || Bmax > 65536) return finch_err_set(err, FINCH_EINVAL, "BERT batch %d is outside [1, 65536]", Bmax);
  if (Tmax < 1 || (uint32_t)Tmax > c->max_pos)
    return finch_err_set(err, FINCH_EINVAL, "BERT sequence length %d is outside [1, %u]", Tmax, c->max_pos);
  const size_t L = c->layers;
  nn_bert_train_work *w = calloc(1, sizeof *w + (L + 1) * sizeof(float *) + L * sizeof(grad_layer_offs) +
                                        L * sizeof(grad_layer_acts));
  if (!w) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a BERT training work area");
  w->cfg = *c;
  w->C = C;
  w->be = be;
  w->on_host = be->ops == nn_ops_cpu();
  w->Bmax = Bmax;
  w->Tmax = Tmax;
  w->h = (float **)(w + 1);
  w->off = (grad_layer_offs *)(w->h + L + 1);
  w->layer = (grad_layer_acts *)(w->off + L);
  if (find_offsets(w, m) != 0) {
    free(w);
    return finch_err_set(err, FINCH_EINVAL, "BERT tensor table is not in the order of nn/bert.h");
  }
  const size_t n = layout(w, NULL), BT = (size_t)Bmax * Tmax;
  const size_t A = BT * c->heads * (size_t)Tmax, ND = BT * c->dim;
  w->block = be->ops->alloc(be, n * sizeof(float));
  w->ids = be->ops->alloc(be, BT * sizeof *w->ids);
  w->mask = be->ops->alloc(be, BT);
  int ok = w->block && w->ids && w->mask;
  if (ok && !w->on_host) ok = (w->h_mask = malloc((A > ND ? A : ND) * sizeof *w->h_mask)) != NULL;
  if (!ok) {
    finch_err why = {0};
    finch_status st = nn_backend_check(be, &why);
    nn_bert_train_work_free(w);
    if (st) return finch_err_set(err, st, "%s", why.msg);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a BERT training work area (%zu MiB for batch %d x %d)",
                         n * sizeof(float) >> 20, Bmax, Tmax);
  }
  layout(w, w->block);
  be->ops->zero(be, w->s_zero, ND * sizeof(float));
  *out = w;
  return FINCH_OK;
}

const float *nn_bert_train_logits(const nn_bert_train_work *w) { return w->logits; }
const float *nn_bert_train_pooled(const nn_bert_train_work *w) { return w->pooled; }
float *nn_bert_train_dlogits(nn_bert_train_work *w) { return w->dlogits; }

/* x (n) *= a dropout mask drawn from rng into mask (n, backend memory): each
 * unit kept with probability 1 - p and scaled by 1 / (1 - p). Drawn on the
 * host (in place on the CPU, staged on a device), so both drop the same
 * units: the draws of nn_dropout_forward (nn/layers.h). */
static void dropout(nn_bert_train_work *w, float *x, float *mask, size_t n, float p, nn_rng *rng) {
  float *hm = w->on_host ? mask : w->h_mask;
  const float keep = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++) hm[i] = nn_rng_uniform(rng) < p ? 0.0f : keep;
  if (!w->on_host) w->be->ops->upload(w->be, mask, hm, n * sizeof *mask);
  w->be->ops->mul(w->be, x, mask, n);
}

/* ---- forward ----------------------------------------------------------- */

finch_status nn_bert_train_forward(const nn_bert *m, nn_bert_train_work *w, const float *P, const int32_t *ids,
                                   const uint8_t *mask, int B, int T, float p_hidden, float p_attn, nn_rng *rng,
                                   finch_err *err) {
  const nn_bert_config *c = &w->cfg;
  (void)m;
  if (B < 1 || B > w->Bmax || T < 1 || T > w->Tmax)
    return finch_err_set(err, FINCH_EINVAL, "BERT batch %d x %d is outside the training work area's %d x %d", B, T,
                         w->Bmax, w->Tmax);
  if (!(p_hidden >= 0.0f && p_hidden <= 0.9f && p_attn >= 0.0f && p_attn <= 0.9f))
    return finch_err_set(err, FINCH_EINVAL, "BERT dropout %g / %g is outside [0, 0.9]", (double)p_hidden,
                         (double)p_attn);
  if ((p_hidden > 0.0f || p_attn > 0.0f) && !rng)
    return finch_err_set(err, FINCH_EINVAL, "BERT dropout needs an rng");
  for (int b = 0; b < B; b++) {
    if (!mask[(size_t)b * T]) return finch_err_set(err, FINCH_EINVAL, "BERT batch row %d: position 0 is padding", b);
    for (int t = 0; t < T; t++)
      if (ids[(size_t)b * T + t] < 0 || (uint32_t)ids[(size_t)b * T + t] >= c->vocab)
        return finch_err_set(err, FINCH_EINVAL, "BERT batch row %d position %d: token id %d outside [0, %u)", b, t,
                             ids[(size_t)b * T + t], c->vocab);
  }
  nn_backend *be = w->be;
  const nn_ops *op = be->ops;
  const int D = (int)c->dim, F = (int)c->ff, Hh = (int)c->heads, Dh = D / Hh, N = B * T, C = w->C;
  const size_t ND = (size_t)N * D, BH = (size_t)B * Hh, TT = (size_t)T * T, hs = (size_t)T * Dh;
  const float eps = c->ln_eps;
  w->B = B;
  w->T = T;
  w->drop_h = p_hidden > 0.0f;
  w->drop_a = p_attn > 0.0f;
  op->upload(be, w->ids, ids, (size_t)N * sizeof *ids);
  op->upload(be, w->mask, mask, (size_t)N);
  op->zero(be, w->dlogits, (size_t)B * C * sizeof(float));

  op->tok_embed_forward(be, P + w->tok, P + w->pos, NULL, D, w->ids, NULL, NULL, B, T, w->x); /* x (N,D) */
  op->layernorm_eps_forward(be, w->x, P + w->ln_emb_g, P + w->ln_emb_b, N, D, eps, w->h[0], w->mu_e,
                            w->rs_e);                                                       /* h0 (N,D) */
  if (w->drop_h) dropout(w, w->h[0], w->m_e, ND, p_hidden, rng);                            /* h0 (N,D) */
  for (uint32_t l = 0; l < c->layers; l++) {
    const grad_layer_offs *o = &w->off[l];
    grad_layer_acts *a = &w->layer[l];
    const float *h = w->h[l];
    op->linear_forward(be, h, P + o->wqkv, P + o->bqkv, N, D, 3 * D, w->s_qkv);            /* (N,3D) */
    op->heads_split(be, w->s_qkv, 3, B, T, D, Hh, a->qkvh);                                /* (3,B,Hh,T,Dh) */
    op->attention_forward(be, a->qkvh, w->mask, B, T, Hh, Dh, a->att, w->s_ctxh);          /* (B,Hh,T,Dh) */
    if (w->drop_a) {
      op->copy(be, a->att_d, a->att, BH * TT * sizeof(float));                             /* (B,Hh,T,T) */
      dropout(w, a->att_d, a->m_att, BH * TT, p_attn, rng);
      op->gemm_strided(be, 0, 0, T, Dh, T, 1.0f, a->att_d, TT, a->qkvh + 2 * BH * hs, hs, 0.0f, w->s_ctxh, hs,
                       (int)BH);                                                            /* ctx = att_d v */
    }
    op->heads_merge(be, w->s_ctxh, 1, B, T, D, Hh, a->ctx);                                /* ctx (N,D) */
    op->linear_forward(be, a->ctx, P + o->wo, P + o->bo, N, D, D, w->s_ds);                /* (N,D) */
    if (w->drop_h) dropout(w, w->s_ds, a->m_o, ND, p_hidden, rng);
    op->add(be, h, w->s_ds, a->u1, ND);                                                    /* u1 (N,D) */
    op->layernorm_eps_forward(be, a->u1, P + o->ln1_g, P + o->ln1_b, N, D, eps, a->a, a->mu1, a->rs1); /* a */
    op->linear_forward(be, a->a, P + o->w1, P + o->b1, N, D, F, a->f);                     /* f (N,F) */
    op->gelu_forward(be, a->f, a->g, (size_t)N * F);                                       /* g (N,F) */
    op->linear_forward(be, a->g, P + o->w2, P + o->b2, N, F, D, w->s_ds);                  /* (N,D) */
    if (w->drop_h) dropout(w, w->s_ds, a->m_f, ND, p_hidden, rng);
    op->add(be, a->a, w->s_ds, a->u2, ND);                                                 /* u2 (N,D) */
    op->layernorm_eps_forward(be, a->u2, P + o->ln2_g, P + o->ln2_b, N, D, eps, w->h[l + 1], a->mu2,
                              a->rs2);                                                      /* h_{l+1} (N,D) */
  }
  op->pool_mean_forward(be, w->h[c->layers], w->mask, B, T, D, w->pooled);                 /* pooled (B,D) */
  op->linear_forward(be, w->pooled, P + w->head_w, P + w->head_b, B, D, C, w->logits);     /* logits (B,C) */
  return nn_backend_check(be, err);
}

/* ---- backward ---------------------------------------------------------- */

void nn_bert_train_backward(const nn_bert *m, nn_bert_train_work *w, const float *P, float *G) {
  const nn_bert_config *c = &w->cfg;
  (void)m;
  nn_backend *be = w->be;
  const nn_ops *op = be->ops;
  const int B = w->B, T = w->T, D = (int)c->dim, F = (int)c->ff, Hh = (int)c->heads, Dh = D / Hh, N = B * T;
  const int C = w->C, L = (int)c->layers;
  const size_t ND = (size_t)N * D, BH = (size_t)B * Hh, TT = (size_t)T * T, hs = (size_t)T * Dh;
  float *dh = w->s_dh, *du = w->s_du;

  op->linear_backward(be, w->dlogits, w->pooled, P + w->head_w, B, D, C, w->dpooled, G + w->head_w,
                      G + w->head_b);                                                      /* dpooled (B,D) */
  op->zero(be, dh, ND * sizeof(float));
  op->pool_mean_backward(be, w->dpooled, w->mask, B, T, D, dh);                            /* d h_L (N,D) */
  for (int l = L - 1; l >= 0; l--) {
    const grad_layer_offs *o = &w->off[l];
    const grad_layer_acts *a = &w->layer[l];
    /* h_{l+1} = LN2(u2), u2 = a + drop(GELU(a W1^T + b1) W2^T + b2); dh = d h_{l+1} */
    op->zero(be, du, ND * sizeof(float));
    op->layernorm_backward(be, dh, a->u2, P + o->ln2_g, a->mu2, a->rs2, N, D, du, G + o->ln2_g,
                           G + o->ln2_b);                                                   /* du = d u2 (N,D) */
    const float *ds = du;
    if (w->drop_h) {
      op->copy(be, w->s_ds, du, ND * sizeof(float));
      op->mul(be, w->s_ds, a->m_f, ND);
      ds = w->s_ds;
    }
    op->linear_backward(be, ds, a->g, P + o->w2, N, F, D, w->s_nf, G + o->w2, G + o->b2);  /* d g (N,F) */
    op->gelu_backward(be, a->f, w->s_nf, w->s_nf, (size_t)N * F);                           /* d f (N,F) */
    op->linear_backward(be, w->s_nf, a->a, P + o->w1, N, D, F, dh, G + o->w1, G + o->b1);  /* dh = d a (N,D) */
    op->acc(be, du, dh, ND);                                                                 /* + residual */
    /* a = LN1(u1), u1 = h_l + drop(ctx Wo^T + bo) */
    op->zero(be, du, ND * sizeof(float));
    op->layernorm_backward(be, dh, a->u1, P + o->ln1_g, a->mu1, a->rs1, N, D, du, G + o->ln1_g,
                           G + o->ln1_b);                                                   /* du = d u1 (N,D) */
    ds = du;
    if (w->drop_h) {
      op->copy(be, w->s_ds, du, ND * sizeof(float));
      op->mul(be, w->s_ds, a->m_o, ND);
      ds = w->s_ds;
    }
    op->linear_backward(be, ds, a->ctx, P + o->wo, N, D, D, dh, G + o->wo, G + o->bo);     /* dh = d ctx (N,D) */
    op->heads_split(be, dh, 1, B, T, D, Hh, w->s_ctxh);                                     /* (B,Hh,T,Dh) */
    if (w->drop_a) {
      const float *v = a->qkvh + 2 * BH * hs;
      op->gemm_strided(be, 0, 1, T, T, Dh, 1.0f, w->s_ctxh, hs, v, hs, 0.0f, w->s_att, TT,
                       (int)BH);                                                            /* d att_d (B,Hh,T,T) */
      op->mul(be, w->s_att, a->m_att, BH * TT);                                             /* d att */
      op->attention_backward(be, w->s_zero, w->s_att, a->qkvh, a->att, B, T, Hh, Dh, w->s_dqkv,
                             w->s_tt);                                                      /* dq, dk; dv = 0 */
      op->gemm_strided(be, 1, 0, T, Dh, T, 1.0f, a->att_d, TT, w->s_ctxh, hs, 1.0f, w->s_dqkv + 2 * BH * hs, hs,
                       (int)BH);                                                            /* dv = att_d^T dctx */
    } else {
      op->attention_backward(be, w->s_ctxh, NULL, a->qkvh, a->att, B, T, Hh, Dh, w->s_dqkv,
                             w->s_tt);                                                      /* (3,B,Hh,T,Dh) */
    }
    op->heads_merge(be, w->s_dqkv, 3, B, T, D, Hh, w->s_qkv);                               /* (N,3D) */
    op->linear_backward(be, w->s_qkv, w->h[l], P + o->wqkv, N, D, 3 * D, dh, G + o->wqkv,
                        G + o->bqkv);                                                       /* dh = d h_l */
    op->acc(be, du, dh, ND);                                                                 /* + residual */
  }
  /* h0 = drop(LN_emb(x)), x = word[ids] + pos */
  if (w->drop_h) op->mul(be, dh, w->m_e, ND);
  op->zero(be, du, ND * sizeof(float));
  op->layernorm_backward(be, dh, w->x, P + w->ln_emb_g, w->mu_e, w->rs_e, N, D, du, G + w->ln_emb_g,
                         G + w->ln_emb_b);                                                  /* du = d x (N,D) */
  op->tok_embed_backward(be, du, D, w->ids, NULL, NULL, B, T, G + w->tok, G + w->pos, NULL);
}
