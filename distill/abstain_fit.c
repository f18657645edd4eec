/* Choosing a model's out-of-scope policy on held-out rows (distill/distill.h,
 * finch_abstain_fit): the selection half of the dataset's holdout (the
 * seeded, label-stratified split the teacher selects on, so the other half
 * stays for the report) as in-scope examples, and as out-of-scope examples
 * the holdout's rows labelled with the out-of-scope label plus negatives
 * from other datasets' holdout splits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dataset.h"
#include "core/log.h"
#include "distill/distill.h"
#include "distill/teacher_select.h"
#include "nn/halves.h"
#include "nn/abstain.h"
#include "nn/model_arch.h"

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

finch_status finch_abstain_fit(finch_db *db, nn_model *m, const finch_abstain_opts *o, finch_abstain_result *res,
                               finch_err *err) {
  memset(res, 0, sizeof *res);
  const char *method = o->method ? o->method : "threshold";
  unsigned mb = !strcmp(method, "threshold") ? NN_ABSTAIN_THRESHOLD
                : !strcmp(method, "class")   ? NN_ABSTAIN_CLASS
                : !strcmp(method, "both")    ? NN_ABSTAIN_THRESHOLD | NN_ABSTAIN_CLASS
                : !strcmp(method, "none")    ? 0
                                             : 99;
  if (mb == 99)
    return finch_err_set(err, FINCH_EINVAL, "--abstain %s: expected threshold, class, both or none", method);
  nn_abstain a = {.methods = mb, .temperature = 1, .oos_index = -1};
  const char *oos_label = o->oos_label && *o->oos_label ? o->oos_label : "oos";
  a.oos_index = nn_model_label_index(m, oos_label);
  if ((mb & NN_ABSTAIN_CLASS) && a.oos_index < 0)
    return finch_err_set(err, FINCH_EINVAL, "--abstain %s: the model has no out-of-scope class '%s' (train it with "
                         "--negatives, or name the class with --oos-label)", method, oos_label);
  if (!mb) return nn_abstain_write(m, &a, NULL, NULL, err);
  if (!o->dataset || !*o->dataset)
    return finch_err_set(err, FINCH_EINVAL, "--abstain: no dataset to choose the threshold on (--dataset)");
  if (o->oos_recall > 0 && o->in_scope_recall > 0)
    return finch_err_set(err, FINCH_EINVAL, "--oos-recall and --in-scope-recall are two targets; give one");
  const size_t C = nn_model_n_labels(m);
  finch_dataset_split *dev = NULL;
  finch_dataset_split *neg = NULL;
  float *probs = NULL, *score_in = NULL, *score_out = NULL, *row = NULL;
  int32_t *y = NULL;
  uint8_t *half = NULL;
  const char **texts = NULL;
  finch_dataset_query q = {.dataset = o->dataset, .split = "dev"};
  finch_status st = finch_dataset_split_load(db, &q, &dev, err);
  if (st) {
    if (st == FINCH_ENOTFOUND) finch_err_prefix(err, "--abstain");
    return st;
  }
  finch_negatives_query nq = {.names = o->negatives, .split = "dev", .negatives_exclude = o->negatives_exclude,
                             .max = o->negatives_max, .seed = o->seed};
  if (o->negatives && *o->negatives && (st = finch_dataset_negatives_load(db, &nq, &neg, err)) != FINCH_OK) goto out;
  const size_t nd = dev->n, nn_ = neg ? neg->n : 0, n = nd + nn_;
  probs = malloc((n ? n : 1) * C * sizeof *probs);
  y = malloc((n + 1) * sizeof *y);
  half = malloc(n + 1);
  texts = malloc((n + nd + 1) * sizeof *texts);
  score_in = malloc((n + 1) * sizeof *score_in);
  score_out = malloc((n + 1) * sizeof *score_out);
  row = malloc((C + 1) * sizeof *row);
  if (!probs || !y || !half || !texts || !score_in || !score_out || !row) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  /* Labels in the model's order; out-of-scope rows (the label, or a
   * negative) and labels the model lacks get C. The halves are the ones the
   * teacher selected on (nn/halves.h); the negatives are halved apart. */
  for (size_t i = 0; i < nd; i++) {
    texts[i] = dev->texts[i];
    const char *lab = dev->labels[i] >= 0 ? dev->label_names[dev->labels[i]] : NULL;
    int li = lab ? nn_model_label_index(m, lab) : -1;
    y[i] = !lab || li < 0 || !strcmp(lab, oos_label) ? (int32_t)C : li;
    texts[n + i] = lab; /* the row labels, for the halves, in the spare tail of texts */
  }
  nn_model_holdout_halves(m, texts + n, nd, oos_label, o->seed, half);
  for (size_t i = 0; i < nn_; i++) texts[nd + i] = neg->texts[i], y[nd + i] = (int32_t)C;
  if (nn_) {
    int32_t *zero = calloc(nn_, sizeof *zero);
    if (!zero) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
    nn_split_halves(zero, nn_, 1, o->seed, half + nd);
    free(zero);
  }
  if ((st = nn_model_predict_many(m, texts, n, probs, NULL, 1.0f, err)) != FINCH_OK) goto out;
  /* The temperature: fitted on the in-scope selection rows. */
  size_t ns = 0;
  for (size_t i = 0; i < n; i++) ns += half[i] == 0 && y[i] < (int32_t)C && (int)y[i] != a.oos_index;
  {
    float *ps = malloc((ns ? ns : 1) * C * sizeof *ps);
    int32_t *ys = malloc((ns + 1) * sizeof *ys);
    if (!ps || !ys) {
      free(ps), free(ys);
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (half[i] == 0 && y[i] < (int32_t)C && (int)y[i] != a.oos_index) {
        memcpy(ps + k * C, probs + i * C, C * sizeof *ps);
        ys[k++] = y[i];
      }
    a.temperature = ns ? nn_fit_temperature(ps, ys, ns, C) : 1.0f;
    free(ps);
    free(ys);
  }
  if (!(a.temperature > 0)) a.temperature = 1;
  /* Scores at that temperature, by kind, on the selection half (each
   * decision on a copy: nn_abstain_decide re-tempers in place). */
  nn_abstain score_only = a;
  score_only.methods = NN_ABSTAIN_THRESHOLD;
  score_only.threshold = 0;
  size_t n_in = 0, n_out = 0;
  for (size_t i = 0; i < n; i++) {
    if (half[i]) continue;
    float s;
    memcpy(row, probs + i * C, C * sizeof *row);
    nn_abstain_decide(&score_only, row, C, &s);
    if (y[i] < (int32_t)C && (int)y[i] != a.oos_index) score_in[n_in++] = s;
    else score_out[n_out++] = s;
  }
  res->n_in = (long long)n_in;
  res->n_out = (long long)n_out;
  res->n_negatives = (long long)nn_;
  res->temperature = a.temperature;
  qsort(score_in, n_in, sizeof *score_in, cmp_float);
  qsort(score_out, n_out, sizeof *score_out, cmp_float);
  if (mb & NN_ABSTAIN_THRESHOLD) {
    char target[96];
    if (o->oos_recall > 0) {
      if (!n_out) {
        st = finch_err_set(err, FINCH_EINVAL, "--oos-recall: no out-of-scope rows to choose on (the holdout of '%s' "
                           "has no '%s' rows; add --negatives)", o->dataset, oos_label);
        goto out;
      }
      /* The smallest threshold above the scores of that share of them. */
      size_t k = (size_t)ceil(o->oos_recall * (double)n_out);
      if (k > n_out) k = n_out;
      a.threshold = k ? nextafterf(score_out[k - 1], 2.0f) : 0.0f;
      snprintf(target, sizeof target, "out-of-scope recall %.3f", o->oos_recall);
    } else {
      double r = o->in_scope_recall > 0 ? o->in_scope_recall : 0.99;
      if (!n_in) {
        st = finch_err_set(err, FINCH_EINVAL, "--abstain: no in-scope holdout rows in '%s'", o->dataset);
        goto out;
      }
      /* The largest threshold that still answers that share of them. */
      size_t drop = (size_t)floor((1.0 - r) * (double)n_in);
      a.threshold = score_in[drop < n_in ? drop : n_in - 1];
      snprintf(target, sizeof target, "in-scope recall %.3f", r);
    }
    if (a.threshold > 1.0f) a.threshold = 1.0f;
    snprintf(res->target, sizeof res->target, "%s", target);
  } else {
    snprintf(res->target, sizeof res->target, "the out-of-scope class");
  }
  res->threshold = a.threshold;
  /* What the whole policy does on the selection half. */
  size_t kept = 0, refused = 0;
  for (size_t i = 0; i < n; i++) {
    if (half[i]) continue;
    memcpy(row, probs + i * C, C * sizeof *row);
    int k = nn_abstain_decide(&a, row, C, NULL);
    if (y[i] < (int32_t)C && (int)y[i] != a.oos_index) kept += k >= 0;
    else refused += k < 0;
  }
  res->sel_in_scope_recall = n_in ? (double)kept / (double)n_in : 0;
  res->sel_oos_recall = n_out ? (double)refused / (double)n_out : 0;
  char chosen[512];
  snprintf(chosen, sizeof chosen, "selection half of the holdout of %s (%zu in-scope, %zu out-of-scope rows%s%s%s), "
           "seed %llu", o->dataset, n_in, n_out, nn_ ? "; negatives from " : "", nn_ ? o->negatives : "",
           nn_ ? " (dev)" : "", o->seed);
  st = nn_abstain_write(m, &a, chosen, res->target, err);
  finch_info("abstention: %s, temperature %.3f, threshold %.4f, chosen on %s: answers %.4f of in-scope rows, refuses "
             "%.4f of out-of-scope rows there", nn_abstain_method_name(mb), (double)a.temperature, (double)a.threshold,
             chosen, res->sel_in_scope_recall, res->sel_oos_recall);
out:
  finch_dataset_split_free(dev);
  finch_dataset_split_free(neg);
  free(probs);
  free(y);
  free(half);
  free(texts);
  free(score_in);
  free(score_out);
  free(row);
  return st;
}
