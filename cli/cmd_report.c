/* finch report: list the stored evaluation reports, show one (checking its
 * JSON file against the stored hash), and record a reviewer's decision. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "evaluate/report.h"
#include "evaluate/report_html.h"
#include "evaluate/store.h"

typedef struct {
  int json;
  const char *format;
  const char *reviewer, *decision, *comment;
} report_args;

#define F(m) FINCH_OPT_FIELD(report_args, m)
static const finch_opt report_opts[] = {
    {"json", 0, FINCH_OPT_BOOL, F(json), .help = "list, show: print JSON"},
    {"format", 0, FINCH_OPT_ENUM, F(format), .choices = "text|md|html", .def = "text", .arg = "FMT",
     .help = "show: text (a summary), md (the Markdown report) or html (the self-contained HTML page), each with "
             "the current sign-off"},
    {"reviewer", 0, FINCH_OPT_STRING, F(reviewer), .arg = "NAME", .help = "approve: who decides (required)"},
    {"decision", 0, FINCH_OPT_STRING, F(decision), .arg = "D", .help = "approve: approve or reject (required)"},
    {"comment", 0, FINCH_OPT_STRING, F(comment), .arg = "TEXT", .help = "approve: the reviewer's reasons"},
};
#undef F

static int report_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_report = {
    "report", "list, show and sign off evaluation reports",
    "list [--json] | show ID [--json | --format md|html] | approve ID --reviewer NAME --decision approve|reject "
    "[--comment TEXT]",
    "Evaluation reports are immutable: one per distinct evaluation (finch eval), named by the SHA-256 of\n"
    "their JSON body.\n"
    "  list     every report, newest first, with its last decision\n"
    "  show     one report: its stored body and approvals; the JSON file under $FINCH_HOME/reports is\n"
    "           hashed and compared with the stored hash (exit 1 when it differs or is missing)\n"
    "  approve  append a reviewer's decision, naming the report's body hash (decisions are never\n"
    "           changed or removed; a later one supersedes an earlier one)",
    NULL, report_opts, CLI_N(report_opts), sizeof(report_args), NULL, 2, report_run, 0};

/* A report id: a positive decimal integer, nothing else. */
static int parse_id(const char *s, long long *id) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v <= 0 || *s == '+' || *s == ' ') return -1;
  *id = v;
  return 0;
}

static int report_list(const report_args *a, finch_db *db) {
  finch_err err;
  json_t *list;
  if (finch_report_list(db, &list, &err)) return cli_fail(&err);
  if (a->json) {
    cli_print_json(list);
    return 0;
  }
  printf("%-6s %-20s %-12s %8s %9s %9s  %-9s %s\n", "id", "created (UTC)", "body sha256", "n", "accuracy",
         "macro-F1", "decision", "source");
  size_t i;
  json_t *r;
  json_array_foreach(list, i, r) {
    const char *d = json_string_value(json_object_get(r, "last_decision"));
    printf("%-6lld %-20s %-12.12s %8lld %9.4f %9.4f  %-9s %s\n",
           (long long)json_integer_value(json_object_get(r, "id")),
           json_string_value(json_object_get(r, "created_at")), json_string_value(json_object_get(r, "body_sha256")),
           (long long)json_integer_value(json_object_get(r, "n")), json_number_value(json_object_get(r, "accuracy")),
           json_number_value(json_object_get(r, "macro_f1")), d ? d : "-",
           json_string_value(json_object_get(r, "source")));
  }
  json_decref(list);
  return 0;
}

static int report_show(const report_args *a, finch_db *db, long long id) {
  finch_err err;
  finch_report r;
  if (finch_report_load(db, id, &r, &err)) return cli_fail(&err);
  if (a->json) {
    json_t *j = json_pack("{s:I, s:s, s:s, s:{s:s, s:s, s:s}, s:O, s:O, s:O}", "id", (json_int_t)r.id,
                          "body_sha256", r.body_sha256, "created_at", r.created_at, "file", "path", r.json_path,
                          "state", r.file_state, "sha256", r.file_sha256, "body", r.body, "measurements",
                          r.measurements, "approvals", r.approvals);
    if (j) cli_print_json(j);
  } else if (!strcmp(a->format, "md")) {
    finch_report_write_markdown(stdout, &r);
  } else if (!strcmp(a->format, "html")) {
    char *html = finch_report_html(r.body, r.body_sha256, r.measurements, r.approvals);
    if (html) fputs(html, stdout);
    free(html);
  } else {
    const json_t *res = json_object_get(r.body, "results"), *data = json_object_get(r.body, "data");
    printf("report %lld, made %s\n  body sha256 %s\n  json %s (%s)\n  markdown %s\n  html %s\n", r.id,
           r.created_at, r.body_sha256, r.json_path, r.file_state, r.md_path, r.html_path);
    size_t i;
    json_t *ap;
    const json_t *models = json_object_get(json_object_get(r.body, "comparison"), "models");
    if (models) {
      /* A comparison: one line per model, as compared on the same rows. */
      printf("  comparison of %zu models on %lld rows (rows sha256 %s):\n", json_array_size(models),
             (long long)json_integer_value(json_object_get(data, "n")),
             json_string_value(json_object_get(data, "rows_sha256")));
      json_array_foreach(models, i, ap)
        printf("    %s (%s): accuracy %.4f, macro-F1 %.4f\n", json_string_value(json_object_get(ap, "name")),
               json_string_value(json_object_get(ap, "kind")), json_number_value(json_object_get(ap, "accuracy")),
               json_number_value(json_object_get(ap, "macro_f1")));
    } else {
      printf("  model %s, %lld rows (rows sha256 %s): accuracy %.4f, macro-F1 %.4f\n",
             json_string_value(json_object_get(json_object_get(r.body, "model"), "sha256")),
             (long long)json_integer_value(json_object_get(data, "n")),
             json_string_value(json_object_get(data, "rows_sha256")),
             json_number_value(json_object_get(res, "accuracy")), json_number_value(json_object_get(res, "macro_f1")));
    }
    if (!json_array_size(r.approvals)) printf("  no decision recorded\n");
    json_array_foreach(r.approvals, i, ap)
      printf("  %s %s by %s on body %s: %s\n", json_string_value(json_object_get(ap, "created_at")),
             json_string_value(json_object_get(ap, "decision")), json_string_value(json_object_get(ap, "reviewer")),
             json_string_value(json_object_get(ap, "body_sha256")), json_string_value(json_object_get(ap, "comment")));
  }
  int code = 0;
  if (!strcmp(r.file_state, "differs")) {
    finch_err_set(&err, FINCH_ECHECKSUM, "report %lld: %s differs from the stored report: its SHA-256 is %s, the "
                  "report's %s", r.id, r.json_path, r.file_sha256, r.body_sha256);
    code = cli_fail(&err);
  } else if (!strcmp(r.file_state, "missing")) {
    finch_err_set(&err, FINCH_EIO, "report %lld: its JSON file %s is missing or unreadable", r.id,
                  r.json_path[0] ? r.json_path : "(no path recorded)");
    code = cli_fail(&err);
  }
  finch_report_free(&r);
  return code;
}

static int report_approve(const report_args *a, finch_db *db, long long id) {
  finch_err err;
  long long aid;
  if (finch_report_approve(db, id, a->reviewer, a->decision, a->comment, &aid, &err)) return cli_fail(&err);
  finch_report r;
  if (finch_report_load(db, id, &r, &err)) return cli_fail(&err);
  printf("decision %lld on report %lld: %s by %s, on body %s\n", aid, id, a->decision, a->reviewer, r.body_sha256);
  finch_report_free(&r);
  return 0;
}

static int report_run(void *opts, const char **pos, size_t npos) {
  report_args a = *(report_args *)opts;
  const char *sub = npos ? pos[0] : "";
  long long id = 0;
  int is_list = !strcmp(sub, "list"), is_show = !strcmp(sub, "show"), is_approve = !strcmp(sub, "approve");
  if ((is_list && npos != 1) || ((is_show || is_approve) && npos != 2) || !(is_list || is_show || is_approve))
    return cli_usage_error(&cli_report, &a);
  if (npos == 2 && parse_id(pos[1], &id)) {
    finch_err err;
    finch_err_set(&err, FINCH_EINVAL, "report ID '%s': expected a positive integer", pos[1]);
    return cli_fail(&err);
  }
  if (is_approve && (!a.reviewer || !a.decision)) {
    finch_err err;
    finch_err_set(&err, FINCH_EINVAL, "finch report approve: %s is required", !a.reviewer ? "--reviewer NAME"
                                                                             : "--decision approve|reject");
    return cli_fail(&err);
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  int code = is_list ? report_list(&a, db) : is_show ? report_show(&a, db, id) : report_approve(&a, db, id);
  finch_db_close(db);
  return code;
}
