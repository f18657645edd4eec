#include "distill/distill.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dataset.h"
#include "core/log.h"
#include "core/models.h"
#include "core/paths.h"
#include "distill/complexity.h"
#include "distill/external.h"
#include "distill/teacher.h"
#include "distill/internal.h"
#include "nn/model.h"
#include "nn/model_arch.h"

typedef finch_dataset_split rows;

/* The default epoch counts are passes over the source rows. An augmented
 * variant is a perturbed copy of its parent, so a pass over source plus
 * variants already shows each parent several times: the epochs are scaled to
 * keep the number of examples seen (on BANKING77 with two variants per row,
 * 15 student epochs over all rows overfit: 89.0% dev, against 91.5% with 5). */
static uint32_t scaled_epochs(uint32_t epochs, size_t n_source, size_t n_train) {
  if (!n_train || n_source >= n_train) return epochs;
  double e = (double)epochs * (double)n_source / (double)n_train;
  return e < 1 ? 1 : (uint32_t)(e + 0.5);
}

/* nn_model_train_watched logging each epoch to run run_id under phase, with
 * dev figures on dev's selection half. */
static finch_status train_logged(finch_db *db, const finch_distill_opts *opts, const char *member, const char *phase,
                                 long long run_id, const rows *dev, size_t nl, nn_model **out, const nn_dataset *ds,
                                 const char *const *labels, const nn_train_config *cfg, const nn_kd_config *kd,
                                 nn_backend *be, finch_err *err) {
  finch_distill__steplog sl = {.member = member, .phase = phase, .quiet = opts->quiet, .run_id = run_id};
  char tag[64];
  finch_unique_tag(tag, sizeof tag);
  snprintf(sl.run, sizeof sl.run, "%s-%s-%s", opts->dataset, member, tag);
  finch_distill__epochlog el = {.log = &sl};
  finch_distill__selection_rows((const char *const *)dev->texts, dev->labels, dev->n, nl, opts->seed, &el);
  finch_status st = nn_model_train_watched(out, ds, labels, nl, cfg, kd, NULL, be, finch_distill__on_epoch, &el, err);
  if (!st) st = finch_distill__flush_steps(db, &sl, err);
  finch_distill__epochlog_free(&el);
  free(sl.buf);
  return st;
}

static double accuracy(const nn_model *m, const rows *r) {
  if (!r->n) return 0;
  size_t ok = 0;
  for (size_t i = 0; i < r->n; i++) ok += nn_model_predict(m, r->texts[i], NULL, 1.0f) == r->labels[i];
  return (double)ok / (double)r->n;
}

/* Writes m to $FINCH_HOME/models and registers it. */
static finch_status save_and_register(finch_db *db, nn_model *m, const char *kind, const char *stage,
                                      const char *dataset, long long parent, double dev_acc, double seconds, long long n_train,
                                      unsigned long long seed, const char *gate, long long *id, char *path,
                                      size_t pathn, finch_err *err) {
  char dir[PATH_MAX];
  finch_status st = finch_home_subdir("models", dir, sizeof dir, err);
  if (st) return st;
  /* The file holds what the training run determines, so that a run
   * repeated with the same seed writes the same bytes; its wall time goes
   * to the registry's metrics only. */
  json_t *meta = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f}", "kind", kind, "stage", stage,
                           "dataset", dataset, "seed", (json_int_t)seed, "n_train", (json_int_t)n_train,
                           "dev_accuracy", dev_acc);
  char *meta_s = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS), *metrics = NULL;
  json_decref(meta);
  st = nn_model_set_meta(m, meta_s, err);
  if (st) goto out;
  char tag[64];
  finch_unique_tag(tag, sizeof tag);
  snprintf(path, pathn, "%s/%s-%s-%s.fnm", dir, dataset, kind, tag);
  char sha[65];
  st = nn_model_save(m, path, NN_DTYPE_F32, sha, err);
  if (st) goto out;
  struct stat sb;
  stat(path, &sb);
  json_t *mj = json_pack("{s:f, s:f}", "dev_accuracy", dev_acc, "train_seconds", seconds);
  if (mj && gate) json_object_set_new(mj, "gate", json_string(gate));
  metrics = mj ? json_dumps(mj, JSON_COMPACT) : NULL;
  json_decref(mj);
  if (!metrics) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  finch_model_rec rec = {.kind = kind, .stage = stage, .arch = nn_model_arch_name(m), .dtype = "f32",
                         .dataset = dataset, .parent_id = parent, .path = path, .sha256 = sha,
                         .params = (long long)nn_model_n_params(m), .bytes = (long long)sb.st_size,
                         .config_json = meta_s, .metrics_json = metrics, .status = gate ? "failed" : "ok"};
  st = finch_models_register(db, &rec, id, err);
out:
  free(metrics);
  free(meta_s);
  return st;
}

/* Scores every training row, maps c to alpha, fills the histogram. */
static finch_status complexity_weights(finch_db *db, const finch_distill_opts *opts, const rows *train,
                                       finch_complexity **cx_out, float **alpha_out, finch_distill_result *res,
                                       finch_err *err) {
  /* The named general datasets, else the Wikipedia sentences. */
  finch_dataset_texts *gen = NULL;
  finch_status st = finch_dataset_general_texts(db, opts->general, 0, &gen, err);
  finch_complexity_model *cm = NULL;
  if (!st) st = finch_complexity_fit(&cm, train->texts, train->n, gen->texts, gen->n, err);
  size_t ng = gen ? gen->n : 0;
  finch_dataset_texts_free(gen);
  if (st) return st;
  finch_complexity *cx = malloc((train->n + 1) * sizeof *cx);
  float *alpha = malloc((train->n + 1) * sizeof *alpha);
  if (!cx || !alpha) {
    free(cx), free(alpha);
    finch_complexity_free(cm);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  finch_alpha_map map = FINCH_ALPHA_MAP_DEFAULT;
  double sum = 0;
  for (size_t i = 0; i < train->n; i++) {
    finch_complexity_score(cm, train->texts[i], &cx[i]);
    alpha[i] = (float)finch_complexity_alpha(cx[i].c, &map);
    sum += alpha[i];
    int bin = (int)(cx[i].c * 10);
    res->complexity_hist[bin > 9 ? 9 : bin < 0 ? 0 : bin]++;
  }
  finch_complexity_free(cm);
  res->dynamic_alpha = 1;
  res->mean_alpha = train->n ? sum / (double)train->n : 0;
  res->n_general = (long long)ng;
  finch_info("complexity of %zu training rows (bins of 0.1 from 0 to 1): %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld",
             train->n, res->complexity_hist[0], res->complexity_hist[1], res->complexity_hist[2],
             res->complexity_hist[3], res->complexity_hist[4], res->complexity_hist[5], res->complexity_hist[6],
             res->complexity_hist[7], res->complexity_hist[8], res->complexity_hist[9]);
  *cx_out = cx;
  *alpha_out = alpha;
  return FINCH_OK;
}

/* Every training row's complexity and alpha, for the student's audit trail. */
static finch_status store_complexity(finch_db *db, long long model_id, const rows *train, const finch_complexity *cx,
                                     const float *alpha, finch_err *err) {
  finch_status st = finch_db_exec(db, "BEGIN", err);
  int copying = 0;
  if (!st)
    st = finch_db_copy_begin(db, "COPY complexity_scores (model_id, utterance_id, lexical, syntactic, domain, c, alpha)"
                                 " FROM STDIN", err);
  copying = !st;
  char line[256];
  for (size_t i = 0; !st && i < train->n; i++) {
    int k = snprintf(line, sizeof line, "%lld\t%lld\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\n", model_id, train->ids[i],
                     cx[i].lexical, cx[i].syntactic, cx[i].domain, cx[i].c, (double)alpha[i]);
    st = finch_db_copy_put(db, line, (size_t)k, err);
  }
  if (copying) {
    finch_status end = finch_db_copy_end(db, err);
    if (!st) st = end;
  }
  if (!st) st = finch_db_exec(db, "COMMIT", err);
  if (st) finch_db_rollback(db);
  return st;
}

/* An external teacher's soft labels for the training rows (finch_external_soft_labels). */
static finch_status external_soft_labels(finch_db *db, long long teacher_id, const rows *train, size_t nl, float tau,
                                         float *soft, unsigned char *have, finch_err *err) {
  enum { ID_LEN = 24 };
  char *buf = malloc(train->n * ID_LEN + 1);
  const char **ids = malloc((train->n + 1) * sizeof *ids);
  finch_status st = buf && ids ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; !st && i < train->n; i++) {
    ids[i] = buf + i * ID_LEN;
    snprintf(buf + i * ID_LEN, ID_LEN, "%lld", train->ids[i]);
  }
  if (!st) st = finch_external_soft_labels(db, teacher_id, ids, train->n, train->label_names, nl, tau, soft, have, err);
  free(ids);
  free(buf);
  return st;
}

/* The best registered teacher of dataset that passed the gate and has an
 * encoder (a transformer student learns from it): res->teacher_id, or
 * FINCH_ENOTFOUND. */
static finch_status best_with_encoder(finch_db *db, const char *dataset, finch_distill_result *res, finch_err *err) {
  enum { MAX_TRIED = 32 };
  long long ids[MAX_TRIED];
  size_t n;
  finch_status st = finch_models_ranked(db, "teacher", dataset, ids, MAX_TRIED, &n, err);
  for (size_t i = 0; !st && i < n; i++) {
    char ref[32], path[4096];
    long long id;
    nn_model *m = NULL;
    snprintf(ref, sizeof ref, "%lld", ids[i]);
    if (finch_models_resolve(db, ref, path, sizeof path, &id, NULL, err) || nn_model_load(&m, path, err)) continue;
    int has = nn_model_find_tfm(m) != NULL;
    nn_model_free(m);
    if (has) {
      res->teacher_id = id;
      return FINCH_OK;
    }
  }
  return st ? st : finch_err_set(err, FINCH_ENOTFOUND, "no teacher of dataset '%s' has an encoder", dataset);
}

/* Loads the teacher named by opts->teacher and checks it speaks the
 * dataset's label list, in the same order. */
static finch_status load_teacher(finch_db *db, const finch_distill_opts *opts, const char *const *labels, size_t nl,
                                 nn_model **out, finch_distill_result *res, finch_err *err) {
  char ref[64];
  const char *name = opts->teacher;
  if (finch_models_ref_is_file(name) == 0) {
    /* An id, best, latest or an alias: the registered teacher it names. */
    long long tid;
    char status[16], why[256];
    finch_status st = finch_models_lookup(db, name, "teacher", opts->dataset, &tid, err);
    if (!st) st = finch_models_status(db, tid, status, sizeof status, why, sizeof why, err);
    if (st) return st;
    if (strcmp(status, "ok") != 0 && !opts->allow_failed)
      return finch_err_set(err, FINCH_EINVAL, "teacher %lld failed the quality gate%s%s; --allow-failed distils it "
                           "anyway", tid, *why ? ": " : "", why);
    snprintf(ref, sizeof ref, "%lld", tid);
    name = ref;
    /* An external teacher has no model file: its soft labels are rows of teacher_outputs. */
    const char *p[] = {name};
    PGresult *r = finch_db_query(db, "SELECT id, path FROM models WHERE id::text = $1 AND arch = 'external'", 1, p, err);
    if (!r) return FINCH_EDB;
    int ext = PQntuples(r) == 1;
    if (ext) {
      res->teacher_id = atoll(PQgetvalue(r, 0, 0));
      snprintf(res->teacher_path, sizeof res->teacher_path, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    if (ext) {
      *out = NULL;
      return FINCH_OK;
    }
  }
  finch_status st = finch_models_resolve(db, name, res->teacher_path, sizeof res->teacher_path, &res->teacher_id,
                                         NULL, err);
  if (!st) st = nn_model_load(out, res->teacher_path, err);
  if (st) return st;
  int same = nn_model_n_labels(*out) == nl;
  for (size_t i = 0; same && i < nl; i++) same = strcmp(nn_model_label(*out, i), labels[i]) == 0;
  if (!same) {
    size_t tl = nn_model_n_labels(*out);
    int oos = nn_model_label_index(*out, opts->negatives.label ? opts->negatives.label : "oos") >= 0;
    nn_model_free(*out);
    *out = NULL;
    return finch_err_set(err, FINCH_EINVAL, "teacher %s has %zu labels that do not match dataset '%s' (%zu intents)%s",
                         res->teacher_path, tl, opts->dataset, nl,
                         oos != (opts->negatives.names && *opts->negatives.names)
                             ? ": teacher and student need the same --negatives" : "");
  }
  return FINCH_OK;
}

finch_status finch_distill_run(finch_db *db, const finch_distill_opts *opts, finch_distill_result *res,
                               finch_err *err) {
  memset(res, 0, sizeof *res);
  /* The training rows, source and augmented, with their label list (the
   * models' output order), and the holdout indexed in it. */
  rows *train = NULL, *dev = NULL;
  nn_backend *be = NULL;
  nn_model *teacher = NULL, *student = NULL;
  finch_complexity *cx = NULL;
  float *alphas = NULL;
  float *soft = NULL;
  unsigned char *have = NULL;
  char *owned_ref = NULL; /* the teacher reference chosen here, when opts did not name one */
  long long run_id = 0;   /* the transformer student's training run */
  finch_dataset_query q = {.dataset = opts->dataset, .split = "train"};
  finch_status st = finch_dataset_check(db, opts->dataset, NULL, err);
  if (!st) st = finch_distill__train_rows(db, opts->dataset, &opts->negatives, opts->seed, &train, err);
  if (st) goto out;
  const char *const *labels = train->label_names;
  const size_t nl = train->n_labels;
  if (nl < 2) {
    st = finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has %zu labelled training intents; need at least 2 "
                       "(run finch ingest first)", opts->dataset, nl);
    goto out;
  }
  q.split = "dev";
  q.label_set = train; /* a dev label never seen in training is -1: always wrong */
  if ((st = finch_dataset_split_load(db, &q, &dev, err)) != FINCH_OK) goto out;
  size_t n_source = 0; /* training rows that are not augmented variants */
  for (size_t i = 0; i < train->n; i++) n_source += !train->augmented[i];
  res->n_train = (long long)train->n;
  res->n_dev = (long long)dev->n;

  int dev_kind = nn_device_parse(opts->device ? opts->device : "auto");
  if (dev_kind < 0) {
    st = finch_err_set(err, FINCH_EINVAL, "unknown device '%s' (cpu, cuda or auto)", opts->device);
    goto out;
  }
  st = nn_backend_open(&be, (nn_device)dev_kind, err);
  if (st) goto out;

  nn_dataset ds = {.texts = (const char *const *)train->texts, .labels = train->labels, .n = train->n};
  double t0;
  /* A transformer student (named, or implied by --stage) needs a teacher with
   * an encoder: the dataset's latest teacher when it has one, else one is
   * trained here with the default members. */
  const int want_tfm = (opts->student && strcmp(opts->student, "tfm") == 0) ||
                       (!opts->student && opts->stage && *opts->stage && !opts->teacher_init);
  finch_distill_opts o2;
  if (!(opts->teacher && *opts->teacher)) {
    o2 = *opts;
    o2.teacher = "best";
    if (want_tfm) st = best_with_encoder(db, opts->dataset, res, err);
    else st = load_teacher(db, &o2, labels, nl, &teacher, res, err);
    if (st == FINCH_ENOTFOUND && want_tfm) {
      finch_info("no teacher of dataset '%s' has an encoder: training one (finch teacher train --dataset %s)",
                 opts->dataset, opts->dataset);
      finch_teacher_opts to = {.dataset = opts->dataset, .seed = opts->seed, .augmented = 1, .ngrams = 1,
                               .negatives = opts->negatives, .device = opts->device, .quiet = opts->quiet,
                               .min_margin = opts->min_margin, .allow_failed = opts->allow_failed};
      finch_teacher_result tr;
      if ((st = finch_teacher_train(db, &to, &tr, err)) != FINCH_OK) goto out;
      res->teacher_id = tr.model_id;
      res->teacher_failed = tr.failed;
      if (tr.failed) snprintf(res->gate, sizeof res->gate, "teacher: %s", tr.gate);
    } else if (st == FINCH_ENOTFOUND) {
      finch_info("%s: a bag-of-n-grams teacher is trained here", err->msg);
      st = FINCH_OK;
      res->teacher_id = 0;
    } else if (st) {
      goto out;
    }
    /* Reloaded below like a named teacher, so both paths check labels alike. */
    nn_model_free(teacher);
    teacher = NULL;
    if (res->teacher_id) {
      if (!(owned_ref = malloc(32))) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
        goto out;
      }
      snprintf(owned_ref, 32, "%lld", res->teacher_id);
      o2.teacher = owned_ref;
      opts = &o2;
    }
  }
  if (opts->teacher && *opts->teacher) {
    st = load_teacher(db, opts, labels, nl, &teacher, res, err);
    if (st) goto out;
    if (!teacher) {
      res->external_teacher = 1;
      finch_info("teacher: external model %lld (%s): soft labels from teacher_outputs", res->teacher_id,
                 res->teacher_path);
    } else {
      res->teacher_dev_acc = accuracy(teacher, dev);
      res->teacher_params = (long long)nn_model_n_params(teacher);
      finch_info("teacher: model %lld (%s), %lld parameters, dev accuracy %.4f (%zu rows)", res->teacher_id,
                 res->teacher_path, res->teacher_params, res->teacher_dev_acc, dev->n);
    }
  } else {
    nn_train_config tc = nn_train_config_teacher();
    tc.seed = opts->seed;
    tc.epochs = opts->teacher_epochs > 0 ? (uint32_t)opts->teacher_epochs
                                         : scaled_epochs(tc.epochs, n_source, train->n);
    finch_info("training the teacher on %zu rows, %zu intents (%u epochs)", train->n, nl, tc.epochs);
    t0 = finch_clock_s();
    long long trun = 0;
    if ((st = finch_distill__run_begin(db, "teacher", opts->dataset, &trun, err)) != FINCH_OK) goto out;
    st = train_logged(db, opts, "teacher", "train", trun, dev, nl, &teacher, &ds, labels, &tc, NULL, be, err);
    if (st) goto out;
    res->teacher_seconds = finch_clock_s() - t0;
    res->teacher_dev_acc = accuracy(teacher, dev);
    res->teacher_params = (long long)nn_model_n_params(teacher);
    finch_info("teacher: %lld parameters, dev accuracy %.4f (%zu rows), %.1f s", res->teacher_params,
               res->teacher_dev_acc, dev->n, res->teacher_seconds);
    char why[256];
    res->teacher_failed = !finch_models_gate_teacher(res->teacher_dev_acc, finch_models_majority_rate(dev->labels, dev->n),
                                                     opts->min_margin, why, sizeof why);
    if (res->teacher_failed) snprintf(res->gate, sizeof res->gate, "teacher: %s", why);
    st = save_and_register(db, teacher, "teacher", "finance", opts->dataset, 0, res->teacher_dev_acc, res->teacher_seconds,
                           res->n_train, opts->seed, res->teacher_failed ? why : NULL, &res->teacher_id,
                           res->teacher_path, sizeof res->teacher_path, err);
    if (!st) st = finch_distill__run_finish(db, trun, res->teacher_id, err);
    if (!st && res->teacher_failed && !opts->allow_failed)
      st = finch_err_set(err, FINCH_EINVAL, "teacher %lld failed the quality gate: %s (registered as failed; "
                         "--allow-failed distils it anyway)", res->teacher_id, why);
    if (st) goto out;
  }

  float tau = opts->temperature > 0 ? opts->temperature : 2.0f;
  soft = malloc(train->n * nl * sizeof *soft);
  if (!soft) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu soft labels", train->n);
    goto out;
  }
  if (teacher) {
    st = finch_distill__teacher_soft(db, res->teacher_id, teacher, train, tau, opts->quiet, soft, &res->soft_stored,
                                     &res->soft_computed, err);
  } else {
    if (!(have = malloc(train->n + 1))) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
    st = external_soft_labels(db, res->teacher_id, train, nl, tau, soft, have, err);
    size_t with = 0;
    for (size_t i = 0; !st && i < train->n; i++) with += have[i];
    if (!st) finch_info("external teacher: soft labels for %zu of %zu training rows (the rest: hard labels only)",
                        with, train->n);
  }
  if (st) goto out;
  ds.soft = soft;
  nn_kd_config kd = {.alpha = opts->alpha > 0 ? opts->alpha : 0.5f, .temperature = tau};
  if (!(opts->alpha > 0) && !opts->hard_only) {
    st = complexity_weights(db, opts, train, &cx, &alphas, res, err);
    if (st) goto out;
    ds.alpha = alphas;
  }
  if (have && ds.soft) {
    /* Rows the external teacher never scored learn from their label alone. */
    if (!alphas) {
      if (!(alphas = malloc((train->n + 1) * sizeof *alphas))) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
        goto out;
      }
      for (size_t i = 0; i < train->n; i++) alphas[i] = kd.alpha;
    }
    for (size_t i = 0; i < train->n; i++)
      if (!have[i]) alphas[i] = 0;
    ds.alpha = alphas;
  }
  if (opts->hard_only) {
    ds.soft = NULL;
    ds.alpha = NULL;
  }
  const int tfm_student = want_tfm;
  snprintf(res->student_arch, sizeof res->student_arch, "%s", tfm_student ? "tfm" : "bow");
  snprintf(res->stage, sizeof res->stage, "%s",
           tfm_student ? (opts->stage && *opts->stage ? opts->stage : "vertical")
                       : (opts->stage && !strcmp(opts->stage, "both") ? "both" : "finance"));
  t0 = finch_clock_s();
  if (tfm_student && !teacher) {
    st = finch_err_set(err, FINCH_EINVAL, "a transformer student needs a teacher with an encoder member; an external "
                       "teacher gives soft labels only (use --student bow)");
    goto out;
  }
  if (tfm_student) {
    nn_model *init = NULL;
    if (opts->init_student && *opts->init_student) {
      char ipath[4096];
      long long iid = 0;
      st = finch_models_resolve(db, opts->init_student, ipath, sizeof ipath, &iid, NULL, err);
      if (!st) st = nn_model_load(&init, ipath, err);
      if (st) goto out;
    }
    double secs = 0;
    float *cxc = NULL;
    if (cx) {
      cxc = malloc(train->n * sizeof *cxc);
      for (size_t i = 0; cxc && i < train->n; i++) cxc[i] = (float)cx[i].c;
    }
    char run[128], ckp[4096];
    char tag[64];
    finch_unique_tag(tag, sizeof tag);
    snprintf(run, sizeof run, "%s-student-%s", opts->dataset, tag);
    if ((st = finch_distill__run_begin(db, "student", opts->dataset, &run_id, err)) != FINCH_OK) {
      free(cxc);
      nn_model_free(init);
      goto out;
    }
    {
      char dir[PATH_MAX];
      if ((st = finch_home_subdir("checkpoints", dir, sizeof dir, err)) != FINCH_OK) {
        free(cxc);
        nn_model_free(init);
        goto out;
      }
      snprintf(ckp, sizeof ckp, "%s/%s-student-%s-%llu.ck", dir, opts->dataset, res->stage,
               (unsigned long long)opts->seed);
    }
    finch_distill__tfm_args ta = {
        .db = db, .opts = opts, .be = be, .labels = labels, .nl = nl,
        .texts = (const char *const *)train->texts, .y = train->labels, .n = train->n, .soft = ds.soft,
        .alpha = ds.alpha, .fixed_alpha = kd.alpha, .tau = tau, .teacher = teacher, .init = init,
        .dim = opts->student_dim > 0 ? (uint32_t)opts->student_dim : 64,
        .layers = 2, .heads = 2, .ff = 256, .buckets = 16384,
        .epochs = opts->student_epochs > 0 ? (uint32_t)opts->student_epochs : scaled_epochs(20, n_source, train->n),
        .hidden_weight = opts->inter_weight > 0 ? opts->inter_weight : 0.4f,
        .attn_weight = opts->inter_weight > 0 ? opts->inter_weight : 0.4f, .head_gates = opts->head_gates,
        .gate_penalty = opts->gate_penalty > 0 ? opts->gate_penalty : 0.02f, .complexity = cxc, .seconds = &secs,
        .gate_share = res->gate_share, .gate_n = res->gate_n, .run = run, .run_id = run_id, .checkpoint = ckp,
        .resume = opts->resume};
    snprintf(res->run, sizeof res->run, "%s", run);
    res->gated = opts->head_gates && cxc;
    if (!ds.soft) ta.fixed_alpha = 0;
    st = finch_distill__tfm_student(&ta, &student, err);
    nn_model_free(init);
    free(cxc);
    if (st) goto out;
  } else {
    nn_train_config sc = nn_train_config_student();
    if (opts->student_dim > 0) sc.dim = (uint32_t)opts->student_dim;
    if (opts->student_buckets > 0) sc.buckets = (uint32_t)opts->student_buckets;
    sc.seed = opts->seed;
    sc.epochs = opts->student_epochs > 0 ? (uint32_t)opts->student_epochs
                                         : scaled_epochs(sc.epochs, n_source, train->n);
    if (!ds.soft)
      finch_info("training the student on hard labels only (%u epochs)", sc.epochs);
    else if (ds.alpha)
      finch_info("distilling the student (alpha per example from its complexity, mean %.3f; temperature %.1f, "
                 "%u epochs)", res->mean_alpha, kd.temperature, sc.epochs);
    else
      finch_info("distilling the student (alpha %.2f, temperature %.1f, %u epochs)", kd.alpha, kd.temperature,
                 sc.epochs);
    if ((st = finch_distill__run_begin(db, "student", opts->dataset, &run_id, err)) != FINCH_OK) goto out;
    finch_distill__steplog sl = {.member = "student", .phase = "vertical", .quiet = opts->quiet, .run_id = run_id};
    finch_distill__steplog gl = sl;
    gl.phase = "general";
    char tag[64];
    finch_unique_tag(tag, sizeof tag);
    snprintf(sl.run, sizeof sl.run, "%s-student-%s", opts->dataset, tag);
    snprintf(gl.run, sizeof gl.run, "%s", sl.run);
    finch_distill__epochlog el = {.log = &sl}, gel = {.log = &gl};
    finch_distill__selection_rows((const char *const *)dev->texts, dev->labels, dev->n, nl, opts->seed, &el);
    finch_distill__bow_args ba = {.db = db, .opts = opts, .be = be, .teacher = teacher, .ds = &ds, .labels = labels,
                                  .nl = nl, .cfg = &sc, .kd = ds.soft ? &kd : NULL, .cb = finch_distill__on_epoch,
                                  .cb_ctx = &el, .gen_cb = finch_distill__on_epoch, .gen_ctx = &gel, .res = res};
    st = finch_distill__bow_student(&ba, &student, err);
    if (!st) st = finch_distill__flush_steps(db, &gl, err);
    if (!st) st = finch_distill__flush_steps(db, &sl, err);
    finch_distill__epochlog_free(&el);
    free(sl.buf);
    free(gl.buf);
    snprintf(res->run, sizeof res->run, "%s", sl.run);
    if (st) goto out;
  }
  res->student_seconds = finch_clock_s() - t0;
  res->student_dev_acc = accuracy(student, dev);
  res->student_params = (long long)nn_model_n_params(student);
  finch_info("student: %lld parameters, dev accuracy %.4f, %.1f s", res->student_params, res->student_dev_acc,
             res->student_seconds);
  char why[256] = "";
  /* An external teacher has no accuracy here to hold the student to. */
  if (!res->external_teacher && opts->min_teacher_ratio > 0)
    res->student_failed = !finch_models_gate_student(res->student_dev_acc, res->teacher_dev_acc,
                                                     opts->min_teacher_ratio, why, sizeof why);
  st = save_and_register(db, student, "student", res->stage, opts->dataset, res->teacher_id, res->student_dev_acc,
                         res->student_seconds, res->n_train, opts->seed, res->student_failed ? why : NULL,
                         &res->student_id, res->student_path, sizeof res->student_path, err);
  if (!st && cx) st = store_complexity(db, res->student_id, train, cx, alphas, err);
  if (!st && run_id) st = finch_distill__run_finish(db, run_id, res->student_id, err);
  res->run_id = run_id;
  if (!st && res->student_failed) {
    size_t L = strlen(res->gate);
    snprintf(res->gate + L, sizeof res->gate - L, "%sstudent: %s", L ? "; " : "", why);
    if (!opts->allow_failed)
      st = finch_err_set(err, FINCH_EINVAL, "student %lld failed the quality gate: %s (registered as failed; "
                         "--allow-failed accepts it)", res->student_id, why);
  }
out:
  free(owned_ref);
  free(cx);
  free(alphas);
  free(soft);
  free(have);
  nn_model_free(teacher);
  nn_model_free(student);
  nn_backend_free(be);
  finch_dataset_split_free(train);
  finch_dataset_split_free(dev);
  return st;
}
