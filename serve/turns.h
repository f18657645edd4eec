/* Conversation turns: one turn recorded in one transaction with everything
 * that follows from it.
 *
 * A user turn takes the deployment's rollout stage (serve/rollout.h), lets
 * the rollout decide between the rules' and the model's answer, stores the
 * turn (conversation_turns, the next turn_index of its conversation), opens
 * a labelling task when the decision asks for one (serve/labeling.h), and
 * queues the webhook events intent.classified, handoff.requested (confidence
 * under handoff_below, or the model answering out of scope) and
 * labeling.task_created (serve/webhook.h); each says out_of_scope. An agent
 * turn is stored alone. All of it commits together or not at all; turns of
 * one conversation are serialised by an advisory lock, so that turn indices
 * never collide. */
#ifndef FINCH_SERVE_TURNS_H
#define FINCH_SERVE_TURNS_H

#include <libpq-fe.h>
#include <stdint.h>

#include "core/status.h"
#include "serve/rollout.h"

/* The deployment's defaults, used where its rollout stage's params do not say. */
typedef struct {
  double canary_share, min_confidence; /* in [0, 1] */
  double handoff_below;                /* handoff.requested under it */
  const char *oos_label;               /* the model's out-of-scope label, or NULL */
} finch_turn_policy;

typedef struct {
  const char *deployment, *conversation;
  const char *speaker;      /* "user" or "agent" */
  const char *text;         /* normalised and redacted: it is stored as given */
  const char *model_intent; /* user turns: the model's answer, its confidence */
  double model_conf;
  int model_out_of_scope;   /* the served decision is out of scope (model_intent: the label it goes by) */
  const char *rule_intent;  /* NULL: no rule fired */
  const char *model_sha;    /* the model's SHA-256 (hex) */
  long long key_id;         /* the API key's id; 0: none */
  uint64_t t0_ns;           /* the request's start (core/clock.h); the turn's latency_ms runs from it to
                             * just before the insert. 0: no latency stored */
} finch_turn_in;

typedef struct {
  finch_rollout_decision d; /* user turns only; zero for agent turns */
  finch_stage stage;
  long long turn_id, task_id; /* task_id 0: no labelling task */
  int turn_index, handoff;
} finch_turn_out;

/* Records turn in on c (no transaction open) in one transaction, as above;
 * on failure nothing is written and c is left without a transaction. */
finch_status finch_turn_record(PGconn *c, const finch_turn_policy *pol, const finch_turn_in *in, finch_turn_out *out,
                               finch_err *err);

#endif
