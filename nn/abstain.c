/* Out-of-scope abstention (nn/abstain.h). */
#include "nn/abstain.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model_arch.h"

const char *nn_abstain_method_name(unsigned methods) {
  switch (methods & 3u) {
    case NN_ABSTAIN_THRESHOLD: return "threshold";
    case NN_ABSTAIN_CLASS: return "class";
    case NN_ABSTAIN_THRESHOLD | NN_ABSTAIN_CLASS: return "both";
    default: return "none";
  }
}

finch_status nn_abstain_read(const nn_model *m, nn_abstain *out, finch_err *err) {
  *out = (nn_abstain){.methods = 0, .threshold = 0, .temperature = 1, .oos_index = -1};
  json_t *meta = json_loads(nn_model_meta(m), 0, NULL);
  json_t *a = json_object_get(meta, "abstain");
  finch_status st = FINCH_OK;
  if (!a || json_is_null(a)) goto out;
  if (!json_is_object(a)) {
    st = finch_err_set(err, FINCH_EFORMAT, "model metadata: \"abstain\" must be an object");
    goto out;
  }
  const char *method = json_string_value(json_object_get(a, "method"));
  unsigned mb = !method                      ? 0
                : !strcmp(method, "threshold") ? NN_ABSTAIN_THRESHOLD
                : !strcmp(method, "class")     ? NN_ABSTAIN_CLASS
                : !strcmp(method, "both")      ? NN_ABSTAIN_THRESHOLD | NN_ABSTAIN_CLASS
                                               : 0;
  if (!mb) {
    st = finch_err_set(err, FINCH_EFORMAT, "model metadata: abstain.method must be threshold, class or both, not %s",
                       method ? method : "missing");
    goto out;
  }
  json_t *t = json_object_get(a, "threshold"), *T = json_object_get(a, "temperature");
  double tv = json_is_number(t) ? json_number_value(t) : -1, Tv = T ? (json_is_number(T) ? json_number_value(T) : -1) : 1;
  if ((mb & NN_ABSTAIN_THRESHOLD) && !(tv >= 0 && tv <= 1)) {
    st = finch_err_set(err, FINCH_EFORMAT, "model metadata: abstain.threshold must be a number in [0, 1]");
    goto out;
  }
  if (!(Tv > 0 && Tv < 1e4)) {
    st = finch_err_set(err, FINCH_EFORMAT, "model metadata: abstain.temperature must be a positive number");
    goto out;
  }
  int oi = -1;
  json_t *ol = json_object_get(a, "oos_label");
  if (ol && !json_is_null(ol)) {
    if (!json_is_string(ol) || (oi = nn_model_label_index(m, json_string_value(ol))) < 0) {
      st = finch_err_set(err, FINCH_EFORMAT, "model metadata: abstain.oos_label %s is not one of the model's labels",
                         json_is_string(ol) ? json_string_value(ol) : "(not a string)");
      goto out;
    }
  }
  if ((mb & NN_ABSTAIN_CLASS) && oi < 0) {
    st = finch_err_set(err, FINCH_EFORMAT, "model metadata: abstain.method %s needs abstain.oos_label", method);
    goto out;
  }
  *out = (nn_abstain){.methods = mb, .threshold = (mb & NN_ABSTAIN_THRESHOLD) ? (float)tv : 0,
                      .temperature = (float)Tv, .oos_index = oi};
out:
  json_decref(meta);
  return st;
}

finch_status nn_abstain_write(nn_model *m, const nn_abstain *a, const char *chosen_on, const char *target,
                              finch_err *err) {
  json_t *meta = json_loads(nn_model_meta(m), 0, NULL);
  if (!json_is_object(meta)) {
    json_decref(meta);
    meta = json_object();
  }
  if (!a->methods) {
    json_object_del(meta, "abstain");
  } else {
    json_t *o = json_pack("{s:s, s:f}", "method", nn_abstain_method_name(a->methods), "temperature",
                          (double)a->temperature);
    if (a->methods & NN_ABSTAIN_THRESHOLD) json_object_set_new(o, "threshold", json_real(a->threshold));
    json_object_set_new(o, "oos_label", a->oos_index >= 0 ? json_string(nn_model_label(m, (size_t)a->oos_index))
                                                          : json_null());
    if (chosen_on) json_object_set_new(o, "chosen_on", json_string(chosen_on));
    if (target) json_object_set_new(o, "target", json_string(target));
    json_object_set_new(meta, "abstain", o);
  }
  char *s = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(meta);
  if (!s) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_status st = nn_model_set_meta(m, s, err);
  free(s);
  return st;
}

int nn_abstain_decide(const nn_abstain *a, float *probs, size_t C, float *score) {
  if (C == 0) return -1;
  if (a && a->methods) nn_retemper(probs, C, a->temperature);
  size_t k = 0;
  for (size_t c = 1; c < C; c++)
    if (probs[c] > probs[k]) k = c;
  const int oi = a && a->methods ? a->oos_index : -1;
  float best_in = -1;
  for (size_t c = 0; c < C; c++)
    if ((int)c != oi && probs[c] > best_in) best_in = probs[c];
  if (score) *score = best_in < 0 ? 0 : best_in;
  if (!a || !a->methods) return (int)k;
  if (oi >= 0 && (int)k == oi) return -1; /* the out-of-scope class is never an intent */
  if ((a->methods & NN_ABSTAIN_THRESHOLD) && !(best_in >= a->threshold)) return -1;
  return (int)k;
}
