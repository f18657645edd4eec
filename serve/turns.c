/* serve/turns.h: a conversation turn and what follows from it, in one
 * transaction. */
#include "serve/turns.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/db.h"
#include "serve/labeling.h"
#include "serve/webhook.h"

/* Queues one webhook event in c's open transaction; payload is consumed. */
static finch_status turn_emit(PGconn *c, const char *type, json_t *payload, finch_err *err) {
  char *text = payload ? json_dumps(payload, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
  json_decref(payload);
  if (!text) return finch_err_set(err, FINCH_ENOMEM, "turn: out of memory");
  int queued = 0;
  finch_status st = finch_webhook_emit(c, type, text, &queued, err);
  free(text);
  return st;
}

/* A number from the stage's params, else dflt. */
static double turn_param(const json_t *params, const char *name, double dflt) {
  json_t *v = json_object_get(params, name);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

finch_status finch_turn_record(PGconn *c, const finch_turn_policy *p, const finch_turn_in *in, finch_turn_out *o,
                               finch_err *err) {
  memset(o, 0, sizeof *o);
  int user = strcmp(in->speaker, "user") == 0;
  finch_rollout_state state = {0};
  finch_status st = finch_db_begin_on(c, err);
  if (st) return st;
  const char *lp[2] = {in->deployment, in->conversation};
  if ((st = finch_db_run_on(c, "SELECT pg_advisory_xact_lock(hashtextextended('finch.turn:' || $1 || '/' || $2, 0))",
                            2, lp, err)))
    goto fail;
  if (user) {
    if ((st = finch_rollout_get(c, in->deployment, in->model_intent, &state, err))) goto fail;
    finch_rollout_policy pol = {
        .stage = state.stage,
        .canary_share = turn_param(state.params, "canary_share", p->canary_share),
        .min_confidence = turn_param(state.params, "min_confidence", p->min_confidence),
        .oos_label = p->oos_label,
    };
    finch_rollout_inputs fin = {.rule_intent = in->rule_intent, .model_intent = in->model_intent,
                                .model_confidence = in->model_conf, .model_out_of_scope = in->model_out_of_scope,
                                .bucket = finch_rollout_bucket(in->deployment, in->conversation)};
    o->d = finch_rollout_decide(&pol, &fin);
    o->stage = state.stage;
    /* A model that answers out of scope has no intent to give: a human takes over. */
    o->handoff = o->d.confidence < p->handoff_below || (o->d.out_of_scope && o->d.engine == FINCH_ENGINE_MODEL);
  }
  char conf[32], mconf[32], key[32], lat[32];
  snprintf(conf, sizeof conf, "%.6f", o->d.confidence);
  if (in->t0_ns) snprintf(lat, sizeof lat, "%.4f", (double)(finch_clock_ns() - in->t0_ns) / 1e6);
  snprintf(mconf, sizeof mconf, "%.6f", in->model_conf);
  snprintf(key, sizeof key, "%lld", in->key_id);
  const char *tp[17] = {in->deployment,
                        in->conversation,
                        in->speaker,
                        in->text,
                        user ? finch_stage_name(o->stage) : NULL,
                        user ? finch_engine_name(o->d.engine) : NULL,
                        user ? o->d.intent : NULL,
                        user ? conf : NULL,
                        user ? in->rule_intent : NULL,
                        user ? in->model_intent : NULL,
                        user ? mconf : NULL,
                        user ? in->model_sha : NULL,
                        user && o->stage == FINCH_STAGE_CANARY ? (o->d.in_canary ? "true" : "false") : NULL,
                        o->handoff ? "true" : "false",
                        in->key_id ? key : NULL,
                        o->d.out_of_scope ? "true" : "false",
                        in->t0_ns ? lat : NULL};
  PGresult *r = finch_db_query_on(c,
                                  "INSERT INTO conversation_turns (deployment, conversation_id, turn_index, speaker, text, stage,"
                                  " engine, intent, confidence, rule_intent, model_intent, model_confidence, model_sha256,"
                                  " in_canary, handoff, api_key_id, out_of_scope, latency_ms)"
                                  " SELECT $1, $2, coalesce(max(turn_index) + 1, 0), $3, $4, $5, $6, $7, $8::real, $9, $10,"
                                  " $11::real, $12, $13::boolean, $14::boolean, $15::bigint, $16::boolean, $17::real"
                                  " FROM conversation_turns WHERE deployment = $1 AND conversation_id = $2"
                                  " RETURNING id, turn_index",
                                  17, tp, err);
  if (!r) {
    st = FINCH_EDB;
    goto fail;
  }
  o->turn_id = atoll(PQgetvalue(r, 0, 0));
  o->turn_index = atoi(PQgetvalue(r, 0, 1));
  PQclear(r);
  if (!user) goto commit;

  if (o->d.task != FINCH_TASK_NONE) {
    finch_labeling_new t = {.deployment = in->deployment, .conversation_id = in->conversation, .turn_id = o->turn_id,
                            .text = in->text, .suggested_label = in->model_intent,
                            .suggested_confidence = in->model_conf, .model_sha256 = in->model_sha,
                            .rule_label = in->rule_intent, .stage = finch_stage_name(o->stage),
                            .out_of_scope = o->d.out_of_scope,
                            .reason = finch_task_reason_name(o->d.task)};
    if ((st = finch_labeling_task_create(c, &t, &o->task_id, err))) goto fail;
    if ((st = turn_emit(c, "labeling.task_created",
                         json_pack("{s:I, s:s, s:s, s:i, s:s, s:s, s:{s:s, s:f, s:s, s:b}, s:o}", "task_id",
                                   (json_int_t)o->task_id, "deployment", in->deployment, "conversation_id",
                                   in->conversation, "turn", o->turn_index, "reason",
                                   finch_task_reason_name(o->d.task), "stage", finch_stage_name(o->stage),
                                   "suggestion", "intent", in->model_intent, "confidence", in->model_conf, "model",
                                   in->model_sha, "out_of_scope", o->d.out_of_scope, "rule_intent",
                                   in->rule_intent ? json_string(in->rule_intent) : json_null()),
                         err)))
      goto fail;
  }
  if ((st = turn_emit(c, "intent.classified",
                       json_pack("{s:s, s:s, s:i, s:o, s:s, s:f, s:s, s:s, s:b}", "deployment", in->deployment,
                                 "conversation_id", in->conversation, "turn", o->turn_index, "intent",
                                 o->d.intent ? json_string(o->d.intent) : json_null(), "engine",
                                 finch_engine_name(o->d.engine), "confidence", o->d.confidence, "stage",
                                 finch_stage_name(o->stage), "model", in->model_sha, "out_of_scope",
                                 o->d.out_of_scope),
                       err)))
    goto fail;
  if (o->handoff &&
      (st = turn_emit(c, "handoff.requested",
                       json_pack("{s:s, s:s, s:i, s:o, s:s, s:f, s:f, s:s, s:b}", "deployment", in->deployment,
                                 "conversation_id", in->conversation, "turn", o->turn_index, "intent",
                                 o->d.intent ? json_string(o->d.intent) : json_null(), "engine",
                                 finch_engine_name(o->d.engine), "confidence", o->d.confidence, "threshold",
                                 p->handoff_below, "stage", finch_stage_name(o->stage), "out_of_scope",
                                 o->d.out_of_scope),
                       err)))
    goto fail;
commit:
  if ((st = finch_db_commit_on(c, err))) goto fail;
  finch_rollout_state_clear(&state);
  return FINCH_OK;
fail:
  finch_db_rollback_on(c);
  finch_rollout_state_clear(&state);
  return st;
}

