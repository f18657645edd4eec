/* External teachers: soft labels made outside finch, from a JSONL file or
 * from an OpenAI-compatible completions endpoint (a large LLM a team already
 * runs), stored in `teacher_outputs` for distillation.
 *
 * An external teacher is a row of `models`: kind 'teacher', arch 'external',
 * stage 'finance', the dataset, path = the JSONL file's absolute path or the
 * request URL (without any user:password@), sha256 = of the JSONL file's
 * bytes, or of "<request URL>\n<model>\n<prompt version>" for an endpoint; config = {"labels": [...], "source": "jsonl"|"endpoint",
 * "model": ..., "name": ...}. Its labels are the dataset's label list: the
 * sorted (strcmp) distinct labels of its labelled training rows, the order
 * distill uses. A later run with the same file (or endpoint and model), the
 * same dataset and the same label list reuses the registered teacher.
 * Outputs are stored for the dataset's labelled training rows
 * (split 'train', label not null), `probs` over config.labels, at the given
 * temperature (default 1).
 *
 * JSONL file, UTF-8, one JSON object per line (blank lines skipped):
 *   header (optional, first line only):
 *     {"labels": ["card_arrival", "exchange_rate", ...]}
 *     the order of the array forms of "probs"/"logits" below.
 *   data lines, one of:
 *     {"utterance_id": 123, "probs": {"card_arrival": 0.9, "exchange_rate": 0.1}}
 *     {"text": "where is my card", "logits": {"card_arrival": 4.2, ...}}
 *     {"text": "...", "probs": [0.9, 0.1, ...]}      (array: needs the header)
 *   "utterance_id" (alias "id"): an utterance id, integer or decimal string;
 *     else "text": matched like ingest stores text (NFKC, personal data
 *     redacted with the built-in rules, case-folded) against text_norm, so the
 *     stored text, the raw text and a case variant all match; every training
 *     row with that text gets the line's labels.
 *   "probs": label -> probability. Labels left out get 0. Every value must lie
 *     in [0, 1]; the sum must be at most 1 + 1e-3, and at least 1 - 1e-3 when
 *     every label is given; the line is then renormalised to sum to 1 (a
 *     subset, such as an LLM's top-k, keeps its relative mass).
 *   "logits": label -> real; labels left out get probability 0; the stored
 *     probabilities are softmax(logits / temperature).
 * Errors name file:line and field (invalid JSON, a missing id/text or
 * probs/logits, a value that is not a number, a negative probability, a bad
 * sum) and stop the import; labels outside the dataset's list are collected
 * over the whole file and reported together. Nothing is stored unless the
 * whole file is valid (one transaction). Lines whose id or text matches no
 * training row are counted, not errors; a later line for the same row
 * replaces an earlier one (counted as a duplicate).
 *
 * Endpoint (POST {url}/v1/completions; a url already ending in /v1 or
 * /v1/completions is used as it is): each training row is scored by
 * candidate completion, like lm-evaluation-harness's loglikelihood requests.
 * The prompt lists the label set, then the row's stored (redacted) text:
 *
 *   Classify the intent of a bank customer's message. Intents:\n
 *   <label 1>\n ... <label C>\n
 *   Message: <text>\n
 *   Intent:
 *
 * and each label is appended as " <label>". A request carries `batch` rows,
 * C prompts each (prompt is an array), with
 *   {"model": M, "prompt": [...], "max_tokens": 1, "temperature": 0,
 *    "logprobs": 1, "echo": true}
 * The answer's choices[i] (by "index", else by position) echo prompt i with
 * logprobs.tokens and logprobs.token_logprobs, the one generated token last.
 * A label's score is the sum of the logprobs of its prompt's tokens after the
 * leading tokens that the row's C prompts share, the generated token left
 * out: the shared tokens have the same logprob in every prompt, so the scores
 * differ from the labels' log-likelihoods by one constant per row. No
 * character offsets are used (servers disagree on them).
 * probs = softmax(score / temperature) over the whole label set.
 * Retried with exponential backoff and jitter on 5xx, 429 (Retry-After
 * honoured, at most 60 s) and connection errors; another status fails at once
 * with the status and the start of the answer. The API key is sent as
 * "Authorization: Bearer" and never logged. Rows already stored for the
 * teacher at the temperature are skipped, and each request's rows commit on
 * their own, so an interrupted run resumes where it stopped.
 * Limits: the server must support echo with logprobs on the completions API
 * (vLLM does; OpenAI only for its legacy base models; chat-only APIs and
 * servers that do not echo prompt logprobs cannot be used). Each row costs C
 * scored sequences (77 for BANKING77); they share one prefix, which servers
 * with prefix caching (vLLM) compute once. A multi-token label is scored by
 * its joint probability; since the prompt lists the labels, the tokens after
 * a label's first are nearly certain, so the length bias is small but not
 * nil. A tokenizer that merges the prompt's last ":" with a label's first
 * characters would bias that label slightly (BPE and SentencePiece
 * vocabularies start words with the space). Only redacted text leaves the
 * machine. */
#ifndef FINCH_DISTILL_EXTERNAL_H
#define FINCH_DISTILL_EXTERNAL_H

#include <stddef.h>

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *dataset;
  const char *path;  /* the JSONL file */
  const char *name;  /* a name kept in config.name; may be NULL */
  float temperature; /* of the stored outputs (and of softmax over logits); <= 0: 1 */
} finch_external_import_opts;

typedef struct {
  const char *dataset;
  const char *url;      /* http(s)://host[:port][/prefix] */
  const char *model;    /* the "model" field of each request */
  const char *api_key;  /* Bearer token; may be NULL. Never logged or stored. */
  const char *name;     /* may be NULL */
  float temperature;    /* softmax temperature of the stored outputs; <= 0: 1 */
  int batch;            /* training rows per request; <= 0: 8 */
  int max_retries;      /* failed attempts in a row before giving up; < 0: 5 */
  long backoff_ms;      /* first retry delay, doubled each time; <= 0: 500 */
  long timeout_s;       /* per request; <= 0: 300 */
} finch_external_query_opts;

typedef struct {
  long long model_id;
  int reused;             /* the teacher was registered by an earlier run */
  long long n_labels;
  long long n_train;      /* labelled training rows of the dataset */
  long long n_labelled;   /* training rows with a stored output (at the temperature) after the run */
  long long n_unlabelled; /* n_train - n_labelled */
  /* JSONL */
  long long n_lines;        /* data lines */
  long long n_unmatched;    /* lines matching no training row */
  long long n_duplicate;    /* lines for a row an earlier line gave */
  long long n_renormalised; /* lines whose probabilities did not sum to 1 */
  /* endpoint */
  long long n_cached;   /* rows skipped: already stored */
  long long n_scored;   /* rows scored by this run */
  long long n_requests; /* HTTP requests made, retries included */
} finch_external_result;

finch_status finch_external_import(finch_db *db, const finch_external_import_opts *opts, finch_external_result *res,
                                   finch_err *err);

finch_status finch_external_query(finch_db *db, const finch_external_query_opts *opts, finch_external_result *res,
                                  finch_err *err);

/* The soft labels of external (or any stored) teacher teacher_model_id for
 * utterance_ids[0..n) (decimal ids), over labels[0..C) in the caller's order,
 * at temperature tau: for each row the stored output closest to tau (at T0)
 * is re-tempered, p^(T0 / tau) renormalised (exact for probabilities from
 * logits: softmax(z/T0)^(T0/tau) is softmax(z/tau)). Teacher labels that are
 * not in labels are dropped; labels the teacher lacks get 0.
 * probs_out (n,C); have (n): 1 when the row had an output with mass on
 * labels, else 0 and its probs_out row is all 0. */
finch_status finch_external_soft_labels(finch_db *db, long long teacher_model_id, const char *const *utterance_ids,
                                        size_t n, const char *const *labels, size_t C, float tau, float *probs_out,
                                        unsigned char *have, finch_err *err);

#endif
