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

int finch_cmd_rollout(int argc, char **argv) {
  cli_opt opts[] = {
      {"deployment", 'd', "NAME", "the deployment (default \"default\")", NULL},
      {"intent", 0, "INTENT", "promote/rollback one intent's own stage", NULL},
      {"to", 0, "STAGE", "target stage (default: the next for promote, the previous for rollback)", NULL},
      {"reason", 0, "TEXT", "why (required for promote and rollback; written to audit_log)", NULL},
      {"model", 'm', "FILE|ID", "the model rolled out: the gate counts only its labelled tasks", NULL},
      {"canary-share", 0, "X", "share of conversations the model answers in canary, 0..1", NULL},
      {"min-confidence", 0, "X", "the model answers at or above it (canary, primary), 0..1", NULL},
      {"margin", 0, "X", "gate: model accuracy must beat the rules' by more than X (default 0.02)", NULL},
      {"confidence", 0, "X", "gate: one-sided confidence of that bound (default 0.95)", NULL},
      {"min-tasks", 0, "N", "gate: labelled tasks needed (default 30)", NULL},
      {"window", 0, "N", "gate: the last N labelled tasks are used (default 500)", NULL},
      {"intent-floor", 0, "X", "gate: no intent's model accuracy under X (default 0.5)...", NULL},
      {"intent-min-n", 0, "N", "gate: ...among intents with at least N tasks (default 5)", NULL},
      {"json", 0, NULL, "print JSON", NULL},
  };
  cli_cmd cmd = {"rollout", "status | promote --reason TEXT | rollback --reason TEXT [--deployment D] [--intent I]",
                 "Staged rollout of the model beside the rules: assist, shadow, canary, primary, retired.\n"
                 "  status    the current stage, turns since the last change, labelled-task figures\n"
                 "  promote   one stage forward; into canary, primary and retired only when the gate holds\n"
                 "  rollback  to an earlier stage (default the previous), no gate",
                 "The gate: on the last --window human-labelled tasks, the one-sided --confidence lower bound\n"
                 "of (model accuracy - rules accuracy) (Newcombe's paired score interval) must exceed\n"
                 "--margin, with at least --min-tasks tasks and no intent under --intent-floor. Every\n"
                 "change and every refusal is written to audit_log with the figures.\n"
                 "Exit status: 0 changed (or status), 1 refused or failed, 2 usage.",
                 opts, sizeof opts / sizeof opts[0]};
  const char *pos[1];
  size_t npos;
  int rc = cli_parse(&cmd, argc, argv, pos, 1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  const char *action = npos ? pos[0] : "";
  int status = strcmp(action, "status") == 0, promote = strcmp(action, "promote") == 0,
      rollback = strcmp(action, "rollback") == 0;
  if (!status && !promote && !rollback) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  if (!status && (!cli_get(&cmd, "reason") || !*cli_get(&cmd, "reason"))) {
    fprintf(stderr, "finch rollout %s: --reason is required\n", action);
    return 2;
  }
  finch_gate_opts g = finch_gate_opts_default();
  double share = -1, minc = -1;
  long long min_tasks = g.min_tasks, window = g.window, intent_min_n = g.intent_min_n;
  if (cli_get_double(&cmd, "canary-share", &share) || cli_get_double(&cmd, "min-confidence", &minc) ||
      cli_get_double(&cmd, "margin", &g.margin) || cli_get_double(&cmd, "confidence", &g.confidence) ||
      cli_get_double(&cmd, "intent-floor", &g.intent_floor) || cli_get_long(&cmd, "min-tasks", &min_tasks) ||
      cli_get_long(&cmd, "window", &window) || cli_get_long(&cmd, "intent-min-n", &intent_min_n))
    return 2;
  if ((cli_get(&cmd, "canary-share") && (share < 0 || share > 1)) ||
      (cli_get(&cmd, "min-confidence") && (minc < 0 || minc > 1)) || !(g.confidence > 0.5 && g.confidence < 1) ||
      min_tasks < 0 || window < 1 || intent_min_n < 0) {
    fprintf(stderr, "finch rollout: --canary-share and --min-confidence are in [0, 1], --confidence in (0.5, 1), "
                    "counts are non-negative\n");
    return 2;
  }
  g.min_tasks = (long)min_tasks;
  g.window = (long)window;
  g.intent_min_n = (long)intent_min_n;
  const char *deployment = cli_get(&cmd, "deployment") ? cli_get(&cmd, "deployment") : "default";

  finch_db *db = cli_db_open();
  if (!db) return 1;
  PGconn *c = finch_db_conn(db);
  finch_err err;
  int ret = 0;
  char sha[FINCH_SHA256_HEX_LEN] = "";
  if (cli_get(&cmd, "model")) {
    char path[4096];
    long long mid;
    if (finch_models_resolve(db, cli_get(&cmd, "model"), path, sizeof path, &mid, NULL, &err) ||
        finch_sha256_file(path, sha, &err)) {
      finch_db_close(db);
      return cli_fail(&err);
    }
  }
  json_t *out = NULL;
  if (status) {
    if (finch_rollout_status_json(c, deployment, sha[0] ? sha : NULL, &g, &out, &err)) ret = cli_fail(&err);
    else if (cli_get(&cmd, "json")) cli_print_json(out);
    else {
      print_status(out);
      json_decref(out);
    }
  } else {
    const char *u = getenv("USER");
    char actor[160];
    snprintf(actor, sizeof actor, "cli:%s", u && *u ? u : "unknown");
    finch_rollout_change ch = {.deployment = deployment,
                               .intent = cli_get(&cmd, "intent"),
                               .action = promote ? FINCH_ROLLOUT_PROMOTE : FINCH_ROLLOUT_ROLLBACK,
                               .to = cli_get(&cmd, "to"),
                               .actor = actor,
                               .reason = cli_get(&cmd, "reason"),
                               .model_sha256 = sha[0] ? sha : NULL,
                               .canary_share = share,
                               .min_confidence = minc,
                               .gate = g};
    int applied = 0;
    if (finch_rollout_apply(c, &ch, &applied, &out, &err)) {
      ret = cli_fail(&err);
    } else {
      json_t *gate = json_object_get(out, "gate");
      if (cli_get(&cmd, "json")) {
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
