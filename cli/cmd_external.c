/* finch soft-labels: an external teacher's soft labels, from a JSONL file or
 * an OpenAI-compatible completions endpoint (distill/external.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "distill/external.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void print_result(const char *mode, const finch_external_result *r, int as_json) {
  if (as_json) {
    json_t *j = json_pack("{s:s, s:I, s:b, s:I, s:I, s:I, s:I}", "mode", mode, "model_id", (json_int_t)r->model_id,
                          "reused", r->reused, "labels", (json_int_t)r->n_labels, "train_rows",
                          (json_int_t)r->n_train, "labelled", (json_int_t)r->n_labelled, "unlabelled",
                          (json_int_t)r->n_unlabelled);
    if (strcmp(mode, "import") == 0) {
      json_object_set_new(j, "lines", json_integer((json_int_t)r->n_lines));
      json_object_set_new(j, "unmatched_lines", json_integer((json_int_t)r->n_unmatched));
      json_object_set_new(j, "duplicate_lines", json_integer((json_int_t)r->n_duplicate));
      json_object_set_new(j, "renormalised_lines", json_integer((json_int_t)r->n_renormalised));
    } else {
      json_object_set_new(j, "cached", json_integer((json_int_t)r->n_cached));
      json_object_set_new(j, "scored", json_integer((json_int_t)r->n_scored));
      json_object_set_new(j, "requests", json_integer((json_int_t)r->n_requests));
    }
    cli_print_json(j);
    return;
  }
  printf("external teacher %lld (%s): %lld of %lld training rows have soft labels, %lld have none\n", r->model_id,
         r->reused ? "registered earlier" : "registered now", r->n_labelled, r->n_train, r->n_unlabelled);
  if (strcmp(mode, "import") == 0)
    printf("%lld lines read: %lld matched no training row, %lld repeated a row, %lld renormalised\n", r->n_lines,
           r->n_unmatched, r->n_duplicate, r->n_renormalised);
  else
    printf("%lld rows scored in %lld requests, %lld already stored\n", r->n_scored, r->n_requests, r->n_cached);
}

int finch_cmd_soft_labels(int argc, char **argv) {
  cli_opt opts[] = {
      {"dataset", 'd', "NAME", "the dataset whose labelled training rows get soft labels", NULL},
      {"jsonl", 0, "FILE", "import: the file of per-example probabilities or logits", NULL},
      {"url", 0, "URL", "query: the server's base URL (POST URL/v1/completions)", NULL},
      {"model", 0, "NAME", "query: the model the server should use", NULL},
      {"api-key-env", 0, "VAR", "query: environment variable holding the API key (default OPENAI_API_KEY; "
                                "none sent when unset)", NULL},
      {"batch", 0, "N", "query: training rows per request, each one prompt per label (default 8)", NULL},
      {"retries", 0, "N", "query: failed attempts in a row before giving up (default 5)", NULL},
      {"timeout", 0, "S", "query: seconds per request (default 300)", NULL},
      {"temperature", 0, "T", "temperature of the stored probabilities (softmax of logits or scores; default 1)", NULL},
      {"name", 0, "NAME", "a name kept with the teacher's registration", NULL},
      {"json", 0, NULL, "print the summary as JSON", NULL},
  };
  cli_cmd cmd = {"soft-labels",
                 "import --dataset D --jsonl FILE [options]   |   query --dataset D --url URL --model NAME [options]",
                 "An external teacher's soft labels for a dataset's labelled training rows, stored in\n"
                 "teacher_outputs and registered in models (arch 'external') for distill to use.\n"
                 "  import  a JSONL file, a line per example: {\"utterance_id\": 12, \"probs\": {\"card_arrival\": 0.9,\n"
                 "          ...}} or {\"text\": \"...\", \"logits\": {...}}; labels left out get 0. Any error (named\n"
                 "          by file:line and field) stores nothing.\n"
                 "  query   an OpenAI-compatible completions endpoint that echoes prompt logprobs (vLLM): each\n"
                 "          label is scored as the completion of a prompt listing the labels and the row's\n"
                 "          (redacted) text; probabilities are the softmax of the label log-likelihoods.\n"
                 "          Batched, retried with backoff; rows already stored are skipped.",
                 "The format and the protocol are documented in distill/external.h. The API key is never printed.",
                 opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = cli_parse(&cmd, argc, argv, pos, 1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (npos != 1 || !cli_get(&cmd, "dataset")) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  const char *mode = pos[0];
  double tau = 0;
  long long batch = 0, retries = -1, timeout = 0;
  if (cli_get_double(&cmd, "temperature", &tau) || cli_get_long(&cmd, "batch", &batch) ||
      cli_get_long(&cmd, "retries", &retries) || cli_get_long(&cmd, "timeout", &timeout))
    return 2;
  if (cli_get(&cmd, "temperature") && !(tau > 0)) {
    fprintf(stderr, "finch soft-labels: --temperature must be above 0\n");
    return 2;
  }
  if ((cli_get(&cmd, "batch") && (batch < 1 || batch > 4096)) || (cli_get(&cmd, "timeout") && timeout < 1) ||
      (cli_get(&cmd, "retries") && (retries < 0 || retries > 100))) {
    fprintf(stderr, "finch soft-labels: --batch must be 1..4096, --retries 0..100, --timeout positive\n");
    return 2;
  }
  int is_import = strcmp(mode, "import") == 0, is_query = strcmp(mode, "query") == 0;
  if (!is_import && !is_query) {
    fprintf(stderr, "finch soft-labels: unknown mode '%s' (import or query)\n", mode);
    return 2;
  }
  if ((is_import && !cli_get(&cmd, "jsonl")) || (is_query && (!cli_get(&cmd, "url") || !cli_get(&cmd, "model")))) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_external_result r;
  finch_err err;
  finch_status st;
  if (is_import) {
    finch_external_import_opts o = {.dataset = cli_get(&cmd, "dataset"), .path = cli_get(&cmd, "jsonl"),
                                    .name = cli_get(&cmd, "name"), .temperature = (float)tau};
    st = finch_external_import(db, &o, &r, &err);
  } else {
    const char *var = cli_get(&cmd, "api-key-env") ? cli_get(&cmd, "api-key-env") : "OPENAI_API_KEY";
    finch_external_query_opts o = {.dataset = cli_get(&cmd, "dataset"), .url = cli_get(&cmd, "url"),
                                   .model = cli_get(&cmd, "model"), .api_key = getenv(var),
                                   .name = cli_get(&cmd, "name"), .temperature = (float)tau, .batch = (int)batch,
                                   .max_retries = (int)retries, .backoff_ms = 0, .timeout_s = (long)timeout};
    if (cli_get(&cmd, "api-key-env") && !o.api_key) {
      finch_db_close(db);
      fprintf(stderr, "finch soft-labels: environment variable %s is not set\n", var);
      return 2;
    }
    st = finch_external_query(db, &o, &r, &err);
  }
  finch_db_close(db);
  if (st) return cli_fail(&err);
  print_result(mode, &r, cli_get(&cmd, "json") != NULL);
  return 0;
}
