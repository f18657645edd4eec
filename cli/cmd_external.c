/* finch soft-labels: an external teacher's soft labels, from a JSONL file or
 * an OpenAI-compatible completions endpoint (distill/external.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "distill/external.h"

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

/* The query's options hold what import shares with it (dataset, name,
 * temperature). */
typedef struct {
  finch_external_query_opts q;
  const char *jsonl, *api_key_env;
  int json;
} soft_args;

#define DEFAULT_KEY_ENV "OPENAI_API_KEY"
#define F(m) FINCH_OPT_FIELD(soft_args, q.m)
static const finch_opt soft_opts[] = {
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME",
     .help = "the dataset whose labelled training rows get soft labels"},
    {"jsonl", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(soft_args, jsonl), .arg = "FILE",
     .help = "import: the file of per-example probabilities or logits"},
    {"url", 0, FINCH_OPT_STRING, F(url), .arg = "URL", .help = "query: the server's base URL (POST URL/v1/completions)"},
    {"model", 0, FINCH_OPT_STRING, F(model), .arg = "NAME", .help = "query: the model the server should use"},
    {"api-key-env", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(soft_args, api_key_env), .arg = "VAR",
     .help = "query: environment variable holding the API key (default " DEFAULT_KEY_ENV "; none sent when unset)"},
    {"batch", 0, FINCH_OPT_INT, F(batch), .min = 1, .max = 4096, .arg = "N",
     .help = "query: training rows per request, each one prompt per label (default 8)"},
    {"retries", 0, FINCH_OPT_INT, F(max_retries), .min = 0, .max = 100, .flags = FINCH_OPT_HIDE_DEFAULT, .arg = "N",
     .help = "query: failed attempts in a row before giving up (default 5)"},
    {"timeout", 0, FINCH_OPT_INT, F(timeout_s), .min = 1, .max = 1e308, .arg = "S",
     .help = "query: seconds per request (default 300)"},
    {"temperature", 0, FINCH_OPT_FLOAT, F(temperature), .min = 0, .max = 1e308, .flags = FINCH_OPT_MIN_OPEN,
     .arg = "T", .help = "temperature of the stored probabilities (softmax of logits or scores; default 1)"},
    {"name", 0, FINCH_OPT_STRING, F(name), .arg = "NAME", .help = "a name kept with the teacher's registration"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(soft_args, json), .help = "print the summary as JSON"},
};

static void soft_init(void *p) { ((soft_args *)p)->q.max_retries = -1; /* the library's default */ }

static int soft_labels_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_soft_labels = {
    "soft-labels", "an external teacher's soft labels: import JSONL or query an endpoint",
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
    soft_opts, CLI_N(soft_opts), sizeof(soft_args), soft_init, 1, soft_labels_run, 0};

static int soft_labels_run(void *opts, const char **pos, size_t npos) {
  soft_args a = *(soft_args *)opts;
  if (npos != 1 || !a.q.dataset) return cli_usage_error(&cli_soft_labels, &a);
  const char *mode = pos[0];
  int is_import = strcmp(mode, "import") == 0, is_query = strcmp(mode, "query") == 0;
  if (!is_import && !is_query) {
    fprintf(stderr, "finch soft-labels: unknown mode '%s' (import or query)\n", mode);
    return 2;
  }
  if ((is_import && !a.jsonl) || (is_query && (!a.q.url || !a.q.model))) return cli_usage_error(&cli_soft_labels, &a);
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_external_result r;
  finch_err err;
  finch_status st;
  if (is_import) {
    finch_external_import_opts o = {.dataset = a.q.dataset, .path = a.jsonl, .name = a.q.name,
                                    .temperature = a.q.temperature};
    st = finch_external_import(db, &o, &r, &err);
  } else {
    const char *var = a.api_key_env ? a.api_key_env : DEFAULT_KEY_ENV;
    finch_external_query_opts o = a.q;
    o.api_key = getenv(var);
    if (a.api_key_env && !o.api_key) {
      finch_db_close(db);
      fprintf(stderr, "finch soft-labels: environment variable %s is not set\n", var);
      return 2;
    }
    st = finch_external_query(db, &o, &r, &err);
  }
  finch_db_close(db);
  if (st) return cli_fail(&err);
  print_result(mode, &r, a.json);
  return 0;
}
