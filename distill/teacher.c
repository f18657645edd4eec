#include "distill/teacher.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dataset.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/models.h"
#include "core/paths.h"
#include "distill/internal.h"
#include "distill/teacher_bert.h"
#include "distill/teacher_select.h"
#include "nn/halves.h"
#include "nn/bert_head.h"
#include "nn/model_arch.h"
#include "nn/tfm_train.h"

/* Rows of a split as the members take them: texts point into the loaded split. */
typedef struct {
  const char **texts;
  int32_t *labels;
  int *source; /* 1 = a source row, 0 = an augmented variant */
  size_t n;
} split_rows;

/* ---- members ---------------------------------------------------------------- */

typedef struct {
  char name[32];
  int bert_epochs; /* a "bert" or "bertft" member: its fine-tuning epochs, 0 = frozen */
  nn_model *model;
  float *sel_probs, *rep_probs; /* (n_sel, C), (n_rep, C): the holdout halves' rows at T = 1 */
  float temperature;             /* fitted on the selection half */
  double sel_acc, sel_nll, dev_acc, dev_nll, seconds; /* dev_: the report half */
  char key[FINCH_SHA256_HEX_LEN]; /* the member-cache key (opts->reuse_members) */
  int cached;                     /* 1 = loaded from the member cache */
} member;

typedef struct {
  const finch_teacher_opts *o;
  finch_db *db;
  nn_backend *be;
  finch_dataset_split *train_set, *dev_set; /* as loaded; train and dev point into them */
  const char *const *labels; /* the training label list, train_set's */
  size_t C;
  split_rows train, dev;
  uint8_t *half;           /* (dev.n) 0 = selection half, 1 = report half (nn_split_halves) */
  int32_t *sel_y, *rep_y;  /* the halves' labels */
  size_t n_sel, n_rep;
  char bert_dir[4096];     /* the pretrained checkpoint of a "bert" member, "" when none is listed */
  char bert_id[FINCH_SHA256_HEX_LEN]; /* its weights' identity, for the member cache */
  finch_dataset_texts *general_set;
  const char *const *general;
  size_t n_general;
  long long run_id; /* the training_runs row of the encoders' steps, 0 = none yet */
  nn_tokenizer *tok; /* shared by the encoders; trained once */
  nn_tfm *pretrained; /* MLM-pretrained encoder (no head), NULL when none */
  int n_tfm;
} ctx;

static void run_name(char *buf, size_t n, const ctx *c, const char *member_name);

/* Per-epoch (slr: per-iteration) figures of a bag-of-n-grams or sparse LR
 * member, with dev figures on the holdout's selection half. */
static void member_log(ctx *c, member *m, const char *phase, finch_distill__steplog *sl, finch_distill__epochlog *el) {
  *sl = (finch_distill__steplog){.member = m->name, .phase = phase, .quiet = c->o->quiet, .run_id = c->run_id};
  run_name(sl->run, sizeof sl->run, c, m->name);
  *el = (finch_distill__epochlog){.log = sl};
  finch_distill__selection_rows(c->dev.texts, c->dev.labels, c->dev.n, c->C, c->o->seed, el);
}

static finch_status member_log_end(ctx *c, finch_distill__steplog *sl, finch_distill__epochlog *el, finch_status st,
                                   finch_err *err) {
  if (!st) st = finch_distill__flush_steps(c->db, sl, err);
  finch_distill__epochlog_free(el);
  free(sl->buf);
  return st;
}

static finch_status train_slr(ctx *c, member *m, finch_err *err) {
  nn_sparse_lr_config sc = nn_sparse_lr_defaults();
  sc.seed = c->o->seed;
  nn_sparse_lr *s = NULL;
  finch_distill__steplog sl;
  finch_distill__epochlog el;
  member_log(c, m, "lbfgs", &sl, &el);
  finch_status st = nn_sparse_lr_train_watched(&s, c->train.texts, c->train.labels, c->train.n, c->C, &sc,
                                               finch_distill__on_slr_iter, &el, err);
  if (!st) st = nn_model_from_sparse_lr(&m->model, s, (const char *const *)c->labels, c->C, err);
  if (!st) {
    /* The iterations show no model: the fitted one's dev figures join the
     * last iteration's row (same iteration, same loss and step length). */
    nn_epoch_info e = {.epoch = el.iters, .epochs = sc.epochs, .step = el.iters, .loss = (float)el.last_loss,
                       .lr = (float)el.last_lr, .model = m->model};
    finch_distill__on_epoch(&el, &e);
  }
  return member_log_end(c, &sl, &el, st, err);
}

/* The bow-th "bow" member (1-based): the first keeps the run's seed, the
 * others differ by it. */
static finch_status train_bow(ctx *c, member *m, int bow, finch_err *err) {
  nn_dataset ds = {.texts = c->train.texts, .labels = c->train.labels, .n = c->train.n};
  nn_train_config tc = nn_train_config_teacher();
  tc.seed = c->o->seed + 1000u * (uint64_t)(bow - 1);
  size_t n_source = 0;
  for (size_t i = 0; i < c->train.n; i++) n_source += c->train.source[i];
  if (n_source < c->train.n) {
    double e = (double)tc.epochs * (double)n_source / (double)c->train.n;
    tc.epochs = e < 1 ? 1 : (uint32_t)(e + 0.5);
  }
  finch_distill__steplog sl;
  finch_distill__epochlog el;
  member_log(c, m, "train", &sl, &el);
  finch_status st = nn_model_train_watched(&m->model, &ds, (const char *const *)c->labels, c->C, &tc, NULL, NULL,
                                           c->be, finch_distill__on_epoch, &el, err);
  return member_log_end(c, &sl, &el, st, err);
}

static nn_tfm_config tfm_config(const ctx *c, uint32_t n_labels) {
  const finch_teacher_opts *o = c->o;
  nn_tfm_config tc = {.vocab = nn_tokenizer_size(c->tok), .buckets = o->ngrams ? 50000 : 0,
                      .max_len = o->seq_len ? o->seq_len : 48, .dim = o->dim ? o->dim : 128,
                      .layers = o->layers ? o->layers : 2, .heads = o->heads ? o->heads : 4,
                      .ff = o->ff ? o->ff : 512, .n_labels = n_labels, .pool = NN_POOL_MEAN, .dropout = 0.1f};
  return tc;
}

/* The checkpoint file of one encoder's training (pre-training or a member). */
static finch_status ckpt_path(const ctx *c, const char *member_name, char *buf, size_t n, finch_err *err) {
  char dir[PATH_MAX];
  finch_status st = finch_home_subdir("checkpoints", dir, sizeof dir, err);
  if (st) return st;
  snprintf(buf, n, "%s/%s-%s-%llu.ck", dir, c->o->dataset, member_name, (unsigned long long)c->o->seed);
  return FINCH_OK;
}

static void run_name(char *buf, size_t n, const ctx *c, const char *member_name) {
  char tag[64];
  finch_unique_tag(tag, sizeof tag);
  snprintf(buf, n, "%s-%s-%s", c->o->dataset, member_name, tag);
}

/* MLM pre-training of an encoder without a classifier head on the general
 * corpus and the training texts. */
static finch_status pretrain(ctx *c, finch_err *err) {
  size_t n = c->n_general + c->train.n;
  const char **texts = malloc((n + 1) * sizeof *texts);
  if (!texts) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; i < c->n_general; i++) texts[i] = c->general[i];
  for (size_t i = 0; i < c->train.n; i++) texts[c->n_general + i] = c->train.texts[i];
  nn_tfm_config tc = tfm_config(c, 0);
  nn_tfm_corpus x;
  finch_status st = nn_tfm_corpus_encode(&x, c->tok, texts, n, (int)tc.max_len, tc.buckets, 3, 5, err);
  free(texts);
  if (st) return st;
  nn_tfm *m = NULL;
  if ((st = nn_tfm_create(&m, &tc, c->o->seed, err)) != FINCH_OK) {
    nn_tfm_corpus_free(&x);
    return st;
  }
  nn_tfm_train_config trc = nn_tfm_train_defaults();
  trc.epochs = (uint32_t)c->o->pretrain_epochs;
  trc.batch = 128;
  trc.lr = 1e-3f;
  trc.mlm_prob = 0.15f;
  trc.cls_weight = 0;
  trc.seed = c->o->seed;
  nn_tfm_data d = {.x = &x};
  char ck[PATH_MAX + 64];
  if ((st = ckpt_path(c, "pretrain", ck, sizeof ck, err)) != FINCH_OK) {
    nn_tfm_corpus_free(&x);
    nn_tfm_free(m);
    return st;
  }
  trc.checkpoint = ck;
  trc.resume = c->o->resume;
  finch_distill__steplog sl = {.member = "encoder", .phase = "pretrain", .tty = isatty(2), .quiet = c->o->quiet,
                               .run_id = c->run_id};
  run_name(sl.run, sizeof sl.run, c, "pretrain");
  finch_info("pre-training an encoder (MLM) on %zu texts (%zu general), %u epochs", n, c->n_general, trc.epochs);
  st = nn_tfm_train(m, c->be, &d, &trc, finch_distill__on_step, &sl, err);
  nn_tfm_corpus_free(&x);
  if (!st) unlink(ck);
  if (!st) st = finch_distill__flush_steps(c->db, &sl, err);
  free(sl.buf);
  if (st) {
    nn_tfm_free(m);
    return st;
  }
  c->pretrained = m;
  return FINCH_OK;
}

/* The soft labels of a distilled encoder member: the calibrated average of
 * members ms[0..k) on every training row, softened to tau; (train.n, C). */
static finch_status members_soft_labels(ctx *c, const member *ms, size_t k, float tau, float **out, finch_err *err) {
  size_t n = c->train.n, C = c->C;
  float *avg = calloc(n * C + 1, sizeof *avg), *p = malloc((n * C + 1) * sizeof *p);
  finch_status st = avg && p ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; !st && i < k; i++) {
    st = nn_model_predict_many(ms[i].model, c->train.texts, n, p, NULL, 1.0f, err);
    if (st) break;
    finch_teacher__temper(p, p, n, C, ms[i].temperature);
    for (size_t j = 0; j < n * C; j++) avg[j] += p[j] / (float)k;
  }
  if (!st) finch_teacher__temper(avg, avg, n, C, tau);
  free(p);
  if (st) {
    free(avg);
    return st;
  }
  *out = avg;
  return FINCH_OK;
}

/* A "ktfm" member's distillation temperature and soft-label weight. */
#define KTFM_TAU 2.0f
#define KTFM_ALPHA 0.7f

/* An encoder member. soft (train.n, C) at KTFM_TAU, or NULL: with soft
 * labels (a "ktfm" member) it learns from every training row, augmented
 * variants included, with its epochs scaled to the same number of steps as
 * an encoder on the source rows. */
static finch_status train_tfm(ctx *c, member *m, int index, const float *soft_all, finch_err *err) {
  const finch_teacher_opts *o = c->o;
  /* Rows: source only unless asked (or distilled). */
  size_t n = 0;
  const char **texts = malloc((c->train.n + 1) * sizeof *texts);
  int32_t *y = malloc((c->train.n + 1) * sizeof *y);
  float *soft = soft_all ? malloc((c->train.n * c->C + 1) * sizeof *soft) : NULL;
  finch_status st = FINCH_OK;
  nn_tfm_corpus x = {0};
  nn_tfm *enc = NULL;
  finch_distill__steplog sl = {.member = m->name, .phase = "finetune", .tty = isatty(2), .quiet = o->quiet,
                               .run_id = c->run_id};
  if (!texts || !y || (soft_all && !soft)) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  size_t n_source = 0;
  for (size_t i = 0; i < c->train.n; i++) {
    n_source += c->train.source[i];
    if (!soft_all && !o->tfm_augmented && !c->train.source[i]) continue;
    if (soft_all) memcpy(soft + n * c->C, soft_all + i * c->C, c->C * sizeof *soft);
    texts[n] = c->train.texts[i];
    y[n++] = c->train.labels[i];
  }
  nn_tfm_config tc = tfm_config(c, (uint32_t)c->C);
  if ((st = nn_tfm_corpus_encode(&x, c->tok, texts, n, (int)tc.max_len, tc.buckets, 3, 5, err)) != FINCH_OK) goto out;
  uint64_t seed = o->seed + 1000u * (uint64_t)index;
  if ((st = nn_tfm_create(&enc, &tc, seed, err)) != FINCH_OK) goto out;
  /* Every pre-trained tensor; the classifier head, which pre-training lacks, keeps its fresh init. */
  if (c->pretrained) finch_distill__copy_tensors(enc, c->pretrained, 1);
  nn_tfm_train_config trc = nn_tfm_train_defaults();
  trc.epochs = o->tfm_epochs > 0 ? (uint32_t)o->tfm_epochs : 30;
  if (soft_all && n_source < n) {
    double e = (double)trc.epochs * (double)n_source / (double)n;
    trc.epochs = e < 1 ? 1 : (uint32_t)(e + 0.5);
  }
  trc.batch = 64;
  trc.lr = o->lr > 0 ? o->lr : (c->pretrained ? 5e-4f : 1e-3f);
  trc.seed = seed;
  if (soft) {
    trc.tau = KTFM_TAU;
    trc.alpha = KTFM_ALPHA;
  }
  nn_tfm_data d = {.x = &x, .labels = y, .soft = soft};
  char ck[PATH_MAX + 64];
  if ((st = ckpt_path(c, m->name, ck, sizeof ck, err)) != FINCH_OK) goto out;
  trc.checkpoint = ck;
  trc.resume = o->resume;
  run_name(sl.run, sizeof sl.run, c, m->name);
  finch_info("training %s: %zu rows, %u layers x %u wide, %u heads, ff %u, n-grams %s, %s, %u epochs%s", m->name, n,
             tc.layers, tc.dim, tc.heads, tc.ff, tc.buckets ? "on" : "off",
             c->pretrained ? "from the pre-trained encoder" : "from scratch", trc.epochs,
             soft ? ", soft labels from the members before it" : "");
  if ((st = nn_tfm_train(enc, c->be, &d, &trc, finch_distill__on_step, &sl, err)) != FINCH_OK) goto out;
  unlink(ck);
  if ((st = finch_distill__flush_steps(c->db, &sl, err)) != FINCH_OK) goto out;
  nn_tokenizer *tk = NULL;
  if ((st = finch_distill__tokenizer_copy(c->tok, &tk, err)) != FINCH_OK) goto out;
  st = nn_model_from_tfm(&m->model, enc, tk, (int)tc.max_len, 3, 5, (const char *const *)c->labels, c->C, err);
  enc = NULL;
out:
  nn_tfm_free(enc);
  nn_tfm_corpus_free(&x);
  free(sl.buf);
  free(texts);
  free(y);
  free(soft);
  return st;
}

/* nn_bert_step_cb onto the encoders' step log (training_metrics rows and the
 * progress line). */
static void on_bert_step(void *log, const nn_bert_progress *p) {
  nn_tfm_progress q = {.step = p->step, .total = p->total, .epoch = p->epoch, .epochs = p->epochs, .loss = p->loss,
                       .cls_loss = p->loss, .lr = p->lr, .grad_norm = p->grad_norm, .ex_per_s = p->ex_per_s,
                       .eta_s = p->eta_s};
  finch_distill__on_step(log, &q);
}

/* The bert member: like the encoders, on the source rows unless
 * tfm_augmented (on BANKING77 the augmented variants did not raise its
 * accuracy and cost six times the embedding time); fine-tuned for
 * bert_epochs when above 0. */
static finch_status train_bert(ctx *c, member *m, finch_err *err) {
  const char **texts = malloc((c->train.n + 1) * sizeof *texts);
  int32_t *y = malloc((c->train.n + 1) * sizeof *y);
  size_t n = 0;
  finch_status st = texts && y ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; !st && i < c->train.n; i++) {
    if (!c->o->tfm_augmented && !c->train.source[i]) continue;
    texts[n] = c->train.texts[i];
    y[n++] = c->train.labels[i];
  }
  finch_distill__steplog sl = {.member = m->name, .phase = "finetune", .tty = isatty(2), .quiet = c->o->quiet,
                               .run_id = c->run_id};
  char ck[PATH_MAX + 64] = "";
  finch_teacher__bert_tune tune = {.epochs = m->bert_epochs > 0 ? (uint32_t)m->bert_epochs : 0,
                                   .seed = c->o->seed, .checkpoint = ck, .resume = c->o->resume,
                                   .cb = on_bert_step, .cb_ctx = &sl};
  if (!st && tune.epochs) {
    st = ckpt_path(c, m->name, ck, sizeof ck, err);
    run_name(sl.run, sizeof sl.run, c, m->name);
  }
  if (!st)
    st = finch_teacher__bert_train(c->bert_dir, c->be, texts, y, n, c->labels, c->C, &tune, c->o->quiet, &m->model,
                                   err);
  if (!st && tune.epochs) {
    unlink(ck);
    st = finch_distill__flush_steps(c->db, &sl, err);
  }
  free(sl.buf);
  free(texts);
  free(y);
  return st;
}

/* ---- the run ------------------------------------------------------------------ */

/* The rows of a loaded split, augmented variants only when with_augmented. */
static finch_status take_rows(split_rows *d, const finch_dataset_split *s, int with_augmented, finch_err *err) {
  d->texts = malloc((s->n + 1) * sizeof *d->texts);
  d->labels = malloc((s->n + 1) * sizeof *d->labels);
  d->source = malloc((s->n + 1) * sizeof *d->source);
  if (!d->texts || !d->labels || !d->source) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; i < s->n; i++) {
    if (s->augmented[i] && !with_augmented) continue;
    d->texts[d->n] = s->texts[i];
    d->labels[d->n] = s->labels[i];
    d->source[d->n++] = !s->augmented[i];
  }
  return FINCH_OK;
}

/* The training rows (augmented variants when opts->augmented) and the
 * holdout, indexed in the training label list: the labels of every training
 * row, augmented ones included, whether or not the members train on them. */
static finch_status load_rows(ctx *c, finch_err *err) {
  finch_dataset_query q = {.dataset = c->o->dataset, .split = "train"};
  finch_status st = finch_distill__train_rows(c->db, c->o->dataset, &c->o->negatives, c->o->seed, &c->train_set, err);
  if (st) return st;
  c->labels = c->train_set->label_names;
  c->C = c->train_set->n_labels;
  if (c->C < 2)
    return finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has %zu labelled training intents; need at least 2 "
                         "(run finch ingest first)", c->o->dataset, c->C);
  q.split = "dev";
  q.label_set = c->train_set;
  if ((st = finch_dataset_split_load(c->db, &q, &c->dev_set, err)) != FINCH_OK) return st;
  if ((st = take_rows(&c->train, c->train_set, c->o->augmented, err)) != FINCH_OK) return st;
  if ((st = take_rows(&c->dev, c->dev_set, 1, err)) != FINCH_OK) return st;
  if (!c->dev.n)
    return finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has no holdout (dev) rows to select the teacher on; "
                         "ingest it with --holdout", c->o->dataset);
  return FINCH_OK;
}

/* ---- the member cache (--reuse-members) -------------------------------------- */

static void sha_str(finch_sha256 *h, const char *s) { finch_sha256_update(h, s ? s : "", strlen(s ? s : "") + 1); }

/* What every member of a run shares in its cache key: the training rows in
 * order (text, label, source or augmented), the label set, the general
 * corpus, and each option that changes what a member learns. Empty when out
 * of memory (no caching then). */
static void cache_base(const ctx *c, char out[FINCH_SHA256_HEX_LEN]) {
  const finch_teacher_opts *o = c->o;
  out[0] = '\0';
  finch_sha256 *h = finch_sha256_new();
  if (!h) return;
  char buf[512];
  snprintf(buf, sizeof buf, "finch teacher member v1|seed %llu|aug %d|tfm_aug %d|pretrain %d|epochs %d|ngrams %d|"
           "dim %u|layers %u|heads %u|ff %u|len %u|vocab %u|lr %.9g|general %s", o->seed, o->augmented,
           o->tfm_augmented, o->pretrain_epochs, o->tfm_epochs, o->ngrams, o->dim, o->layers, o->heads, o->ff,
           o->seq_len, o->vocab, (double)o->lr, o->general ? o->general : "");
  sha_str(h, buf);
  for (size_t i = 0; i < c->C; i++) sha_str(h, c->labels[i]);
  for (size_t i = 0; i < c->train.n; i++) {
    unsigned char tail[5] = {(unsigned char)(c->train.labels[i] & 0xff), (unsigned char)((c->train.labels[i] >> 8) & 0xff),
                             (unsigned char)((c->train.labels[i] >> 16) & 0xff),
                             (unsigned char)((c->train.labels[i] >> 24) & 0xff), (unsigned char)c->train.source[i]};
    sha_str(h, c->train.texts[i]);
    finch_sha256_update(h, tail, sizeof tail);
  }
  for (size_t i = 0; i < c->n_general; i++) sha_str(h, c->general[i]);
  finch_sha256_final(h, out);
}

/* 1 when name is a pretrained-encoder member ("bert" or "bertft"). */
static int is_bert_member(const char *name) { return !strcmp(name, "bert") || !strcmp(name, "bertft"); }

/* Member i's key: the run's, its name (which carries its ordinal, hence its
 * seed), for a ktfm member the keys of the members it learns from, and for
 * the bert member the identity of the pretrained weights (the SHA-256 of
 * model.safetensors and tokenizer.json, finch_teacher__bert_identity) and
 * its recipe. */
static void cache_key(const char *base, const char *bert_id, const member *ms, size_t i,
                      char out[FINCH_SHA256_HEX_LEN]) {
  out[0] = '\0';
  if (!*base) return;
  finch_sha256 *h = finch_sha256_new();
  if (!h) return;
  sha_str(h, base);
  /* A fine-tuned encoder is the same model whether listed as "bertft" or as
   * "bert" with --bert-epochs: one name, told apart by the recipe. */
  const int is_bert = is_bert_member(ms[i].name);
  const int bert_epochs = ms[i].bert_epochs;
  sha_str(h, is_bert ? "bert" : ms[i].name);
  if (!strncmp(ms[i].name, "ktfm", 4))
    for (size_t j = 0; j < i; j++) sha_str(h, ms[j].key);
  if (is_bert) {
    /* The weights, and the recipe: which rows, the head's fit, the length. */
    char recipe[256];
    nn_bert_head_config hc = nn_bert_head_defaults();
    snprintf(recipe, sizeof recipe, "bert|encoder rows|head %d %.9g %.9g|len %d", hc.steps, (double)hc.lr,
             (double)hc.l2, FINCH_TEACHER_BERT_SEQ_LEN);
    /* Fine-tuning's epochs (its seed is the run's, in base); a frozen
     * member keeps the key it always had. */
    if (bert_epochs > 0) {
      nn_bert_train_config tc = nn_bert_train_defaults();
      size_t l = strlen(recipe);
      snprintf(recipe + l, sizeof recipe - l, "|finetune %d from head, batch %u lr %.9g %.9g", bert_epochs, tc.batch,
               (double)tc.lr, (double)tc.head_lr);
    }
    sha_str(h, bert_id);
    sha_str(h, recipe);
  }
  finch_sha256_final(h, out);
}

static finch_status cache_path(const member *m, char *buf, size_t n, finch_err *err) {
  char dir[PATH_MAX];
  finch_status st = finch_home_subdir("member-cache", dir, sizeof dir, err);
  if (!st) snprintf(buf, n, "%s/%s.fnm", dir, m->key);
  return st;
}

/* Loads member m from the cache; 0 when it is not there or does not load
 * (a damaged file is retrained and replaced, with a warning). */
static int cache_load(member *m) {
  char path[PATH_MAX + 80];
  finch_err e;
  if (!m->key[0] || cache_path(m, path, sizeof path, &e) || !finch_file_exists(path)) return 0;
  if (nn_model_load(&m->model, path, &e)) {
    finch_warn("teacher member %s: cached copy %s does not load (%s); training it again", m->name, path, e.msg);
    m->model = NULL;
    return 0;
  }
  return 1;
}

static finch_status cache_save(const member *m, finch_err *err) {
  char path[PATH_MAX + 80];
  if (!m->key[0]) return FINCH_OK;
  finch_status st = cache_path(m, path, sizeof path, err);
  return st ? st : nn_model_save(m->model, path, NN_DTYPE_F32, NULL, err);
}

int finch_teacher_pretrained_installed(void) {
  char dir[4096];
  finch_err e;
  return finch_teacher__bert_dir(dir, sizeof dir, &e) == FINCH_OK;
}

const char *finch_teacher_default_members(void) {
  return finch_teacher_pretrained_installed() ? "bert,bertft,slr,bow" : "slr,bow,tfm";
}

/* Member m's holdout probabilities split into the two halves, its
 * temperature fitted on the selection half, and its figures on both. */
static finch_status member_figures(const ctx *c, member *m, finch_err *err) {
  const size_t C = c->C;
  float *all = malloc((c->dev.n * C + 1) * sizeof *all), *tmp = malloc((c->dev.n * C + 1) * sizeof *tmp);
  m->sel_probs = malloc((c->n_sel * C + 1) * sizeof *m->sel_probs);
  m->rep_probs = malloc((c->n_rep * C + 1) * sizeof *m->rep_probs);
  finch_status st = all && tmp && m->sel_probs && m->rep_probs ? FINCH_OK
                                                               : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st) st = nn_model_predict_many(m->model, c->dev.texts, c->dev.n, all, NULL, 1.0f, err);
  if (!st) {
    finch_teacher__gather(all, c->dev.labels, c->half, c->dev.n, C, 0, m->sel_probs, NULL);
    finch_teacher__gather(all, c->dev.labels, c->half, c->dev.n, C, 1, m->rep_probs, NULL);
    m->temperature = nn_fit_temperature(m->sel_probs, c->sel_y, c->n_sel, C);
    m->sel_acc = finch_teacher__accuracy(m->sel_probs, c->sel_y, c->n_sel, C);
    m->dev_acc = finch_teacher__accuracy(m->rep_probs, c->rep_y, c->n_rep, C);
    finch_teacher__temper(m->sel_probs, tmp, c->n_sel, C, m->temperature);
    m->sel_nll = finch_teacher__nll(tmp, c->sel_y, c->n_sel, C);
    finch_teacher__temper(m->rep_probs, tmp, c->n_rep, C, m->temperature);
    m->dev_nll = finch_teacher__nll(tmp, c->rep_y, c->n_rep, C);
  }
  free(all);
  free(tmp);
  return st;
}

finch_status finch_teacher_train(finch_db *db, const finch_teacher_opts *opts, finch_teacher_result *res,
                                 finch_err *err) {
  memset(res, 0, sizeof *res);
  ctx c = {.o = opts, .db = db};
  member ms[16];
  size_t k = 0;
  memset(ms, 0, sizeof ms);
  nn_model *ens = NULL;
  char *meta_s = NULL, *metrics_s = NULL;
  json_t *member_runs = NULL; /* the members' run facts, for the registry's metrics */
  const double t_start = finch_clock_s();
  finch_status st = finch_dataset_check(db, opts->dataset, NULL, err);
  if (!st) st = load_rows(&c, err);
  if (st) goto out;
  res->n_train = (long long)c.train.n;
  res->n_dev = (long long)c.dev.n;
  c.half = malloc(c.dev.n + 1);
  c.sel_y = malloc((c.dev.n + 1) * sizeof *c.sel_y);
  c.rep_y = malloc((c.dev.n + 1) * sizeof *c.rep_y);
  if (!c.half || !c.sel_y || !c.rep_y) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  nn_split_halves(c.dev.labels, c.dev.n, c.C, opts->seed, c.half);
  c.n_sel = finch_teacher__gather(NULL, c.dev.labels, c.half, c.dev.n, c.C, 0, NULL, c.sel_y);
  c.n_rep = finch_teacher__gather(NULL, c.dev.labels, c.half, c.dev.n, c.C, 1, NULL, c.rep_y);
  int dk = nn_device_parse(opts->device ? opts->device : "auto");
  if (dk < 0) {
    st = finch_err_set(err, FINCH_EINVAL, "unknown device '%s' (cpu, cuda or auto)", opts->device);
    goto out;
  }
  if ((st = nn_backend_open(&c.be, (nn_device)dk, err)) != FINCH_OK) goto out;

  /* Parse the member list. */
  const char *spec = opts->members && *opts->members ? opts->members : finch_teacher_default_members();
  int want_tfm = 0, want_bow = 0;
  for (const char *p = spec; *p;) {
    size_t len = strcspn(p, ",");
    if (k == FINCH_TEACHER_MAX_MEMBERS) {
      /* Every subset is scored on the holdout. */
      st = finch_err_set(err, FINCH_EINVAL, "--members: at most %d members", FINCH_TEACHER_MAX_MEMBERS);
      goto out;
    }
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(len < 31 ? len : 31), p);
    if (strcmp(name, "slr") && strcmp(name, "bow") && strcmp(name, "tfm") && strcmp(name, "ktfm") &&
        !is_bert_member(name)) {
      st = finch_err_set(err, FINCH_EINVAL, "--members: unknown member '%s' (slr, bow, tfm, ktfm, bert or bertft)",
                         name);
      goto out;
    }
    for (size_t j = 0; j < k; j++)
      if (is_bert_member(name) && !strcmp(ms[j].name, name)) {
        st = finch_err_set(err, FINCH_EINVAL, "--members: %s is listed twice (its fit is deterministic)", name);
        goto out;
      }
    /* Missing weights fail the run before any member trains. */
    if (is_bert_member(name) && !c.bert_dir[0] &&
        (st = finch_teacher__bert_dir(c.bert_dir, sizeof c.bert_dir, err)) != FINCH_OK)
      goto out;
    if (!strcmp(name, "ktfm") && k == 0) {
      st = finch_err_set(err, FINCH_EINVAL, "--members: ktfm learns from the members listed before it; list one first");
      goto out;
    }
    if (!strcmp(name, "tfm") || !strcmp(name, "ktfm")) snprintf(ms[k].name, sizeof ms[k].name, "%s%d", name, ++want_tfm);
    else if (!strcmp(name, "bow") && ++want_bow > 1) snprintf(ms[k].name, sizeof ms[k].name, "bow%d", want_bow);
    else snprintf(ms[k].name, sizeof ms[k].name, "%s", name);
    k++;
    p += len;
    if (*p == ',') p++;
  }

  if (want_tfm) {
    /* General corpus for the tokenizer and pre-training. */
    if (opts->pretrain_epochs > 0) {
      /* The named general datasets, then the Wikipedia sentences. */
      if ((st = finch_dataset_general_texts(db, opts->general, 1, &c.general_set, err)) != FINCH_OK) goto out;
      c.general = c.general_set->texts;
      c.n_general = c.general_set->n;
      res->n_general = (long long)c.n_general;
    }
    size_t nt = c.train.n + c.n_general;
    const char **tt = malloc((nt + 1) * sizeof *tt);
    if (!tt) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
    for (size_t i = 0; i < c.train.n; i++) tt[i] = c.train.texts[i];
    for (size_t i = 0; i < c.n_general; i++) tt[c.train.n + i] = c.general[i];
    double t0 = finch_clock_s();
    st = nn_tokenizer_train(&c.tok, tt, nt, opts->vocab ? opts->vocab : 8000, 2, err);
    free(tt);
    if (st) goto out;
    finch_info("tokenizer: %u pieces from %zu texts in %.1f s", nn_tokenizer_size(c.tok), nt, finch_clock_s() - t0);
  }
  /* One training run for every member that logs steps. */
  /* "bertft" is fine-tuned for --bert-epochs (default 3); "bert" is frozen
   * beside it, and alone is fine-tuned only when --bert-epochs is given. */
  int has_bertft = 0, bert_epochs = 0;
  for (size_t i = 0; i < k; i++) has_bertft |= !strcmp(ms[i].name, "bertft");
  for (size_t i = 0; i < k; i++) {
    if (!strcmp(ms[i].name, "bertft")) ms[i].bert_epochs = opts->bert_epochs > 0 ? opts->bert_epochs : 3;
    else if (!strcmp(ms[i].name, "bert") && !has_bertft && opts->bert_epochs > 0) ms[i].bert_epochs = opts->bert_epochs;
    if (ms[i].bert_epochs) bert_epochs = ms[i].bert_epochs;
  }
  if ((st = finch_distill__run_begin(db, "teacher", opts->dataset, &c.run_id, err)) != FINCH_OK) goto out;
  res->run_id = c.run_id;
  char base[FINCH_SHA256_HEX_LEN] = "";
  if (opts->reuse_members) cache_base(&c, base);
  if (opts->reuse_members && c.bert_dir[0]) {
    double t0 = finch_clock_s();
    if ((st = finch_teacher__bert_identity(c.bert_dir, c.bert_id, err)) != FINCH_OK) goto out;
    finch_info("teacher member bert: weights %.12s... (SHA-256 in %.1f s)", c.bert_id, finch_clock_s() - t0);
  }

  int n_bow = 0;
  for (size_t i = 0; i < k; i++) {
    member *m = &ms[i];
    double t0 = finch_clock_s();
    int is_tfm = !strncmp(m->name, "tfm", 3) || !strncmp(m->name, "ktfm", 4);
    int is_bow = !strncmp(m->name, "bow", 3);
    int ordinal = is_tfm ? ++c.n_tfm : is_bow ? ++n_bow : 1;
    if (opts->reuse_members) {
      cache_key(base, c.bert_id, ms, i, m->key);
      m->cached = cache_load(m);
    }
    if (m->cached) finch_info("teacher member %s: reused from the member cache", m->name);
    else finch_info("teacher member %s: training", m->name);
    /* Pre-training, once, before the first encoder that is trained. */
    if (!m->cached && is_tfm && opts->pretrain_epochs > 0 && !c.pretrained) st = pretrain(&c, err);
    if (st || m->cached) {
    } else if (!strcmp(m->name, "slr")) st = train_slr(&c, m, err);
    else if (is_bow) st = train_bow(&c, m, ordinal, err);
    else if (is_bert_member(m->name)) st = train_bert(&c, m, err);
    else if (!strncmp(m->name, "ktfm", 4)) {
      float *soft = NULL;
      st = members_soft_labels(&c, ms, i, KTFM_TAU, &soft, err);
      if (!st) st = train_tfm(&c, m, ordinal, soft, err);
      free(soft);
    } else st = train_tfm(&c, m, ordinal, NULL, err);
    if (!st && opts->reuse_members && !m->cached) st = cache_save(m, err);
    if (st) {
      finch_err_prefix(err, "teacher member %s", m->name);
      goto out;
    }
    m->seconds = finch_clock_s() - t0;
    if ((st = member_figures(&c, m, err)) != FINCH_OK) goto out;
    finch_info("teacher member %s: accuracy %.4f on the selection half, %.4f on the report half (NLL %.4f) at "
               "temperature %.2f, %lld parameters, %.1f s", m->name, m->sel_acc, m->dev_acc, m->dev_nll,
               (double)m->temperature, (long long)nn_model_n_params(m->model), m->seconds);
  }

  /* The subset is chosen on the selection half; the report half, which
   * took no part in it, gives the figures the teacher is reported with. */
  const float *sel[16], *rep[16];
  float temps_all[16];
  for (size_t i = 0; i < k; i++) sel[i] = ms[i].sel_probs, rep[i] = ms[i].rep_probs, temps_all[i] = ms[i].temperature;
  double sel_acc, sel_nll, acc, nll;
  unsigned mask = finch_teacher__choose(sel, temps_all, k, c.sel_y, c.n_sel, c.C, &sel_acc, &sel_nll);
  finch_teacher__score(rep, temps_all, k, mask, c.rep_y, c.n_rep, c.C, &acc, &nll);
  nn_model *chosen[16];
  float temps[16], weights[16];
  size_t nc = 0;
  for (size_t i = 0; i < k; i++) {
    res->members[i] = (finch_teacher_member){.dev_acc = ms[i].dev_acc, .dev_nll = ms[i].dev_nll,
                                             .sel_acc = ms[i].sel_acc, .sel_nll = ms[i].sel_nll,
                                             .temperature = ms[i].temperature, .seconds = ms[i].seconds,
                                             .params = (long long)nn_model_n_params(ms[i].model),
                                             .cached = ms[i].cached};
    snprintf(res->members[i].name, sizeof res->members[i].name, "%s", ms[i].name);
    if (!(mask & (1u << i))) continue;
    size_t L = strlen(res->chosen);
    snprintf(res->chosen + L, sizeof res->chosen - L, "%s%s", L ? "+" : "", ms[i].name);
    chosen[nc] = ms[i].model;
    temps[nc] = ms[i].temperature;
    weights[nc++] = 1.0f;
    ms[i].model = NULL; /* the ensemble owns it now */
  }
  res->n_members = k;
  res->dev_acc = acc;
  res->dev_nll = nll;
  res->sel_acc = sel_acc;
  res->sel_nll = sel_nll;
  res->n_sel = (long long)c.n_sel;
  res->n_report = (long long)c.n_rep;
  res->majority = finch_models_majority_rate(c.rep_y, c.n_rep);
  res->failed = !finch_models_gate_teacher(acc, res->majority, opts->min_margin, res->gate, sizeof res->gate);
  finch_info("teacher: members %s chosen on %zu selection rows (accuracy %.4f); on the %zu report rows accuracy "
             "%.4f, NLL %.4f", res->chosen, c.n_sel, sel_acc, c.n_rep, acc, nll);
  if ((st = nn_model_ensemble(&ens, chosen, temps, weights, nc, err)) != FINCH_OK) goto out;
  res->params = (long long)nn_model_n_params(ens);

  /* Metadata, file, registry. The file holds what the seed and the rows
   * determine, so that the same run writes the same bytes; how long each
   * member took and whether it came from the member cache go to the
   * registry's metrics only. */
  json_t *members = json_array();
  member_runs = json_array();
  for (size_t i = 0; i < k; i++) {
    json_array_append_new(members, json_pack("{s:s, s:b, s:f, s:f, s:f, s:f, s:f, s:I}", "name", ms[i].name,
                                             "chosen", (mask >> i) & 1, "dev_accuracy", ms[i].dev_acc, "dev_nll",
                                             ms[i].dev_nll, "selection_accuracy", ms[i].sel_acc, "selection_nll",
                                             ms[i].sel_nll, "temperature", (double)ms[i].temperature, "params",
                                             (json_int_t)res->members[i].params));
    json_array_append_new(member_runs, json_pack("{s:s, s:f, s:b}", "name", ms[i].name, "train_seconds",
                                                 ms[i].seconds, "reused", ms[i].cached));
  }
  json_t *meta = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:o, s:f, s:f, s:i, s:b, s:b, s:I}", "kind",
                           "teacher", "stage", "finance", "dataset", opts->dataset, "seed", (json_int_t)opts->seed,
                           "n_train", (json_int_t)c.train.n, "n_dev", (json_int_t)c.dev.n, "n_selection",
                           (json_int_t)c.n_sel, "n_report", (json_int_t)c.n_rep, "chosen", res->chosen, "members",
                           members, "dev_accuracy", acc, "selection_accuracy", sel_acc, "pretrain_epochs",
                           opts->pretrain_epochs, "ngrams", opts->ngrams, "augmented", opts->augmented, "n_general",
                           (json_int_t)c.n_general);
  /* Only when fine-tuned: a frozen bert member's teacher keeps the bytes it had. */
  if (meta && bert_epochs > 0) json_object_set_new(meta, "bert_epochs", json_integer(bert_epochs));
  meta_s = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(meta);
  if (!meta_s || (st = nn_model_set_meta(ens, meta_s, err)) != FINCH_OK) {
    if (!st) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  char dir[PATH_MAX];
  if ((st = finch_home_subdir("models", dir, sizeof dir, err)) != FINCH_OK) goto out;
  char tag[64];
  finch_unique_tag(tag, sizeof tag);
  snprintf(res->path, sizeof res->path, "%s/%s-teacher-ensemble-%s.fnm", dir, opts->dataset, tag);
  char sha[65];
  if ((st = nn_model_save(ens, res->path, NN_DTYPE_F32, sha, err)) != FINCH_OK) goto out;
  struct stat sb;
  stat(res->path, &sb);
  res->seconds = finch_clock_s() - t_start;
  json_t *metrics = json_pack("{s:f, s:f, s:f, s:f, s:o, s:f}", "dev_accuracy", acc, "dev_nll", nll,
                              "selection_accuracy", sel_acc, "train_seconds", res->seconds, "members", member_runs,
                              "majority_rate", res->majority);
  member_runs = NULL;
  if (metrics && res->failed) json_object_set_new(metrics, "gate", json_string(res->gate));
  metrics_s = json_dumps(metrics, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(metrics);
  finch_model_rec rec = {.kind = "teacher", .stage = "finance", .arch = "ensemble", .dtype = "f32",
                         .dataset = opts->dataset, .path = res->path, .sha256 = sha, .params = res->params,
                         .bytes = (long long)sb.st_size, .config_json = meta_s, .metrics_json = metrics_s,
                         .status = res->failed ? "failed" : "ok"};
  if ((st = finch_models_register(db, &rec, &res->model_id, err)) != FINCH_OK) goto out;
  if (c.run_id) st = finch_distill__run_finish(db, c.run_id, res->model_id, err);
  if (!st && res->failed && !opts->allow_failed)
    st = finch_err_set(err, FINCH_EINVAL, "teacher %lld failed the quality gate: %s (registered as failed; "
                       "--allow-failed accepts it)", res->model_id, res->gate);
out:
  json_decref(member_runs);
  for (size_t i = 0; i < k; i++) {
    nn_model_free(ms[i].model);
    free(ms[i].sel_probs);
    free(ms[i].rep_probs);
  }
  nn_model_free(ens);
  nn_tfm_free(c.pretrained);
  nn_tokenizer_free(c.tok);
  nn_backend_free(c.be);
  finch_dataset_texts_free(c.general_set);
  free(c.train.texts), free(c.train.labels), free(c.train.source);
  free(c.dev.texts), free(c.dev.labels), free(c.dev.source);
  free(c.half), free(c.sel_y), free(c.rep_y);
  finch_dataset_split_free(c.train_set);
  finch_dataset_split_free(c.dev_set);
  free(meta_s);
  free(metrics_s);
  return st;
}
