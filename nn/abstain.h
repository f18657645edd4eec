/* Out of scope: a model's abstention policy, and the one decision that
 * finch eval, POST /v1/intent and conversation turns all apply.
 *
 * The policy lives in the model file's metadata (META), as the object
 *   "abstain": {"method": "threshold" | "class" | "both",
 *               "threshold": t,          (max in-scope probability below t: out of scope)
 *               "temperature": T,        (calibration; probabilities are taken at T)
 *               "oos_label": "oos",      (the explicit out-of-scope class, with "class"/"both")
 *               "chosen_on": "...", "target": "..."}   (provenance, free text)
 * A model without it answers every text with its arg-max label, as always.
 *
 * The decision, from the model's probabilities p at temperature 1:
 *   q       = softmax(log p / T)  (p^(1/T) renormalised; exact for softmax models)
 *   k       = arg max q
 *   score   = max of q over the in-scope labels (every label but oos_label)
 *   out of scope when k is oos_label (whatever the method: that class is
 *   never an intent), or when the method uses the threshold and score < t. */
#ifndef FINCH_NN_ABSTAIN_H
#define FINCH_NN_ABSTAIN_H

#include <stddef.h>

#include "core/status.h"
#include "nn/model.h"

enum { NN_ABSTAIN_THRESHOLD = 1, NN_ABSTAIN_CLASS = 2 };

typedef struct {
  unsigned methods;   /* NN_ABSTAIN_* bits; 0 = no policy */
  float threshold;    /* in [0, 1] */
  float temperature;  /* > 0; 1 = the model's own probabilities */
  int oos_index;      /* the out-of-scope class's label index, or -1 */
} nn_abstain;

/* The policy of m (methods = 0 when its metadata has none). FINCH_EFORMAT,
 * naming the field, for a malformed one or an oos_label the model lacks. */
finch_status nn_abstain_read(const nn_model *m, nn_abstain *out, finch_err *err);

/* m's metadata with the policy a set (replacing any), provenance strings
 * chosen_on and target (may be NULL). */
finch_status nn_abstain_write(nn_model *m, const nn_abstain *a, const char *chosen_on, const char *target,
                              finch_err *err);

/* The decision for probs (C), the model's probabilities at temperature 1:
 * re-tempered in place to a->temperature, then the label index, or -1 for
 * out of scope. score (may be NULL) receives the in-scope score. With no
 * policy: the arg-max, probs unchanged. */
int nn_abstain_decide(const nn_abstain *a, float *probs, size_t C, float *score);

/* The method names: "threshold", "class", "both", or "none". */
const char *nn_abstain_method_name(unsigned methods);

#endif
