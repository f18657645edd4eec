/* Rollout stages, decisions and promotion gates (serve/rollout.h). */
#include "serve/rollout.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/db.h"
#include "serve/webhook.h"

static const char *const stage_names[FINCH_STAGE_COUNT] = {"assist", "shadow", "canary", "primary", "retired"};

const char *finch_stage_name(finch_stage s) {
  return (unsigned)s < FINCH_STAGE_COUNT ? stage_names[s] : "unknown";
}

int finch_stage_parse(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < FINCH_STAGE_COUNT; i++)
    if (strcmp(name, stage_names[i]) == 0) return i;
  return -1;
}

int finch_stage_needs_gate(finch_stage to) {
  return to == FINCH_STAGE_CANARY || to == FINCH_STAGE_PRIMARY || to == FINCH_STAGE_RETIRED;
}

const char *finch_engine_name(finch_engine e) { return e == FINCH_ENGINE_MODEL ? "model" : "rules"; }

const char *finch_task_reason_name(finch_task_reason r) {
  switch (r) {
  case FINCH_TASK_DISAGREE:
    return "disagree";
  case FINCH_TASK_UNSURE:
    return "unsure";
  case FINCH_TASK_NONE:
    break;
  }
  return "none";
}

/* --- canary buckets ------------------------------------------------------- */

double finch_rollout_bucket(const char *deployment, const char *conversation_id) {
  finch_sha256 *h = finch_sha256_new();
  char hex[FINCH_SHA256_HEX_LEN];
  if (!h) return 0.0; /* out of memory: everyone in the lowest bucket */
  finch_sha256_update(h, deployment ? deployment : "", deployment ? strlen(deployment) : 0);
  finch_sha256_update(h, "\x1f", 1);
  finch_sha256_update(h, conversation_id ? conversation_id : "", conversation_id ? strlen(conversation_id) : 0);
  finch_sha256_final(h, hex);
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char ch = hex[i];
    v = (v << 4) | (uint64_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
  }
  /* 53 significant bits, so the result is exact and strictly under 1. */
  return (double)(v >> 11) / 9007199254740992.0;
}

/* --- decisions ------------------------------------------------------------ */

static int same_intent(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

finch_rollout_decision finch_rollout_decide(const finch_rollout_policy *p, const finch_rollout_inputs *in) {
  finch_rollout_decision d = {0};
  int unsure = !(in->model_confidence >= p->min_confidence);
  int oos = in->model_out_of_scope || (p->oos_label && same_intent(in->model_intent, p->oos_label));
  d.out_of_scope = oos;
  int model_answers = 0;
  switch (p->stage) {
  case FINCH_STAGE_ASSIST:
    d.suggest = 1;
    break;
  case FINCH_STAGE_SHADOW:
    break;
  case FINCH_STAGE_CANARY:
    d.in_canary = in->bucket < p->canary_share;
    model_answers = d.in_canary;
    break;
  case FINCH_STAGE_PRIMARY:
  case FINCH_STAGE_RETIRED:
  case FINCH_STAGE_COUNT:
    model_answers = 1;
    break;
  }
  if (model_answers && p->stage != FINCH_STAGE_RETIRED && (unsure || oos) && in->rule_intent) {
    model_answers = 0;
    d.fallback = 1;
  }
  if (model_answers) {
    d.engine = FINCH_ENGINE_MODEL;
    d.intent = oos ? NULL : in->model_intent; /* out of scope is never an intent */
    d.confidence = in->model_confidence;
  } else {
    d.engine = FINCH_ENGINE_RULES;
    d.intent = in->rule_intent;
    d.confidence = in->rule_intent ? 1.0 : 0.0;
  }
  if (p->stage == FINCH_STAGE_ASSIST || p->stage == FINCH_STAGE_SHADOW) {
    if (!same_intent(in->rule_intent, in->model_intent))
      d.task = FINCH_TASK_DISAGREE;
    else if (unsure)
      d.task = FINCH_TASK_UNSURE;
  }
  return d;
}

/* --- gate statistics ------------------------------------------------------ */

double finch_normal_quantile(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01,  -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  if (!(p > 0.0 && p < 1.0)) return NAN;
  const double lo = 0.02425, hi = 1 - lo;
  double q, r;
  if (p < lo) {
    q = sqrt(-2 * log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > hi) {
    q = sqrt(-2 * log(1 - p));
    return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  q = p - 0.5;
  r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

void finch_wilson_interval(long k, long n, double z, double *lo, double *hi) {
  if (n <= 0) {
    *lo = 0.0;
    *hi = 1.0;
    return;
  }
  double nn = (double)n, p = (double)k / nn, z2 = z * z;
  double denom = 1 + z2 / nn;
  double centre = (p + z2 / (2 * nn)) / denom;
  double half = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  *lo = fmax(0.0, centre - half);
  *hi = fmin(1.0, centre + half);
}

void finch_paired_diff_interval(long a, long b, long c, long d, double z, double *lo, double *hi) {
  long n = a + b + c + d;
  if (n <= 0) {
    *lo = -1.0;
    *hi = 1.0;
    return;
  }
  double p1 = (double)(a + b) / (double)n, p2 = (double)(a + c) / (double)n;
  double l1, u1, l2, u2;
  finch_wilson_interval(a + b, n, z, &l1, &u1);
  finch_wilson_interval(a + c, n, z, &l2, &u2);
  /* phi: the correlation of the pairs (0 when a margin is empty). */
  double A = (double)(a + b) * (double)(c + d) * (double)(a + c) * (double)(b + d);
  double phi = A > 0 ? ((double)a * (double)d - (double)b * (double)c) / sqrt(A) : 0.0;
  double theta = p1 - p2;
  double dl = (p1 - l1) * (p1 - l1) - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) * (u2 - p2);
  double du = (u1 - p1) * (u1 - p1) - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) * (p2 - l2);
  *lo = fmax(-1.0, theta - sqrt(fmax(dl, 0.0)));
  *hi = fmin(1.0, theta + sqrt(fmax(du, 0.0)));
}

finch_gate_opts finch_gate_opts_default(void) {
  finch_gate_opts o = {.margin = 0.02, .confidence = 0.95, .min_tasks = 30, .window = 500,
                       .intent_floor = 0.5, .intent_min_n = 5};
  return o;
}

static int gate_intent_cmp(const void *x, const void *y) {
  return strcmp(((const finch_gate_intent *)x)->intent, ((const finch_gate_intent *)y)->intent);
}

finch_status finch_rollout_gate_eval(const finch_labeled_pair *pairs, size_t n, const finch_gate_opts *opts,
                                     finch_gate_result *out, finch_err *err) {
  memset(out, 0, sizeof *out);
  out->opts = *opts;
  if (!(opts->confidence > 0.5 && opts->confidence < 1.0))
    return finch_err_set(err, FINCH_EINVAL, "gate: confidence %g is not in (0.5, 1)", opts->confidence);
  if (opts->window > 0 && n > (size_t)opts->window) n = (size_t)opts->window;
  size_t cap = 0;
  for (size_t i = 0; i < n; i++) {
    const finch_labeled_pair *p = &pairs[i];
    if (!p->label) continue;
    int m = same_intent(p->model, p->label), r = same_intent(p->rules, p->label);
    out->n++;
    if (m && r) out->both++;
    else if (m) out->model_only++;
    else if (r) out->rules_only++;
    else out->neither++;
    size_t k = 0;
    while (k < out->n_intents && strcmp(out->intents[k].intent, p->label) != 0) k++;
    if (k == out->n_intents) {
      if (k == cap) {
        size_t nc = cap ? cap * 2 : 16;
        finch_gate_intent *g = realloc(out->intents, nc * sizeof *g);
        if (!g) goto oom;
        out->intents = g;
        cap = nc;
      }
      memset(&out->intents[k], 0, sizeof out->intents[k]);
      out->intents[k].intent = strdup(p->label);
      if (!out->intents[k].intent) goto oom;
      out->n_intents++;
    }
    out->intents[k].n++;
    out->intents[k].model_right += m;
    out->intents[k].rules_right += r;
  }
  if (out->n_intents) qsort(out->intents, out->n_intents, sizeof *out->intents, gate_intent_cmp);
  double nn = out->n ? (double)out->n : 1.0;
  out->model_acc = (double)(out->both + out->model_only) / nn;
  out->rules_acc = (double)(out->both + out->rules_only) / nn;
  out->diff = out->model_acc - out->rules_acc;
  out->z = finch_normal_quantile(opts->confidence);
  finch_paired_diff_interval(out->both, out->model_only, out->rules_only, out->neither, out->z, &out->lower,
                             &out->upper);
  const finch_gate_intent *worst = NULL;
  for (size_t k = 0; k < out->n_intents; k++) {
    finch_gate_intent *g = &out->intents[k];
    g->model_acc = (double)g->model_right / (double)g->n;
    g->rules_acc = (double)g->rules_right / (double)g->n;
    g->below_floor = g->n >= opts->intent_min_n && g->model_acc < opts->intent_floor;
    if (g->below_floor && (!worst || g->model_acc < worst->model_acc)) worst = g;
  }
  if (out->n < opts->min_tasks)
    snprintf(out->reason, sizeof out->reason, "%ld labelled tasks, fewer than the %ld the gate needs", out->n,
             opts->min_tasks);
  else if (!(out->lower > opts->margin))
    snprintf(out->reason, sizeof out->reason,
             "model accuracy %.4f vs rules %.4f: the %.0f%% lower bound of the difference, %.4f, is not above "
             "the margin %.4f",
             out->model_acc, out->rules_acc, opts->confidence * 100, out->lower, opts->margin);
  else if (worst)
    snprintf(out->reason, sizeof out->reason, "intent %s: model accuracy %.4f on %ld tasks is under the floor %.4f",
             worst->intent, worst->model_acc, worst->n, opts->intent_floor);
  else {
    out->pass = 1;
    snprintf(out->reason, sizeof out->reason,
             "model accuracy %.4f vs rules %.4f on %ld tasks: the %.0f%% lower bound of the difference, %.4f, is "
             "above the margin %.4f, and no intent is under the floor %.4f",
             out->model_acc, out->rules_acc, out->n, opts->confidence * 100, out->lower, opts->margin,
             opts->intent_floor);
  }
  return FINCH_OK;
oom:
  finch_gate_result_free(out);
  return finch_err_set(err, FINCH_ENOMEM, "gate: out of memory");
}

void finch_gate_result_free(finch_gate_result *r) {
  if (!r) return;
  for (size_t k = 0; k < r->n_intents; k++) free(r->intents[k].intent);
  free(r->intents);
  r->intents = NULL;
  r->n_intents = 0;
}

json_t *finch_gate_result_json(const finch_gate_result *r) {
  json_t *intents = json_array();
  for (size_t k = 0; intents && k < r->n_intents; k++) {
    const finch_gate_intent *g = &r->intents[k];
    json_array_append_new(intents, json_pack("{s:s, s:I, s:f, s:f, s:b}", "intent", g->intent, "n",
                                             (json_int_t)g->n, "model_accuracy", g->model_acc, "rules_accuracy",
                                             g->rules_acc, "below_floor", g->below_floor));
  }
  json_t *o = json_pack("{s:b, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, "
                        "s:f, s:I}",
                        "pass", r->pass, "reason", r->reason, "method",
                        "Newcombe hybrid score bound on the paired difference of accuracies (one-sided)", "n",
                        (json_int_t)r->n, "both_right", (json_int_t)r->both, "model_only_right",
                        (json_int_t)r->model_only, "rules_only_right", (json_int_t)r->rules_only, "both_wrong",
                        (json_int_t)r->neither, "model_accuracy", r->model_acc, "rules_accuracy", r->rules_acc,
                        "difference", r->diff, "lower_bound", r->lower, "upper_bound", r->upper, "confidence",
                        r->opts.confidence, "margin", r->opts.margin, "min_tasks", (json_int_t)r->opts.min_tasks,
                        "window", (json_int_t)r->opts.window, "intent_floor", r->opts.intent_floor, "intent_min_n",
                        (json_int_t)r->opts.intent_min_n);
  if (!o || !intents) {
    json_decref(o);
    json_decref(intents);
    return NULL;
  }
  json_object_set_new(o, "intents", intents);
  return o;
}

/* --- state in PostgreSQL -------------------------------------------------- */

void finch_rollout_state_clear(finch_rollout_state *st) {
  json_decref(st->params);
  st->params = NULL;
}

static finch_status rollout_read_row(PGresult *r, finch_rollout_state *st) {
  int s = finch_stage_parse(PQgetvalue(r, 0, 1));
  st->stage = s < 0 ? FINCH_STAGE_ASSIST : (finch_stage)s;
  st->id = atoll(PQgetvalue(r, 0, 0));
  st->params = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
  if (!json_is_object(st->params)) {
    json_decref(st->params);
    st->params = json_object();
  }
  snprintf(st->changed_by, sizeof st->changed_by, "%s", PQgetvalue(r, 0, 3));
  snprintf(st->created_at, sizeof st->created_at, "%s", PQgetvalue(r, 0, 4));
  return FINCH_OK;
}

#define ROLLOUT_ROW_COLS                                                                                             \
  "id, stage, params::text, changed_by, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

finch_status finch_rollout_get(PGconn *c, const char *deployment, const char *intent, finch_rollout_state *st,
                               finch_err *err) {
  memset(st, 0, sizeof *st);
  for (int pass = intent ? 0 : 1; pass < 2; pass++) {
    const char *p[2] = {deployment, intent};
    PGresult *r = pass == 0 ? finch_db_query_on(c,
                                                "SELECT " ROLLOUT_ROW_COLS " FROM rollout_state"
                                                " WHERE deployment = $1 AND intent = $2 ORDER BY id DESC LIMIT 1",
                                                2, p, err)
                            : finch_db_query_on(c,
                                                "SELECT " ROLLOUT_ROW_COLS " FROM rollout_state"
                                                " WHERE deployment = $1 AND intent IS NULL ORDER BY id DESC LIMIT 1",
                                                1, p, err);
    if (!r) return FINCH_EDB;
    if (PQntuples(r) == 1) {
      rollout_read_row(r, st);
      PQclear(r);
      return st->params ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "rollout: out of memory");
    }
    PQclear(r);
  }
  st->stage = FINCH_STAGE_ASSIST;
  st->params = json_object();
  snprintf(st->changed_by, sizeof st->changed_by, "(initial)");
  return st->params ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "rollout: out of memory");
}

finch_status finch_rollout_gate_db(PGconn *c, const char *deployment, const char *intent, const char *model_sha256,
                                   const finch_gate_opts *opts, finch_gate_result *out, finch_err *err) {
  memset(out, 0, sizeof *out);
  char window[32];
  snprintf(window, sizeof window, "%ld", opts->window > 0 ? opts->window : 500);
  const char *p[4] = {deployment, intent, model_sha256, window};
  PGresult *r = finch_db_query_on(c,
                                  "SELECT final_label, suggested_label, rule_label FROM labeling_tasks"
                                  " WHERE deployment = $1 AND status IN ('accepted', 'corrected') AND final_label IS NOT NULL"
                                  "   AND ($2::text IS NULL OR final_label = $2 OR suggested_label = $2)"
                                  "   AND ($3::text IS NULL OR model_sha256 = $3)"
                                  " ORDER BY resolved_at DESC, id DESC LIMIT $4::bigint",
                                  4, p, err);
  if (!r) return FINCH_EDB;
  size_t n = (size_t)PQntuples(r);
  finch_labeled_pair *pairs = calloc(n ? n : 1, sizeof *pairs);
  if (!pairs) {
    PQclear(r);
    return finch_err_set(err, FINCH_ENOMEM, "gate: out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    pairs[i].label = PQgetvalue(r, (int)i, 0);
    pairs[i].model = PQgetisnull(r, (int)i, 1) ? NULL : PQgetvalue(r, (int)i, 1);
    pairs[i].rules = PQgetisnull(r, (int)i, 2) ? NULL : PQgetvalue(r, (int)i, 2);
  }
  finch_status st = finch_rollout_gate_eval(pairs, n, opts, out, err);
  free(pairs);
  PQclear(r);
  return st;
}

/* Appends an audit_log row; details is consumed. */
static finch_status rollout_audit(PGconn *c, const char *actor, const char *action, const char *subject,
                                  json_t *details, finch_err *err) {
  char *text = details ? json_dumps(details, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
  json_decref(details);
  if (!text) return finch_err_set(err, FINCH_ENOMEM, "rollout: out of memory");
  const char *p[4] = {actor, action, subject, text};
  finch_status st = finch_db_run_on(c, "INSERT INTO audit_log (actor, action, subject, details) VALUES ($1, $2, $3, $4::jsonb)",
                                    4, p, err);
  free(text);
  return st;
}

finch_status finch_rollout_apply(PGconn *c, const finch_rollout_change *ch, int *applied, json_t **result,
                                 finch_err *err) {
  *applied = 0;
  if (result) *result = NULL;
  if (!ch->deployment || !*ch->deployment)
    return finch_err_set(err, FINCH_EINVAL, "rollout: no deployment given");
  if (!ch->reason || !*ch->reason)
    return finch_err_set(err, FINCH_EINVAL, "rollout: a reason is required for every change");
  if (!ch->actor || !*ch->actor) return finch_err_set(err, FINCH_EINVAL, "rollout: no actor given");
  if (ch->canary_share > 1.0) return finch_err_set(err, FINCH_EINVAL, "rollout: canary_share %g is over 1", ch->canary_share);
  if (ch->min_confidence > 1.0)
    return finch_err_set(err, FINCH_EINVAL, "rollout: min_confidence %g is over 1", ch->min_confidence);
  int to_parsed = -1;
  if (ch->to && (to_parsed = finch_stage_parse(ch->to)) < 0)
    return finch_err_set(err, FINCH_EINVAL,
                         "rollout: unknown stage \"%.64s\" (assist, shadow, canary, primary or retired)", ch->to);

  finch_status st;
  finch_rollout_state cur = {0};
  finch_gate_result gate = {0};
  int gated = 0;
  json_t *params = NULL, *out = NULL, *payload = NULL;
  char subject[512];
  snprintf(subject, sizeof subject, "%s%s%s", ch->deployment, ch->intent ? "/" : "", ch->intent ? ch->intent : "");

  if ((st = finch_db_begin_on(c, err))) return st;
  const char *lp[1] = {subject};
  if ((st = finch_db_run_on(c, "SELECT pg_advisory_xact_lock(hashtextextended('finch.rollout:' || $1, 0))", 1, lp,
                            err)))
    goto fail;
  /* An intent's change starts from its own row, else from the deployment's. */
  if ((st = finch_rollout_get(c, ch->deployment, ch->intent, &cur, err))) goto fail;

  int from = (int)cur.stage, to;
  if (ch->action == FINCH_ROLLOUT_PROMOTE) {
    to = to_parsed >= 0 ? to_parsed : from + 1;
    /* Into the stage it is in, with another model: the stage is pointed at
     * that model (a retrained model replacing the one in shadow), gated as
     * a promotion into the stage would be. */
    const char *cur_sha = json_string_value(json_object_get(cur.params, "model_sha256"));
    const int repoint = to == from && ch->model_sha256 && (!cur_sha || strcmp(cur_sha, ch->model_sha256) != 0);
    if (to == from && !repoint) {
      st = finch_err_set(err, FINCH_EINVAL, "rollout: %s is already in %s%s", subject,
                         finch_stage_name((finch_stage)from),
                         ch->model_sha256 ? " with that model" : "; give --model to point the stage at another model");
      goto fail;
    }
    if (from == FINCH_STAGE_RETIRED && !repoint) {
      st = finch_err_set(err, FINCH_EINVAL, "rollout: %s is already retired; nothing to promote to", subject);
      goto fail;
    }
    if (to != from + 1 && !repoint) {
      st = finch_err_set(err, FINCH_EINVAL, "rollout: %s is in %s; promotion goes one stage at a time, to %s", subject,
                         finch_stage_name((finch_stage)from), finch_stage_name((finch_stage)(from + 1)));
      goto fail;
    }
  } else {
    to = to_parsed >= 0 ? to_parsed : from - 1;
    if (from == FINCH_STAGE_ASSIST || to >= from || to < 0) {
      st = finch_err_set(err, FINCH_EINVAL, "rollout: %s is in %s; rollback goes to an earlier stage", subject,
                         finch_stage_name((finch_stage)from));
      goto fail;
    }
  }
  const char *action = ch->action == FINCH_ROLLOUT_PROMOTE ? "promote" : "rollback";

  params = json_deep_copy(cur.params);
  if (!params) goto oom;
  json_object_del(params, "model_sha256");
  if (ch->canary_share >= 0) json_object_set_new(params, "canary_share", json_real(ch->canary_share));
  if (ch->min_confidence >= 0) json_object_set_new(params, "min_confidence", json_real(ch->min_confidence));
  if (ch->model_sha256) json_object_set_new(params, "model_sha256", json_string(ch->model_sha256));

  if (ch->action == FINCH_ROLLOUT_PROMOTE && finch_stage_needs_gate((finch_stage)to)) {
    if ((st = finch_rollout_gate_db(c, ch->deployment, ch->intent, ch->model_sha256, &ch->gate, &gate, err)))
      goto fail;
    gated = 1;
  }
  json_t *gate_json = gated ? finch_gate_result_json(&gate) : json_null();
  out = json_pack("{s:s, s:o, s:s, s:s, s:s, s:b, s:s, s:s, s:o}", "deployment", ch->deployment, "intent",
                  ch->intent ? json_string(ch->intent) : json_null(), "action", action, "from",
                  finch_stage_name((finch_stage)from), "to", finch_stage_name((finch_stage)to), "applied",
                  !gated || gate.pass, "actor", ch->actor, "reason", ch->reason, "gate",
                  gate_json ? gate_json : json_null());
  if (!out) goto oom;

  if (gated && !gate.pass) {
    json_object_set_new(out, "refused", json_string(gate.reason));
    if ((st = rollout_audit(c, ch->actor, "rollout.refused", subject, json_deep_copy(out), err))) goto fail;
    if ((st = finch_db_commit_on(c, err))) goto fail;
    goto done;
  }

  char *ptext = json_dumps(params, JSON_COMPACT | JSON_REAL_PRECISION(6));
  if (!ptext) goto oom;
  const char *ip[6] = {ch->deployment, ch->intent, finch_stage_name((finch_stage)to), ptext, ch->actor, ch->reason};
  PGresult *r = finch_db_query_on(c,
                                  "INSERT INTO rollout_state (deployment, intent, stage, params, changed_by, reason)"
                                  " VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id,"
                                  " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                                  6, ip, err);
  free(ptext);
  if (!r) {
    st = FINCH_EDB;
    goto fail;
  }
  json_object_set_new(out, "rollout_state_id", json_integer(atoll(PQgetvalue(r, 0, 0))));
  json_object_set_new(out, "at", json_string(PQgetvalue(r, 0, 1)));
  PQclear(r);
  json_object_set(out, "params", params);
  char audit_action[32];
  snprintf(audit_action, sizeof audit_action, "rollout.%s", action);
  if ((st = rollout_audit(c, ch->actor, audit_action, subject, json_deep_copy(out), err))) goto fail;

  payload = json_pack("{s:s, s:o, s:s, s:s, s:s, s:s, s:s, s:O}", "deployment", ch->deployment, "intent",
                      ch->intent ? json_string(ch->intent) : json_null(), "action", action, "from",
                      finch_stage_name((finch_stage)from), "to", finch_stage_name((finch_stage)to), "actor", ch->actor,
                      "reason", ch->reason, "at", json_object_get(out, "at"));
  char *ptxt = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
  if (!ptxt) goto oom;
  int queued = 0;
  st = finch_webhook_emit(c, "rollout.changed", ptxt, &queued, err);
  free(ptxt);
  if (st) goto fail;
  if ((st = finch_db_commit_on(c, err))) goto fail;
  *applied = 1;

done:
  if (result) *result = out;
  else json_decref(out);
  json_decref(params);
  json_decref(payload);
  finch_rollout_state_clear(&cur);
  finch_gate_result_free(&gate);
  return FINCH_OK;
oom:
  st = finch_err_set(err, FINCH_ENOMEM, "rollout: out of memory");
fail:
  finch_db_rollback_on(c);
  json_decref(out);
  json_decref(params);
  json_decref(payload);
  finch_rollout_state_clear(&cur);
  finch_gate_result_free(&gate);
  return st;
}

static json_t *state_json(const finch_rollout_state *s) {
  return json_pack("{s:s, s:O, s:s, s:o}", "stage", finch_stage_name(s->stage), "params", s->params, "changed_by",
                   s->changed_by, "since", s->created_at[0] ? json_string(s->created_at) : json_null());
}

finch_status finch_rollout_status_json(PGconn *c, const char *deployment, const char *model_sha256,
                                       const finch_gate_opts *gate, json_t **out, finch_err *err) {
  *out = NULL;
  finch_rollout_state cur;
  finch_status st = finch_rollout_get(c, deployment, NULL, &cur, err);
  if (st) return st;
  json_t *o = json_pack("{s:s}", "deployment", deployment);
  json_t *sj = state_json(&cur);
  if (!o || !sj) {
    json_decref(o);
    json_decref(sj);
    finch_rollout_state_clear(&cur);
    return finch_err_set(err, FINCH_ENOMEM, "rollout: out of memory");
  }
  json_object_update(o, sj);
  json_decref(sj);

  const char *p[2] = {deployment, cur.created_at[0] ? cur.created_at : NULL};
  PGresult *r = finch_db_query_on(c,
                                  "SELECT DISTINCT ON (intent) intent, stage, params::text, changed_by,"
                                  " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                                  " FROM rollout_state WHERE deployment = $1 AND intent IS NOT NULL ORDER BY intent, id DESC",
                                  1, p, err);
  if (!r) goto dbfail;
  json_t *intents = json_array();
  for (int i = 0; i < PQntuples(r); i++) {
    json_t *params = json_loads(PQgetvalue(r, i, 2), 0, NULL);
    json_array_append_new(intents, json_pack("{s:s, s:s, s:o, s:s, s:s}", "intent", PQgetvalue(r, i, 0), "stage",
                                             PQgetvalue(r, i, 1), "params", params ? params : json_object(),
                                             "changed_by", PQgetvalue(r, i, 3), "since", PQgetvalue(r, i, 4)));
  }
  PQclear(r);
  json_object_set_new(o, "intents", intents);

  r = finch_db_query_on(c,
                        "SELECT count(*), count(*) FILTER (WHERE model_intent IS NOT DISTINCT FROM rule_intent),"
                        " count(*) FILTER (WHERE engine = 'model'), count(*) FILTER (WHERE handoff)"
                        " FROM conversation_turns WHERE deployment = $1 AND speaker = 'user'"
                        "   AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz)",
                        2, p, err);
  if (!r) goto dbfail;
  long long n = atoll(PQgetvalue(r, 0, 0)), agree = atoll(PQgetvalue(r, 0, 1));
  json_object_set_new(o, "turns_since_change",
                      json_pack("{s:I, s:I, s:o, s:I, s:I}", "turns", (json_int_t)n, "model_agrees_with_rules",
                                (json_int_t)agree, "agreement_rate",
                                n ? json_real((double)agree / (double)n) : json_null(), "answered_by_model",
                                (json_int_t)atoll(PQgetvalue(r, 0, 2)), "handoffs",
                                (json_int_t)atoll(PQgetvalue(r, 0, 3))));
  PQclear(r);

  r = finch_db_query_on(c,
                        "SELECT id, intent, stage, changed_by, coalesce(reason, ''),"
                        " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                        " FROM rollout_state WHERE deployment = $1 ORDER BY id DESC LIMIT 20",
                        1, p, err);
  if (!r) goto dbfail;
  json_t *hist = json_array();
  for (int i = 0; i < PQntuples(r); i++)
    json_array_append_new(hist, json_pack("{s:I, s:o, s:s, s:s, s:s, s:s}", "id",
                                          (json_int_t)atoll(PQgetvalue(r, i, 0)), "intent",
                                          PQgetisnull(r, i, 1) ? json_null() : json_string(PQgetvalue(r, i, 1)),
                                          "stage", PQgetvalue(r, i, 2), "changed_by", PQgetvalue(r, i, 3), "reason",
                                          PQgetvalue(r, i, 4), "at", PQgetvalue(r, i, 5)));
  PQclear(r);
  json_object_set_new(o, "history", hist);

  finch_gate_result g;
  if ((st = finch_rollout_gate_db(c, deployment, NULL, model_sha256, gate, &g, err))) goto fail;
  json_t *gj = finch_gate_result_json(&g);
  finch_gate_result_free(&g);
  if (cur.stage + 1 < FINCH_STAGE_COUNT) {
    finch_stage next = (finch_stage)(cur.stage + 1);
    json_object_set_new(o, "next_stage", json_string(finch_stage_name(next)));
    json_object_set_new(o, "next_needs_gate", json_boolean(finch_stage_needs_gate(next)));
  } else {
    json_object_set_new(o, "next_stage", json_null());
  }
  json_object_set_new(o, "labels", gj ? gj : json_null());
  finch_rollout_state_clear(&cur);
  *out = o;
  return FINCH_OK;
dbfail:
  st = FINCH_EDB;
fail:
  json_decref(o);
  finch_rollout_state_clear(&cur);
  return st;
}
