/* Assisted labelling: the tasks the rollout creates (serve/rollout.h), the
 * labellers' answers, and the labelled rows they give the next training run.
 *
 * A task holds a redacted turn, the model's suggestion (label, confidence,
 * model SHA-256, out_of_scope: the label is the out-of-scope label its
 * decision goes by, to accept or correct like any other), the rules' answer, the stage and why it was made
 * (disagree, unsure). A labeller accepts the suggestion or corrects it; the
 * first answer is final (status accepted or corrected, final_label) and is
 * written to utterances, split train, in dataset "<deployment>_labels"
 * (created on first use, format "labeling"; meta names the task, the
 * labeller and the decision). A second labeller may then label the task
 * independently (second_label); second labels never change final_label and
 * feed the agreement figures (percent agreement and Cohen's kappa). */
#ifndef FINCH_SERVE_LABELING_H
#define FINCH_SERVE_LABELING_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "core/status.h"

typedef struct {
  const char *deployment;
  const char *conversation_id;
  long long turn_id;          /* 0: none */
  const char *text;           /* already redacted */
  const char *suggested_label;
  double suggested_confidence;
  const char *model_sha256;
  const char *rule_label;     /* NULL: no rule fired */
  const char *stage;
  const char *reason;         /* "disagree" or "unsure" */
  int out_of_scope;           /* the suggestion is the model's out-of-scope decision */
} finch_labeling_new;

/* Inserts a task in the caller's open transaction. */
finch_status finch_labeling_task_create(PGconn *c, const finch_labeling_new *t, long long *id, finch_err *err);

typedef struct {
  const char *deployment;
  const char *status;     /* open (NULL), resolved, needs_second, all */
  const char *intent;     /* NULL: any; else the suggestion, the rules' answer or the final label */
  const char *stage;      /* NULL: any */
  double min_confidence;  /* suggested_confidence >= it (< 0: no bound) */
  double max_confidence;  /* suggested_confidence <= it (< 0: no bound) */
  long limit;             /* 1..500; 0 = 50 */
  long long after_id;     /* tasks with id > after_id (paging) */
} finch_labeling_filter;

/* {"tasks": [...], "next_after": id|null}. FINCH_EINVAL for a bad filter. */
finch_status finch_labeling_list(PGconn *c, const finch_labeling_filter *f, json_t **out, finch_err *err);

typedef enum {
  FINCH_LABELING_OK = 0,
  FINCH_LABELING_NOT_FOUND, /* no such task in this deployment */
  FINCH_LABELING_CONFLICT,  /* already labelled by this labeller, or has two labels */
  FINCH_LABELING_INVALID,   /* bad decision or label */
} finch_labeling_outcome;

/* Records labeller's decision ("accept" or "correct" with label) on task id
 * of deployment, in one transaction. *out (new reference) is the task after
 * the change, with "utterance_id" for a first label. A refusal sets
 * *outcome and err and returns FINCH_EINVAL; a database failure returns
 * FINCH_EDB. */
finch_status finch_labeling_submit(PGconn *c, const char *deployment, long long id, const char *labeler,
                                   const char *decision, const char *label, finch_labeling_outcome *outcome,
                                   json_t **out, finch_err *err);

/* {"tasks": {open, accepted, corrected, skipped}, "acceptance_rate",
 *  "labelers": [{labeler, labels}], "agreement": {"double_labelled",
 *  "agreeing", "percent_agreement", "cohen_kappa"}}. */
finch_status finch_labeling_stats(PGconn *c, const char *deployment, json_t **out, finch_err *err);

/* Cohen's kappa of two raters over n items (a[i], b[i] their labels):
 * (p_o - p_e) / (1 - p_e), with p_e from each rater's own label shares.
 * *p_observed (may be NULL) gets p_o. n = 0 gives NAN; p_e = 1 (both raters
 * always give one same label) gives 1 when they agree on everything. */
double finch_cohen_kappa(const char *const *a, const char *const *b, size_t n, double *p_observed);

#endif
