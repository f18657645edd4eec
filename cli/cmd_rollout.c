/* finch rollout: the stage of a deployment, promotion through the gate, and
 * rollback (serve/rollout.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/hash.h"
#include "core/models.h"
#include "serve/rollout.h"

static void print_status(json_t *s) {
  printf("deployment %s: %s since %s (by %s)\n", json_string_value(json_object_get(s, "deployment")),
         json_string_value(json_object_get(s, "stage")),
         json_is_string(json_object_get(s, "since")) ? json_string_value(json_object_get(s, "since")) : "the start",
         json_string_value(json_object_get(s, "changed_by")));
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(s, "intents"), i, v)
      printf("  intent %s: %s since %s\n", json_string_value(json_object_get(v, "intent")),
             json_string_value(json_object_get(v, "stage")), json_string_value(json_object_get(v, "since")));
  json_t *t = json_object_get(s, "turns_since_change");
  printf("turns since the change: %lld, model agrees with rules on %lld, answered by the model %lld, handoffs %lld\n",
         (long long)json_integer_value(json_object_get(t, "turns")),
         (long long)json_integer_value(json_object_get(t, "model_agrees_with_rules")),
         (long long)json_integer_value(json_object_get(t, "answered_by_model")),
         (long long)json_integer_value(json_object_get(t, "handoffs")));
  json_t *g = json_object_get(s, "labels");
  printf("labelled tasks: %lld; model accuracy %.4f, rules %.4f; lower bound of the difference %.4f\n",
         (long long)json_integer_value(json_object_get(g, "n")), json_number_value(json_object_get(g, "model_accuracy")),
         json_number_value(json_object_get(g, "rules_accuracy")), json_number_value(json_object_get(g, "lower_bound")));
  if (json_is_string(json_object_get(s, "next_stage")))
    printf("next stage %s: %s%s\n", json_string_value(json_object_get(s, "next_stage")),
           json_is_true(json_object_get(s, "next_needs_gate")) ? (json_is_true(json_object_get(g, "pass")) ? "gate holds: " : "gate fails: ") : "no gate",
           json_is_true(json_object_get(s, "next_needs_gate")) ? json_string_value(json_object_get(g, "reason")) : "");
}

typedef struct {
  finch_rollout_change ch;
  const char *model;
  int json;
} rollout_args;

#define F(m) FINCH_OPT_FIELD(rollout_args, ch.m)
static const finch_opt rollout_opts[] = {
    {"deployment", 'd', FINCH_OPT_STRING, F(deployment), .def = "default", .arg = "NAME", .help = "the deployment"},
    {"intent", 0, FINCH_OPT_STRING, F(intent), .arg = "INTENT", .help = "promote/rollback one intent's own stage"},
    {"to", 0, FINCH_OPT_STRING, F(to), .arg = "STAGE",
     .help = "target stage (default: the next for promote, the previous for rollback)"},
    {"reason", 0, FINCH_OPT_STRING, F(reason), .arg = "TEXT",
     .help = "why (required for promote and rollback; written to audit_log)"},
    {"model", 'm', FINCH_OPT_STRING, FINCH_OPT_FIELD(rollout_args, model), .arg = "FILE|ID",
     .help = "the model rolled out: the gate counts only its labelled tasks"},
    {"canary-share", 0, FINCH_OPT_FLOAT, F(canary_share), .min = 0, .max = 1, .flags = FINCH_OPT_HIDE_DEFAULT,
     .arg = "X", .help = "share of conversations the model answers in canary, 0..1"},
    {"min-confidence", 0, FINCH_OPT_FLOAT, F(min_confidence), .min = 0, .max = 1, .flags = FINCH_OPT_HIDE_DEFAULT,
     .arg = "X", .help = "the model answers at or above it (canary, primary), 0..1"},
    {"margin", 0, FINCH_OPT_FLOAT, F(gate.margin), .arg = "X",
     .help = "gate: model accuracy must beat the rules' by more than X"},
    {"confidence", 0, FINCH_OPT_FLOAT, F(gate.confidence), .min = 0.5, .max = 1,
     .flags = FINCH_OPT_MIN_OPEN | FINCH_OPT_MAX_OPEN, .arg = "X", .help = "gate: one-sided confidence of that bound"},
    {"min-tasks", 0, FINCH_OPT_INT, F(gate.min_tasks), .min = 0, .max = 1e308, .arg = "N",
     .help = "gate: labelled tasks needed"},
    {"window", 0, FINCH_OPT_INT, F(gate.window), .min = 1, .max = 1e308, .arg = "N",
     .help = "gate: the last N labelled tasks are used"},
    {"intent-floor", 0, FINCH_OPT_FLOAT, F(gate.intent_floor), .arg = "X",
     .help = "gate: no intent's model accuracy under X..."},
    {"intent-min-n", 0, FINCH_OPT_INT, F(gate.intent_min_n), .min = 0, .max = 1e308, .arg = "N",
     .help = "gate: ...among intents with at least N tasks"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(rollout_args, json), .help = "print JSON"},
};

/* Unset shares keep the deployment's value; the gate starts from the
 * library's defaults. */
static void rollout_init(void *p) {
  rollout_args *a = p;
  a->ch.canary_share = -1;
  a->ch.min_confidence = -1;
  a->ch.gate = finch_gate_opts_default();
}

static int rollout_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_rollout = {
    "rollout", "staged rollout beside the rules: status, promote, rollback",
    "status | promote --reason TEXT | rollback --reason TEXT [--deployment D] [--intent I]",
    "Staged rollout of the model beside the rules: assist, shadow, canary, primary, retired.\n"
    "  status    the current stage, turns since the last change, labelled-task figures\n"
    "  promote   one stage forward; into canary, primary and retired only when the gate holds\n"
    "  rollback  to an earlier stage (default the previous), no gate",
    "The gate: on the last --window human-labelled tasks, the one-sided --confidence lower bound\n"
    "of (model accuracy - rules accuracy) (Newcombe's paired score interval) must exceed\n"
    "--margin, with at least --min-tasks tasks and no intent under --intent-floor. Every\n"
    "change and every refusal is written to audit_log with the figures.\n"
    "Exit status: 0 changed (or status), 1 refused or failed, 2 usage.",
    rollout_opts, CLI_N(rollout_opts), sizeof(rollout_args), rollout_init, 1, rollout_run, 0};

static int rollout_run(void *opts, const char **pos, size_t npos) {
  rollout_args a = *(rollout_args *)opts;
  const char *action = npos ? pos[0] : "";
  int status = strcmp(action, "status") == 0, promote = strcmp(action, "promote") == 0,
      rollback = strcmp(action, "rollback") == 0;
  if (!status && !promote && !rollback) return cli_usage_error(&cli_rollout, &a);
  if (!status && (!a.ch.reason || !*a.ch.reason)) {
    fprintf(stderr, "finch rollout %s: --reason is required\n", action);
    return 2;
  }
  finch_gate_opts g = a.ch.gate;
  const char *deployment = a.ch.deployment;

  finch_db *db = cli_db_open();
  if (!db) return 1;
  PGconn *c = finch_db_conn(db);
  finch_err err;
  int ret = 0;
  char sha[FINCH_SHA256_HEX_LEN] = "";
  if (a.model) {
    char path[4096];
    long long mid;
    if (finch_models_resolve(db, a.model, path, sizeof path, &mid, NULL, &err) ||
        finch_sha256_file(path, sha, &err)) {
      finch_db_close(db);
      return cli_fail(&err);
    }
  }
  json_t *out = NULL;
  if (status) {
    if (finch_rollout_status_json(c, deployment, sha[0] ? sha : NULL, &g, &out, &err)) ret = cli_fail(&err);
    else if (a.json) cli_print_json(out);
    else {
      print_status(out);
      json_decref(out);
    }
  } else {
    const char *u = getenv("USER");
    char actor[160];
    snprintf(actor, sizeof actor, "cli:%s", u && *u ? u : "unknown");
    finch_rollout_change ch = a.ch;
    ch.action = promote ? FINCH_ROLLOUT_PROMOTE : FINCH_ROLLOUT_ROLLBACK;
    ch.actor = actor;
    ch.model_sha256 = sha[0] ? sha : NULL;
    int applied = 0;
    if (finch_rollout_apply(c, &ch, &applied, &out, &err)) {
      ret = cli_fail(&err);
    } else {
      json_t *gate = json_object_get(out, "gate");
      if (a.json) {
        cli_print_json(out);
        out = NULL;
      } else if (applied) {
        printf("%s: %s -> %s\n", deployment, json_string_value(json_object_get(out, "from")),
               json_string_value(json_object_get(out, "to")));
        if (json_is_object(gate)) printf("gate: %s\n", json_string_value(json_object_get(gate, "reason")));
      } else {
        printf("%s: promotion %s -> %s refused: %s\n", deployment, json_string_value(json_object_get(out, "from")),
               json_string_value(json_object_get(out, "to")), json_string_value(json_object_get(gate, "reason")));
      }
      json_decref(out);
      ret = applied ? 0 : 1;
    }
  }
  finch_db_close(db);
  return ret;
}
