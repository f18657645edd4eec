/* sgd: Schema-Guided Dialogue (google-research-datasets/dstc8-schema-guided-
 * dialogue), a JSON list of dialogues or one dialogue object:
 *
 *   {"dialogue_id": "32_00011", "services": [...], "turns": [
 *     {"speaker": "USER", "utterance": "...", "frames": [
 *       {"service": "Banks_1", "actions": [{"act": "INFORM_INTENT", ...}],
 *        "state": {"active_intent": "CheckBalance", ...}}, ...]}, ...]}
 *
 * Each turn becomes a record in order: dialogue_id, turn (0-based position in
 * the dialogue), speaker "user"/"system", text = utterance, meta
 * {"service":S} for the frame the turn is about. A user turn's label is that
 * frame's state.active_intent ("NONE" is kept); system turns have none.
 * Record numbers count turns from 1 over the file (a malformed dialogue
 * counts as one).
 *
 * Which frame a turn is about. A user turn has several frames when it leaves
 * one service for another ("No, thanks. Can you check my balance?" carries a
 * NEGATE_INTENT frame for Events_2 and an INFORM_INTENT frame for Banks_1).
 * Each frame scores 4 when one of its actions is INFORM_INTENT (the user
 * states what they want), 2 when its state differs from the state of that
 * service at the dialogue's previous user turn (or the service is new), 1 when
 * it has any action; the highest score wins, the first frame on a tie. On the
 * 545 two-frame user turns of the Banks dialogues this leaves no tie, where
 * "actions non-empty or state changed" alone holds for both frames in every
 * one of them. A system turn is about its first frame with actions. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/format_impl.h"

typedef struct {
  const char *service;
  json_t *state; /* borrowed from the document */
} sgd_state;

typedef struct {
  finch_format_reader base;
  json_t *root;       /* the list of dialogues; one dialogue object is wrapped in a list */
  json_t *meta_cache; /* service -> meta text */
  size_t next_dialogue;
  json_t *turns; /* of the dialogue being read; NULL between dialogues */
  size_t t;      /* next turn */
  const char *dialogue_id;
  char id_buf[32]; /* a numeric dialogue_id as text */
  sgd_state *states; /* per service, as of the dialogue's last user turn */
  size_t nstates, states_cap;
  long long n; /* records (turns) so far */
} sgd_reader;

static json_t *sgd_state_of(const sgd_reader *r, const char *service) {
  for (size_t i = 0; i < r->nstates; i++)
    if (strcmp(r->states[i].service, service) == 0) return r->states[i].state;
  return NULL;
}

static int sgd_set_state(sgd_reader *r, const char *service, json_t *state) {
  for (size_t i = 0; i < r->nstates; i++)
    if (strcmp(r->states[i].service, service) == 0) {
      r->states[i].state = state;
      return 0;
    }
  if (r->nstates == r->states_cap) {
    size_t cap = r->states_cap ? 2 * r->states_cap : 8;
    sgd_state *s = realloc(r->states, cap * sizeof *s);
    if (!s) return -1;
    r->states = s;
    r->states_cap = cap;
  }
  r->states[r->nstates++] = (sgd_state){service, state};
  return 0;
}

static int sgd_has_act(json_t *actions, const char *act) {
  size_t i;
  json_t *a;
  json_array_foreach(actions, i, a) {
    const char *v = json_string_value(json_object_get(a, "act"));
    if (v && strcmp(v, act) == 0) return 1;
  }
  return 0;
}

/* Starts the next dialogue: 0 when there is none, 1 when started, -1 when it
 * is malformed (err set; it is skipped). */
static int sgd_start_dialogue(sgd_reader *r, finch_record *rec, const char **field, finch_err *err) {
  if (r->next_dialogue >= json_array_size(r->root)) return 0;
  size_t d = r->next_dialogue++;
  json_t *dlg = json_array_get(r->root, d);
  json_t *id = json_object_get(dlg, "dialogue_id");
  json_t *turns = json_object_get(dlg, "turns");
  r->nstates = 0;
  r->t = 0;
  if (json_is_string(id)) {
    r->dialogue_id = json_string_value(id);
  } else if (json_is_integer(id)) {
    snprintf(r->id_buf, sizeof r->id_buf, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    r->dialogue_id = r->id_buf;
  } else {
    r->dialogue_id = NULL;
  }
  if (json_is_object(dlg) && r->dialogue_id && json_is_array(turns)) {
    r->turns = turns;
    return 1;
  }
  rec->line = ++r->n;
  *field = "record";
  const char *why = !json_is_object(dlg)     ? "expected an object"
                    : !r->dialogue_id        ? "no dialogue_id (a string)"
                                             : "no list of turns";
  if (r->dialogue_id)
    finch_err_set(err, FINCH_EFORMAT, "%s: dialogue %s: %s", r->base.name, r->dialogue_id, why);
  else
    finch_err_set(err, FINCH_EFORMAT, "%s: dialogue #%zu: %s", r->base.name, d + 1, why);
  return -1;
}

#define SGD_BAD(fld, ...)                                                                          \
  do {                                                                                             \
    char what_[256];                                                                               \
    snprintf(what_, sizeof what_, __VA_ARGS__);                                                    \
    *field = (fld);                                                                                \
    finch_err_set(err, FINCH_EFORMAT, "%s: dialogue %s turn %d: %s", base->name, r->dialogue_id,    \
                  rec->turn, what_);                                                               \
    return -1;                                                                                     \
  } while (0)

static int sgd_next(finch_format_reader *base, finch_record *rec, const char **field, finch_err *err) {
  sgd_reader *r = (sgd_reader *)base;
  while (!r->turns || r->t >= json_array_size(r->turns)) {
    r->turns = NULL;
    int rc = sgd_start_dialogue(r, rec, field, err);
    if (rc <= 0) return rc;
  }
  json_t *turn = json_array_get(r->turns, r->t);
  rec->turn = (int)r->t++;
  rec->line = ++r->n;
  rec->dialogue_id = r->dialogue_id;
  if (!json_is_object(turn)) SGD_BAD("record", "expected an object");

  const char *speaker = json_string_value(json_object_get(turn, "speaker"));
  if (!speaker) SGD_BAD("speaker", "no speaker (a string)");
  int user = strcasecmp(speaker, "user") == 0;
  if (!user && strcasecmp(speaker, "system") != 0) SGD_BAD("speaker", "unknown speaker '%.64s'", speaker);

  json_t *utt = json_object_get(turn, "utterance");
  if (!utt) SGD_BAD("text", "no utterance");
  if (!json_is_string(utt)) SGD_BAD("text", "utterance is not a string");

  json_t *frames = json_object_get(turn, "frames");
  if (frames && !json_is_null(frames) && !json_is_array(frames)) SGD_BAD("frames", "frames is not a list");
  size_t nframes = json_array_size(frames);
  size_t best = 0;
  int best_score = -1;
  for (size_t k = 0; k < nframes; k++) {
    json_t *fr = json_array_get(frames, k);
    if (!json_is_object(fr)) SGD_BAD("frames", "frame %zu is not an object", k);
    if (!json_is_string(json_object_get(fr, "service"))) SGD_BAD("frames", "frame %zu has no service", k);
    json_t *actions = json_object_get(fr, "actions");
    if (actions && !json_is_array(actions)) SGD_BAD("frames", "frame %zu: actions is not a list", k);
    int score = json_array_size(actions) > 0;
    if (user) {
      json_t *state = json_object_get(fr, "state");
      if (!json_is_string(json_object_get(state, "active_intent")))
        SGD_BAD("label", "frame %zu has no state.active_intent", k);
      json_t *prev = sgd_state_of(r, json_string_value(json_object_get(fr, "service")));
      if (!prev || !json_equal(prev, state)) score += 2;
      if (sgd_has_act(actions, "INFORM_INTENT")) score += 4;
    }
    if (score > best_score) {
      best = k;
      best_score = score;
    }
  }

  rec->speaker = user ? "user" : "system";
  rec->text = json_string_value(utt);
  if (!nframes) return 1;
  json_t *fr = json_array_get(frames, best);
  const char *service = json_string_value(json_object_get(fr, "service"));
  rec->meta_json = finch_format__meta(r->meta_cache, "service", service);
  if (!rec->meta_json) SGD_BAD("record", "out of memory");
  if (user) {
    rec->label = json_string_value(json_object_get(json_object_get(fr, "state"), "active_intent"));
    for (size_t k = 0; k < nframes; k++) {
      json_t *f = json_array_get(frames, k);
      if (sgd_set_state(r, json_string_value(json_object_get(f, "service")), json_object_get(f, "state")))
        SGD_BAD("record", "out of memory");
    }
  }
  return 1;
}

static void sgd_free(finch_format_reader *base) {
  sgd_reader *r = (sgd_reader *)base;
  json_decref(r->root);
  json_decref(r->meta_cache);
  free(r->states);
  free(r);
}

finch_status finch_format__sgd_open(finch_format_reader **out, FILE *fp, const char *name,
                                    const finch_format_opts *opts, finch_err *err) {
  (void)opts;
  *out = NULL;
  sgd_reader *r = calloc(1, sizeof *r);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  r->base.next = sgd_next;
  r->base.free = sgd_free;
  finch_status st = FINCH_OK;
  json_error_t je;
  json_t *doc = json_loadf(fp, 0, &je);
  r->meta_cache = json_object();
  if (!doc) {
    st = finch_format__json_error(err, name, &je);
  } else if (!r->meta_cache) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  } else if (json_is_array(doc)) {
    r->root = json_incref(doc);
  } else if (json_is_object(doc) && json_is_array(json_object_get(doc, "turns"))) {
    r->root = json_array();
    if (!r->root || json_array_append(r->root, doc)) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  } else {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: expected a list of SGD dialogues or one dialogue object", name);
  }
  json_decref(doc);
  if (st) {
    sgd_free(&r->base);
    return st;
  }
  *out = &r->base;
  return FINCH_OK;
}
