/* finch rules: check a rule file, and measure the rule engine like a model. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/text.h"
#include "evaluate/evaluate.h"
#include "evaluate/metrics.h"
#include "serve/rules.h"

static int label_index(char **names, size_t n, const char *s) {
  char **hit = bsearch(&s, names, n, sizeof *names, finch_cmp_str);
  return hit ? (int)(hit - names) : -1;
}

static int rules_eval(const finch_rules *rules, const finch_eval_rows *p, int json) {
  /* Labels: the gold ones and the rules' answers, sorted; one more index for "no rule". */
  size_t nl = 0;
  char **names = malloc((2 * p->n + 1) * sizeof *names); /* each row: its gold label and the rules' answer */
  int *gold = malloc((p->n + 1) * sizeof *gold), *pred = malloc((p->n + 1) * sizeof *pred);
  const char **got = malloc((p->n + 1) * sizeof *got);
  if (!names || !gold || !pred || !got) return 1;
  long long matched = 0;
  double t0 = (double)clock();
  for (size_t i = 0; i < p->n; i++) {
    got[i] = finch_rules_match(rules, p->texts[i], strlen(p->texts[i]), NULL, NULL);
    matched += got[i] != NULL;
    names[nl++] = p->labels[i];
    if (got[i]) names[nl++] = (char *)got[i];
  }
  double us = p->n ? 1e6 * ((double)clock() - t0) / CLOCKS_PER_SEC / (double)p->n : 0;
  qsort(names, nl, sizeof *names, finch_cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < nl; i++)
    if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
  nl = u;
  for (size_t i = 0; i < p->n; i++) {
    gold[i] = label_index(names, nl, p->labels[i]);
    pred[i] = got[i] ? label_index(names, nl, got[i]) : (int)nl; /* "no rule fired" */
  }
  finch_metrics m;
  finch_metrics_compute(gold, pred, NULL, p->n, nl + 1, &m);
  double coverage = p->n ? (double)matched / (double)p->n : 0;
  /* Macro-F1 counts intents with gold rows only, so "no rule" does not dilute it. */
  if (json) {
    json_t *j = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f}", "n", (json_int_t)p->n, "rules",
                          (json_int_t)finch_rules_count(rules), "accuracy", m.accuracy, "macro_f1", m.macro_f1,
                          "coverage", coverage, "cpu_us_per_query", us);
    cli_print_json(j);
  } else {
    printf("%zu rows, %zu rules: accuracy %.4f, macro-F1 %.4f, coverage %.4f (a rule fired), %.1f us per query\n",
           p->n, finch_rules_count(rules), m.accuracy, m.macro_f1, coverage, us);
  }
  finch_metrics_free(&m);
  free(names), free(gold), free(pred), free(got);
  return 0;
}

typedef struct {
  finch_eval_opts e;
  const char *rules;
  int json;
} rules_args;

#define F(m) FINCH_OPT_FIELD(rules_args, m)
static const finch_opt rules_opts[] = {
    {"rules", 'r', FINCH_OPT_STRING, F(rules), .arg = "FILE", .help = "rule file (eval)"},
    {"format", 'f', FINCH_OPT_STRING, F(e.format), .arg = "FMT", .help = "eval: format of --input, banking77"},
    {"input", 'i', FINCH_OPT_STRING, F(e.input), .arg = "FILE", .help = "eval: labelled file"},
    {"dataset", 'd', FINCH_OPT_STRING, F(e.dataset), .arg = "NAME", .help = "eval: rows of this dataset instead of a file"},
    {"split", 0, FINCH_OPT_STRING, F(e.split), .arg = "SPLIT", .help = "eval: with --dataset, the split (default dev)"},
    {"json", 0, FINCH_OPT_BOOL, F(json), .help = "eval: print one JSON object"},
};
#undef F

static int rules_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_rules = {
    "rules", "check and measure the legacy PCRE2 rule engine",
    "check FILE | eval --rules FILE (--format banking77 --input PATH | --dataset NAME) [--json]",
    "The legacy rule engine (format in serve/rules.h; a BANKING77 pack in serve/rules/).\n"
    "  check  parse and compile every rule (errors name the line), then report rules that can never fire\n"
    "  eval   measure the rules like a model: accuracy, macro-F1, coverage",
    NULL, rules_opts, CLI_N(rules_opts), sizeof(rules_args), NULL, 2, rules_run, 0};

static int rules_run(void *opts, const char **pos, size_t npos) {
  rules_args a = *(rules_args *)opts;
  finch_err err;
  finch_rules *rules = NULL;
  if (npos == 2 && strcmp(pos[0], "check") == 0) {
    if (finch_rules_load(&rules, pos[1], &err)) return cli_fail(&err);
    size_t problems = finch_rules_lint(rules, stdout);
    printf("%s: %zu rules compiled, %zu problem(s)\n", pos[1], finch_rules_count(rules), problems);
    finch_rules_free(rules);
    return problems ? 1 : 0;
  }
  finch_eval_opts eo = a.e;
  if (npos != 1 || strcmp(pos[0], "eval") != 0 || !a.rules || !eo.input == !eo.dataset)
    return cli_usage_error(&cli_rules, &a);
  if (finch_rules_load(&rules, a.rules, &err)) return cli_fail(&err);
  finch_eval_rows p = {0};
  finch_db *db = NULL;
  if (eo.dataset && !(db = cli_db_open())) { /* cli_db_open printed why */
    finch_rules_free(rules);
    return 1;
  }
  finch_status st = finch_eval_rows_load(db, &eo, &p, &err);
  finch_db_close(db);
  int code = st ? cli_fail(&err) : rules_eval(rules, &p, a.json);
  finch_eval_rows_free(&p);
  finch_rules_free(rules);
  return code;
}
