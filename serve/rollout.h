/* Staged rollout of the model beside the legacy rules, per deployment and
 * optionally per intent.
 *
 * Stages, in promotion order:
 *   assist   rules answer; the reply carries the model's suggestion, and turns
 *            where the two disagree or the model is unsure become labelling
 *            tasks;
 *   shadow   rules answer; the model runs on every turn, and its agreement
 *            with the rules (turns) and with human labels (tasks) is tracked;
 *            disagreements and unsure turns still become tasks, so that the
 *            gate keeps getting labels;
 *   canary   the model answers the conversations whose stable hash bucket is
 *            under canary_share (a conversation never changes engine while the
 *            share stays the same), the rules the rest;
 *   primary  the model answers; the rules answer only when the model's
 *            confidence is under min_confidence or its answer is out of
 *            scope (and a rule fires);
 *   retired  the rules are off.
 * The model's answer is out of scope when it is the out-of-scope label or
 * the served decision says so (the model's policy, nn/abstain.h). A model
 * that answers out of scope gives no intent, and the turn is handed off
 * (serve/turns.h); in assist and shadow its answer is labelled like any
 * other, as the out-of-scope label it goes by.
 *
 * State lives in rollout_state (schemas/001_init.sql), append-only: the
 * current stage of a deployment is its latest row with intent NULL, and an
 * intent's own stage (when it has rows) applies to the turns the model
 * assigns to that intent. A deployment without rows is in assist.
 *
 * Promotion moves one stage forward and, into canary, primary and retired,
 * only when the gate holds (finch_rollout_gate_eval). Rollback moves to any
 * earlier stage without a gate. Every change, and every refused promotion, is
 * written to audit_log with who, when, why and the gate's figures, and a
 * rollout.changed webhook is emitted in the same transaction.
 *
 * The pure functions here (stages, canary buckets, decisions, gate
 * statistics) need no database; finch_rollout_* functions taking a PGconn
 * run their own transaction on it. */
#ifndef FINCH_SERVE_ROLLOUT_H
#define FINCH_SERVE_ROLLOUT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "core/status.h"

typedef enum {
  FINCH_STAGE_ASSIST = 0,
  FINCH_STAGE_SHADOW,
  FINCH_STAGE_CANARY,
  FINCH_STAGE_PRIMARY,
  FINCH_STAGE_RETIRED,
  FINCH_STAGE_COUNT
} finch_stage;

const char *finch_stage_name(finch_stage s);
/* Returns -1 for an unknown name. */
int finch_stage_parse(const char *name);
/* 1 when a promotion into `to` must pass the gate (canary, primary, retired). */
int finch_stage_needs_gate(finch_stage to);

/* --- canary buckets ------------------------------------------------------- */

/* A stable number in [0, 1) for a conversation of a deployment: the first 64
 * bits of SHA-256("deployment" U+001F "conversation") over 2^64. The same
 * inputs give the same bucket in every process and on every machine. */
double finch_rollout_bucket(const char *deployment, const char *conversation_id);

/* --- decisions ------------------------------------------------------------ */

typedef enum { FINCH_ENGINE_RULES = 0, FINCH_ENGINE_MODEL } finch_engine;
const char *finch_engine_name(finch_engine e);

typedef enum { FINCH_TASK_NONE = 0, FINCH_TASK_DISAGREE, FINCH_TASK_UNSURE } finch_task_reason;
const char *finch_task_reason_name(finch_task_reason r);

typedef struct {
  finch_stage stage;
  double canary_share;   /* canary: share of conversations the model answers, [0,1] */
  double min_confidence; /* model answers at or above it; under it the turn is "unsure" */
  const char *oos_label; /* the model's out-of-scope label, or NULL */
} finch_rollout_policy;

typedef struct {
  const char *rule_intent;  /* the rules' answer, NULL when no rule fires */
  const char *model_intent; /* the model's answer as a label (out of scope: the label it goes by) */
  double model_confidence;
  int model_out_of_scope;   /* 1: the served decision is out of scope (model_intent need not be oos_label) */
  double bucket; /* finch_rollout_bucket() of the conversation */
} finch_rollout_inputs;

typedef struct {
  finch_engine engine;     /* who answered */
  const char *intent;      /* the answer (points into the inputs); NULL: none, or the model out of scope */
  double confidence;       /* the model's when it answered; rules: 1 fired, 0 not */
  int in_canary;           /* canary: the conversation's bucket is under the share */
  int fallback;            /* primary/canary: the model was unsure or out of scope, rules answered */
  int out_of_scope;        /* the model's answer was out of scope (model_out_of_scope or oos_label) */
  int suggest;             /* assist: the reply carries the model's suggestion */
  finch_task_reason task;  /* a labelling task to create, or NONE */
} finch_rollout_decision;

finch_rollout_decision finch_rollout_decide(const finch_rollout_policy *p, const finch_rollout_inputs *in);

/* --- gate statistics ------------------------------------------------------ */

/* Φ^{-1}(p) for p in (0,1) (Acklam's rational approximation, relative error
 * under 1.2e-9); NAN outside. */
double finch_normal_quantile(double p);

/* Wilson score interval for k successes in n trials at normal quantile z;
 * n = 0 gives [0, 1]. */
void finch_wilson_interval(long k, long n, double z, double *lo, double *hi);

/* Newcombe's hybrid score interval (1998, method 10) for the difference of
 * two paired proportions, p1 - p2, from the 2x2 table of n pairs:
 *   a = both right, b = only the first right, c = only the second right,
 *   d = both wrong.
 * z is the normal quantile of each one-sided bound (1.645 for 95%). */
void finch_paired_diff_interval(long a, long b, long c, long d, double z, double *lo, double *hi);

/* One human-labelled turn: the human's label, the model's and the rules'
 * answers (rules may be NULL: no rule fired). */
typedef struct {
  const char *label;
  const char *model;
  const char *rules;
} finch_labeled_pair;

typedef struct {
  double margin;      /* model accuracy must exceed the rules' by more than this... */
  double confidence;  /* ...with this one-sided confidence (lower bound of the paired difference) */
  long min_tasks;     /* fewer labelled tasks than this: refused */
  long window;        /* the last N labelled tasks are used */
  double intent_floor; /* no intent (by human label) with model recall under this... */
  long intent_min_n;  /* ...among intents with at least this many labelled tasks */
} finch_gate_opts;

/* margin 0.02, confidence 0.95, min_tasks 30, window 500, floor 0.5, intent_min_n 5. */
finch_gate_opts finch_gate_opts_default(void);

typedef struct {
  char *intent;
  long n, model_right, rules_right;
  double model_acc, rules_acc;
  int below_floor;
} finch_gate_intent;

typedef struct {
  int pass;
  char reason[512]; /* why it passed or failed, one sentence */
  long n, both, model_only, rules_only, neither;
  double model_acc, rules_acc, diff;
  double lower, upper; /* one-sided bounds of the paired difference at opts.confidence */
  double z;
  finch_gate_opts opts;
  finch_gate_intent *intents; /* by intent name */
  size_t n_intents;
} finch_gate_result;

finch_status finch_rollout_gate_eval(const finch_labeled_pair *pairs, size_t n, const finch_gate_opts *opts,
                                     finch_gate_result *out, finch_err *err);
void finch_gate_result_free(finch_gate_result *r);
/* The figures as a JSON object (new reference; NULL on allocation failure). */
json_t *finch_gate_result_json(const finch_gate_result *r);

/* --- state in PostgreSQL -------------------------------------------------- */

typedef struct {
  finch_stage stage;
  long long id;         /* rollout_state row; 0 for the implicit initial assist */
  json_t *params;       /* the row's params (new reference, never NULL) */
  char changed_by[128];
  char created_at[64];
} finch_rollout_state;

/* The current state of deployment (intent NULL) or of one intent (falling
 * back to the deployment's). *st must be released with
 * finch_rollout_state_clear(). Runs in the caller's transaction, if any. */
finch_status finch_rollout_get(PGconn *c, const char *deployment, const char *intent, finch_rollout_state *st,
                               finch_err *err);
void finch_rollout_state_clear(finch_rollout_state *st);

/* The last opts->window labelled tasks of a deployment (for one intent: those
 * the human or the model gave that intent), optionally only those of one
 * model, evaluated by the gate. */
finch_status finch_rollout_gate_db(PGconn *c, const char *deployment, const char *intent, const char *model_sha256,
                                   const finch_gate_opts *opts, finch_gate_result *out, finch_err *err);

typedef enum { FINCH_ROLLOUT_PROMOTE = 0, FINCH_ROLLOUT_ROLLBACK } finch_rollout_action;

typedef struct {
  const char *deployment;
  const char *intent;       /* NULL: the whole deployment */
  finch_rollout_action action;
  const char *to;           /* target stage; NULL: the next (promote) or previous (rollback) */
  const char *actor;        /* who: "key:<name>" or "cli:<user>" */
  const char *reason;       /* why, free text; required */
  const char *model_sha256; /* the model being rolled out; gate uses its tasks only when set */
  double canary_share;      /* < 0: keep the current value */
  double min_confidence;    /* < 0: keep the current value */
  finch_gate_opts gate;
} finch_rollout_change;

/* Applies a change in one transaction, serialised per deployment (advisory
 * lock): reads the current stage, checks the move, evaluates the gate when
 * needed, appends to rollout_state, writes audit_log, emits rollout.changed.
 * *applied = 1 when the stage changed, 0 when the gate refused it (the
 * refusal is audited too). *result (new reference, may be NULL on return)
 * describes the outcome: deployment, intent, from, to, action, applied,
 * reason, gate figures. Promotion goes one stage at a time; promoting into
 * the current stage with a model_sha256 other than the stage's points the
 * stage at that model (a retrained model replacing the one in shadow), with
 * the gate a promotion into that stage has. FINCH_EINVAL for a move that is
 * not allowed (promote backwards or past the next stage, into the current
 * stage without another model, unknown stage, missing reason). */
finch_status finch_rollout_apply(PGconn *c, const finch_rollout_change *ch, int *applied, json_t **result,
                                 finch_err *err);

/* The status report: current stage and params of the deployment and of each
 * intent with its own stage, turns and model/rules agreement since the
 * deployment's last change, the labelled-task figures and whether the gate
 * for the next stage would hold now. */
finch_status finch_rollout_status_json(PGconn *c, const char *deployment, const char *model_sha256,
                                       const finch_gate_opts *gate, json_t **out, finch_err *err);

#endif
