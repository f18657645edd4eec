/* Reading a pipeline file (cli/pipeline_file.h) with libyaml's document API:
 * the whole file is loaded into a node tree, then walked once, each node's
 * start mark giving the place for errors. */
#include "cli/pipeline_file.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cli/cli.h"

const cli_pipeline_command cli_pipeline_commands[] = {
    {"ingest", {"ingest"}, 1, &cli_ingest, 1, NULL, 0},
    {"augment", {"augment"}, 1, &cli_augment, 1, NULL, 1},
    {"teacher train", {"teacher", "train"}, 2, &cli_teacher, 1, NULL, 1},
    {"distill", {"distill"}, 1, &cli_distill, 1, NULL, 1},
    {"compile", {"compile"}, 1, &cli_compile, 0, NULL, 0},
    {"eval", {"eval"}, 1, &cli_eval, 1, NULL, 1},
    {"rollout promote", {"rollout", "promote"}, 2, &cli_rollout, 1, NULL, 0},
    {"webhooks deliver", {"webhooks", "deliver"}, 2, &cli_webhooks, 0, "--once", 0},
};
const size_t cli_pipeline_n_commands = sizeof cli_pipeline_commands / sizeof cli_pipeline_commands[0];

#define PL_COMMAND_LIST "ingest, augment, teacher train, distill, compile, eval, rollout promote, webhooks deliver"
#define PL_OUTPUT_FIELDS "model_id, teacher_id, report_id, dataset, run_id, path, deployment, stage"
static const char *const pl_fields[] = {"model_id", "teacher_id", "report_id", "dataset",
                                        "run_id",   "path",       "deployment", "stage"};

typedef struct {
  const char *path;
  yaml_document_t *doc;
  finch_err *err;
} pl_ctx;

static finch_status pl_fail_at(pl_ctx *c, int line, int col, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static finch_status pl_fail_at(pl_ctx *c, int line, int col, const char *key, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return finch_err_set(c->err, FINCH_EINVAL, "%s:%d:%d: %s: %s", c->path, line, col, key, msg);
}
#define LINE(n) ((int)(n)->start_mark.line + 1)
#define COL(n) ((int)(n)->start_mark.column + 1)
#define pl_fail(c, node, key, ...) pl_fail_at((c), LINE(node), COL(node), (key), __VA_ARGS__)

static int pl_name_ok(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-' || *s == '_')) return 0;
  return 1;
}

static int pl_ident_ok(const char *s, size_t n) {
  if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return 0;
  return 1;
}

static const char *pl_scalar(yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A plain (unquoted) true or false: 1 or 0; anything else -1. */
static int pl_bool(yaml_node_t *n) {
  const char *s = pl_scalar(n);
  if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return -1;
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return 1;
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return 0;
  return -1;
}

static const char *pl_node_kind(yaml_node_t *n) {
  return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

/* Checks that the mapping's keys are scalars, unique and among allowed. */
static finch_status pl_keys(pl_ctx *c, yaml_node_t *map, const char *where, const char *const *allowed) {
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
    const char *ks = pl_scalar(k);
    if (!ks) return pl_fail(c, k, where, "a key must be a plain name, not %s", pl_node_kind(k));
    int known = 0;
    for (size_t i = 0; allowed && allowed[i]; i++) known |= !strcmp(ks, allowed[i]);
    if (allowed && !known) {
      char list[256] = "";
      for (size_t i = 0; allowed[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", allowed[i]);
      return pl_fail(c, k, where, "unknown key '%s' (expected %s)", ks, list);
    }
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
      if (!strcmp(pl_scalar(yaml_document_get_node(c->doc, q->key)), ks))
        return pl_fail(c, k, where, "key '%s' is given twice", ks);
  }
  return FINCH_OK;
}

static yaml_node_t *pl_get(pl_ctx *c, yaml_node_t *map, const char *key) {
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++)
    if (!strcmp(pl_scalar(yaml_document_get_node(c->doc, p->key)), key))
      return yaml_document_get_node(c->doc, p->value);
  return NULL;
}

static char *pl_strdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d) abort(); /* a few hundred bytes: out of memory here is not recoverable */
  return d;
}

static void *pl_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

/* A scalar, or a list of scalars joined by commas (with: values, args). */
static finch_status pl_string_or_list(pl_ctx *c, yaml_node_t *n, const char *key, char **out) {
  if (n->type == YAML_SCALAR_NODE) {
    *out = pl_strdup(pl_scalar(n));
    return FINCH_OK;
  }
  if (n->type != YAML_SEQUENCE_NODE) return pl_fail(c, n, key, "expected a value or a list of values, not a mapping");
  size_t len = 1;
  for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
    yaml_node_t *it = yaml_document_get_node(c->doc, *i);
    if (!pl_scalar(it)) return pl_fail(c, it, key, "a list item must be a value, not %s", pl_node_kind(it));
    len += strlen(pl_scalar(it)) + 1;
  }
  *out = pl_calloc(len, 1);
  for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
    if (i > n->data.sequence.items.start) strcat(*out, ",");
    strcat(*out, pl_scalar(yaml_document_get_node(c->doc, *i)));
  }
  return FINCH_OK;
}

/* A scalar or a list of scalars, as separate items with their places. */
static finch_status pl_scalars(pl_ctx *c, yaml_node_t *n, const char *key, cli_pipeline_scalar **out, size_t *count) {
  yaml_node_item_t one = 0, *start = &one, *top = &one + 1;
  if (n->type == YAML_SEQUENCE_NODE) {
    start = n->data.sequence.items.start;
    top = n->data.sequence.items.top;
  } else if (n->type != YAML_SCALAR_NODE) {
    return pl_fail(c, n, key, "expected a list of values, not a mapping");
  }
  *out = pl_calloc((size_t)(top - start), sizeof **out);
  *count = 0;
  for (yaml_node_item_t *i = start; i < top; i++) {
    yaml_node_t *it = i == &one ? n : yaml_document_get_node(c->doc, *i);
    if (!pl_scalar(it)) return pl_fail(c, it, key, "a list item must be a value, not %s", pl_node_kind(it));
    (*out)[*count] = (cli_pipeline_scalar){pl_strdup(pl_scalar(it)), LINE(it), COL(it)};
    ++*count;
  }
  return FINCH_OK;
}

static const cli_pipeline_command *pl_command(const char *run) {
  for (size_t i = 0; i < cli_pipeline_n_commands; i++)
    if (!strcmp(cli_pipeline_commands[i].run, run)) return &cli_pipeline_commands[i];
  return NULL;
}

static finch_status pl_with(pl_ctx *c, yaml_node_t *w, const char *key, cli_pipeline_step *s) {
  if (w->type != YAML_MAPPING_NODE) return pl_fail(c, w, key, "expected a mapping of options, not %s", pl_node_kind(w));
  finch_status st = pl_keys(c, w, key, NULL);
  if (st) return st;
  s->with = pl_calloc((size_t)(w->data.mapping.pairs.top - w->data.mapping.pairs.start), sizeof *s->with);
  for (yaml_node_pair_t *p = w->data.mapping.pairs.start; p < w->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(c->doc, p->key), *v = yaml_document_get_node(c->doc, p->value);
    const char *name = pl_scalar(k);
    const cli_cmd *cmd = s->command->cmd;
    int found = 0;
    for (size_t i = 0; i < cmd->nopts && !found; i++) found = !strcmp(cmd->opts[i].name, name);
    if (!found || !strcmp(name, "json") || !strcmp(name, "help"))
      return pl_fail(c, k, key, "'%s' is not an option of finch %s%s", name, s->command->run,
                     found ? " that a step may set (the runner adds it)" : " (see its --help)");
    cli_pipeline_opt *o = &s->with[s->n_with++];
    o->key = pl_strdup(name);
    o->line = LINE(v);
    o->col = COL(v);
    int b = pl_bool(v);
    if (b >= 0) {
      o->kind = b ? CLI_PL_TRUE : CLI_PL_FALSE;
    } else {
      o->kind = CLI_PL_STRING;
      char sub[128];
      snprintf(sub, sizeof sub, "%s.%s", key, name);
      if ((st = pl_string_or_list(c, v, sub, &o->value))) return st;
    }
  }
  return FINCH_OK;
}

static const char *const pl_step_keys[] = {"name", "run", "needs", "with", "args", "skip_if_unchanged",
                                           "description", NULL};

/* One step; its needs are kept as names in *need_names until every step is known. */
static finch_status pl_step(pl_ctx *c, yaml_node_t *n, size_t idx, cli_pipeline_step *s,
                            cli_pipeline_scalar **need_names, size_t *n_need_names) {
  char key[64];
  snprintf(key, sizeof key, "steps[%zu]", idx);
  if (n->type != YAML_MAPPING_NODE) return pl_fail(c, n, key, "a step must be a mapping, not %s", pl_node_kind(n));
  s->line = LINE(n);
  s->col = COL(n);
  s->skip_if_unchanged = 1;
  finch_status st = pl_keys(c, n, key, pl_step_keys);
  if (st) return st;
  yaml_node_t *name = pl_get(c, n, "name"), *run = pl_get(c, n, "run"), *v;
  if (!name) return pl_fail(c, n, key, "the step has no name");
  if (!pl_scalar(name) || !pl_name_ok(pl_scalar(name)))
    return pl_fail(c, name, strcat(key, ".name"), "'%s' is not a step name ([a-z0-9_-]+)", pl_scalar(name) ? pl_scalar(name) : "");
  s->name = pl_strdup(pl_scalar(name));
  snprintf(key, sizeof key, "steps.%s", s->name);
  if (!run) return pl_fail(c, n, key, "the step has no run (expected one of %s)", PL_COMMAND_LIST);
  if (!pl_scalar(run) || !(s->command = pl_command(pl_scalar(run))))
    return pl_fail(c, run, strcat(key, ".run"), "unknown command '%s' (expected one of %s)", pl_scalar(run) ? pl_scalar(run) : "",
                   PL_COMMAND_LIST);
  char sub[96];
  if ((v = pl_get(c, n, "needs"))) {
    snprintf(sub, sizeof sub, "%s.needs", key);
    if ((st = pl_scalars(c, v, sub, need_names, n_need_names))) return st;
  }
  if ((v = pl_get(c, n, "with"))) {
    snprintf(sub, sizeof sub, "%s.with", key);
    if ((st = pl_with(c, v, sub, s))) return st;
  }
  if ((v = pl_get(c, n, "args"))) {
    snprintf(sub, sizeof sub, "%s.args", key);
    if ((st = pl_scalars(c, v, sub, &s->args, &s->n_args))) return st;
  }
  if ((v = pl_get(c, n, "skip_if_unchanged"))) {
    int b = pl_bool(v);
    if (b < 0) return pl_fail(c, v, strcat(key, ".skip_if_unchanged"), "expected true or false");
    s->skip_if_unchanged = b;
  }
  return FINCH_OK;
}

int cli_pipeline_depends(const cli_pipeline_file *p, size_t a, size_t b) {
  const cli_pipeline_step *s = &p->steps[a];
  for (size_t i = 0; i < s->n_needs; i++)
    if (s->needs[i] == b || cli_pipeline_depends(p, s->needs[i], b)) return 1;
  return 0;
}

/* Depth-first search for a cycle through the needs; on one, writes its path into buf. */
static int pl_cycle(const cli_pipeline_file *p, size_t i, int *color, size_t *stack, size_t depth, char *buf, size_t n,
                    size_t *first) {
  color[i] = 1;
  stack[depth] = i;
  for (size_t k = 0; k < p->steps[i].n_needs; k++) {
    size_t j = p->steps[i].needs[k];
    if (color[j] == 1) {
      size_t from = 0;
      while (stack[from] != j) from++;
      *first = j;
      buf[0] = '\0';
      for (size_t d = from; d <= depth; d++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s -> ", p->steps[stack[d]].name);
      snprintf(buf + strlen(buf), n - strlen(buf), "%s", p->steps[j].name);
      return 1;
    }
    if (!color[j] && pl_cycle(p, j, color, stack, depth + 1, buf, n, first)) return 1;
  }
  color[i] = 2;
  return 0;
}

/* Walks the ${...} references of text. With p and step given, checks them
 * (step = (size_t)-1 for a variable's value, which may use ${env.NAME} only). */
static finch_status pl_refs(pl_ctx *c, const cli_pipeline_file *p, size_t step, const char *text, const char *key,
                            int line, int col) {
  for (const char *s = strstr(text, "${"); s; s = strstr(s, "${")) {
    const char *end = strchr(s, '}');
    if (!end) return pl_fail_at(c, line, col, key, "'${' without a closing '}' in '%s'", text);
    const char *in = s + 2;
    size_t n = (size_t)(end - in);
    if (n > 4 && !strncmp(in, "env.", 4)) {
      if (!pl_ident_ok(in + 4, n - 4))
        return pl_fail_at(c, line, col, key, "'${%.*s}' does not name an environment variable", (int)n, in);
    } else if (step == (size_t)-1) {
      return pl_fail_at(c, line, col, key, "a variable's value may use ${env.NAME} only, not '${%.*s}'", (int)n, in);
    } else if (n > 6 && !strncmp(in, "steps.", 6)) {
      const char *dot = memchr(in + 6, '.', n - 6);
      size_t sn = dot ? (size_t)(dot - in - 6) : 0, k, f;
      for (k = 0; dot && k < p->n_steps; k++)
        if (strlen(p->steps[k].name) == sn && !strncmp(p->steps[k].name, in + 6, sn)) break;
      if (!dot || k == p->n_steps)
        return pl_fail_at(c, line, col, key, "'${%.*s}' names no step of this pipeline", (int)n, in);
      if (!cli_pipeline_depends(p, step, k))
        return pl_fail_at(c, line, col, key, "'${%.*s}': step %s does not need step %s", (int)n, in,
                          p->steps[step].name, p->steps[k].name);
      size_t fn = (size_t)(end - dot - 1);
      for (f = 0; f < sizeof pl_fields / sizeof *pl_fields; f++)
        if (strlen(pl_fields[f]) == fn && !strncmp(pl_fields[f], dot + 1, fn)) break;
      if (f == sizeof pl_fields / sizeof *pl_fields)
        return pl_fail_at(c, line, col, key, "'${%.*s}': unknown output '%.*s' (expected %s)", (int)n, in, (int)fn,
                          dot + 1, PL_OUTPUT_FIELDS);
    } else {
      size_t k;
      for (k = 0; k < p->n_vars; k++)
        if (strlen(p->var_names[k].text) == n && !strncmp(p->var_names[k].text, in, n)) break;
      if (k == p->n_vars)
        return pl_fail_at(c, line, col, key, "'${%.*s}' is not a variable of this pipeline", (int)n, in);
    }
    s = end + 1;
  }
  return FINCH_OK;
}

/* Needs by index, cycles, the order, and every reference. */
static finch_status pl_link(pl_ctx *c, cli_pipeline_file *p, cli_pipeline_scalar **needs, size_t *n_needs) {
  finch_status st;
  char key[96];
  for (size_t i = 0; i < p->n_steps; i++) {
    cli_pipeline_step *s = &p->steps[i];
    for (size_t j = 0; j < i; j++)
      if (!strcmp(p->steps[j].name, s->name))
        return pl_fail_at(c, s->line, s->col, "steps", "step name '%s' is used twice (first at line %d)", s->name,
                          p->steps[j].line);
    s->needs = pl_calloc(n_needs[i], sizeof *s->needs);
    snprintf(key, sizeof key, "steps.%s.needs", s->name);
    for (size_t k = 0; k < n_needs[i]; k++) {
      size_t j;
      for (j = 0; j < p->n_steps; j++)
        if (!strcmp(p->steps[j].name, needs[i][k].text)) break;
      if (j == p->n_steps)
        return pl_fail_at(c, needs[i][k].line, needs[i][k].col, key, "unknown step '%s'", needs[i][k].text);
      if (j == i) return pl_fail_at(c, needs[i][k].line, needs[i][k].col, key, "a step cannot need itself");
      s->needs[s->n_needs++] = j;
    }
  }
  int *color = pl_calloc(p->n_steps, sizeof *color);
  size_t *stack = pl_calloc(p->n_steps + 1, sizeof *stack);
  char cyc[512];
  size_t first = 0;
  for (size_t i = 0; i < p->n_steps; i++)
    if (!color[i] && pl_cycle(p, i, color, stack, 0, cyc, sizeof cyc, &first)) {
      free(color);
      free(stack);
      snprintf(key, sizeof key, "steps.%s.needs", p->steps[first].name);
      return pl_fail_at(c, p->steps[first].line, p->steps[first].col, key, "the needs form a cycle: %s", cyc);
    }
  /* The order: repeatedly the first step in the file whose needs have all run. */
  p->order = pl_calloc(p->n_steps, sizeof *p->order);
  memset(color, 0, p->n_steps * sizeof *color);
  for (size_t o = 0; o < p->n_steps; o++)
    for (size_t i = 0; i < p->n_steps; i++) {
      int ready = !color[i];
      for (size_t k = 0; ready && k < p->steps[i].n_needs; k++) ready = color[p->steps[i].needs[k]];
      if (ready) {
        color[i] = 1;
        p->order[o] = i;
        break;
      }
    }
  free(color);
  free(stack);
  for (size_t k = 0; k < p->n_vars; k++) {
    snprintf(key, sizeof key, "variables.%s", p->var_names[k].text);
    if ((st = pl_refs(c, p, (size_t)-1, p->var_values[k].text, key, p->var_values[k].line, p->var_values[k].col)))
      return st;
  }
  for (size_t i = 0; i < p->n_steps; i++) {
    cli_pipeline_step *s = &p->steps[i];
    for (size_t k = 0; k < s->n_with; k++) {
      snprintf(key, sizeof key, "steps.%s.with.%s", s->name, s->with[k].key);
      if (s->with[k].value && (st = pl_refs(c, p, i, s->with[k].value, key, s->with[k].line, s->with[k].col)))
        return st;
    }
    for (size_t k = 0; k < s->n_args; k++) {
      snprintf(key, sizeof key, "steps.%s.args[%zu]", s->name, k);
      if ((st = pl_refs(c, p, i, s->args[k].text, key, s->args[k].line, s->args[k].col))) return st;
    }
  }
  return FINCH_OK;
}

static const char *const pl_top_keys[] = {"pipeline", "description", "variables", "steps", NULL};

static finch_status pl_document(pl_ctx *c, cli_pipeline_file *p) {
  yaml_node_t *root = yaml_document_get_root_node(c->doc), *v;
  if (!root) return pl_fail_at(c, 1, 1, "pipeline", "the file is empty (expected pipeline: and steps:)");
  if (root->type != YAML_MAPPING_NODE) return pl_fail(c, root, "pipeline", "the file must be a mapping, not %s", pl_node_kind(root));
  finch_status st = pl_keys(c, root, "pipeline", pl_top_keys);
  if (st) return st;
  if (!(v = pl_get(c, root, "pipeline"))) return pl_fail(c, root, "pipeline", "the pipeline has no name (pipeline: NAME)");
  if (!pl_scalar(v) || !pl_name_ok(pl_scalar(v)))
    return pl_fail(c, v, "pipeline", "'%s' is not a pipeline name ([a-z0-9_-]+)", pl_scalar(v) ? pl_scalar(v) : "");
  p->name = pl_strdup(pl_scalar(v));
  if ((v = pl_get(c, root, "variables"))) {
    if (v->type != YAML_MAPPING_NODE) return pl_fail(c, v, "variables", "expected a mapping of name: value");
    if ((st = pl_keys(c, v, "variables", NULL))) return st;
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    p->var_names = pl_calloc(n, sizeof *p->var_names);
    p->var_values = pl_calloc(n, sizeof *p->var_values);
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
      yaml_node_t *k = yaml_document_get_node(c->doc, q->key), *val = yaml_document_get_node(c->doc, q->value);
      const char *name = pl_scalar(k);
      if (!pl_ident_ok(name, strlen(name)) || !strcmp(name, "env") || !strcmp(name, "steps"))
        return pl_fail(c, k, "variables", "'%s' is not a variable name ([A-Za-z_][A-Za-z0-9_]*, not env or steps)", name);
      if (!pl_scalar(val)) return pl_fail(c, val, "variables", "%s: expected a value, not %s", name, pl_node_kind(val));
      p->var_names[p->n_vars] = (cli_pipeline_scalar){pl_strdup(name), LINE(k), COL(k)};
      p->var_values[p->n_vars++] = (cli_pipeline_scalar){pl_strdup(pl_scalar(val)), LINE(val), COL(val)};
    }
  }
  if (!(v = pl_get(c, root, "steps"))) return pl_fail(c, root, "steps", "the pipeline has no steps");
  if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top == v->data.sequence.items.start)
    return pl_fail(c, v, "steps", "expected a non-empty list of steps");
  size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
  p->steps = pl_calloc(n, sizeof *p->steps);
  cli_pipeline_scalar **needs = pl_calloc(n, sizeof *needs);
  size_t *n_needs = pl_calloc(n, sizeof *n_needs);
  for (size_t i = 0; i < n && !st; i++) {
    st = pl_step(c, yaml_document_get_node(c->doc, v->data.sequence.items.start[i]), i, &p->steps[i], &needs[i],
                 &n_needs[i]);
    p->n_steps = i + 1;
  }
  if (!st) st = pl_link(c, p, needs, n_needs);
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < n_needs[i]; k++) free(needs[i][k].text);
    free(needs[i]);
  }
  free(needs);
  free(n_needs);
  return st;
}

finch_status cli_pipeline_load(const char *path, cli_pipeline_file *out, finch_err *err) {
  memset(out, 0, sizeof *out);
  FILE *fp = fopen(path, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: cannot open the pipeline file", path);
  size_t cap = 1 << 14, len = 0, k;
  unsigned char *buf = pl_calloc(cap, 1);
  while ((k = fread(buf + len, 1, cap - len, fp)) > 0)
    if ((len += k) == cap) buf = realloc(buf, cap *= 2);
  fclose(fp);
  if (!buf) abort();
  finch_sha256_hex(buf, len, out->sha256);
  pl_ctx c = {.path = path, .err = err};
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_string(&parser, buf, len);
  finch_status st = FINCH_OK;
  if (!yaml_parser_load(&parser, &doc)) {
    st = finch_err_set(err, FINCH_EINVAL, "%s:%d:%d: YAML syntax: %s%s%s", path, (int)parser.problem_mark.line + 1,
                       (int)parser.problem_mark.column + 1, parser.problem ? parser.problem : "malformed",
                       parser.context ? " " : "", parser.context ? parser.context : "");
  } else {
    c.doc = &doc;
    out->path = pl_strdup(path);
    st = pl_document(&c, out);
    yaml_document_delete(&doc);
  }
  yaml_parser_delete(&parser);
  free(buf);
  if (st) cli_pipeline_free(out);
  return st;
}

void cli_pipeline_free(cli_pipeline_file *p) {
  for (size_t i = 0; i < p->n_steps; i++) {
    cli_pipeline_step *s = &p->steps[i];
    free(s->name);
    free(s->needs);
    for (size_t k = 0; k < s->n_with; k++) {
      free(s->with[k].key);
      free(s->with[k].value);
    }
    free(s->with);
    for (size_t k = 0; k < s->n_args; k++) free(s->args[k].text);
    free(s->args);
  }
  for (size_t k = 0; k < p->n_vars; k++) {
    free(p->var_names[k].text);
    free(p->var_values[k].text);
  }
  free(p->var_names);
  free(p->var_values);
  free(p->steps);
  free(p->order);
  free(p->path);
  free(p->name);
  memset(p, 0, sizeof *p);
}

/* Appends n bytes to the growing *out. */
static void pl_append(char **out, size_t *len, size_t *cap, const char *s, size_t n) {
  if (*len + n + 1 > *cap) {
    while (*len + n + 1 > *cap) *cap = *cap ? *cap * 2 : 256;
    *out = realloc(*out, *cap);
    if (!*out) abort();
  }
  memcpy(*out + *len, s, n);
  (*out)[*len += n] = '\0';
}

finch_status cli_pipeline_expand(const cli_pipeline_file *p, const char *text, const char *key, int line, int col,
                                 cli_pipeline_output_fn outputs, void *ctx, char **out, finch_err *err) {
  pl_ctx c = {.path = p->path, .err = err};
  size_t len = 0, cap = 0;
  *out = NULL;
  pl_append(out, &len, &cap, "", 0);
  const char *s = text;
  for (const char *r = strstr(s, "${"); r; r = strstr(s, "${")) {
    pl_append(out, &len, &cap, s, (size_t)(r - s));
    const char *end = strchr(r, '}'), *in = r + 2;
    if (!end) {
      free(*out);
      *out = NULL;
      return pl_fail_at(&c, line, col, key, "'${' without a closing '}'");
    }
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(end - in), in);
    const char *val = NULL;
    char *owned = NULL;
    finch_status st = FINCH_OK;
    if (!strncmp(name, "env.", 4)) {
      if (!(val = getenv(name + 4)))
        st = pl_fail_at(&c, line, col, key, "environment variable %s is not set", name + 4);
    } else if (!strncmp(name, "steps.", 6)) {
      char *dot = strchr(name + 6, '.');
      if (dot) *dot = '\0';
      if (!dot || !outputs || !(val = outputs(ctx, name + 6, dot + 1)))
        st = pl_fail_at(&c, line, col, key, "step %s has no output %s", name + 6, dot ? dot + 1 : "");
    } else {
      for (size_t k = 0; k < p->n_vars && !val; k++)
        if (!strcmp(p->var_names[k].text, name)) {
          char vkey[128];
          snprintf(vkey, sizeof vkey, "variables.%s", name);
          st = cli_pipeline_expand(p, p->var_values[k].text, vkey, p->var_values[k].line, p->var_values[k].col, NULL,
                                   NULL, &owned, err);
          val = owned;
          if (st) break;
        }
      if (!val && !st) st = pl_fail_at(&c, line, col, key, "'${%s}' is not a variable of this pipeline", name);
    }
    if (st) {
      free(*out);
      *out = NULL;
      return st;
    }
    pl_append(out, &len, &cap, val, strlen(val));
    free(owned);
    s = end + 1;
  }
  pl_append(out, &len, &cap, s, strlen(s));
  return FINCH_OK;
}

static finch_status pl_check_env_in(const cli_pipeline_file *p, const char *text, const char *key, int line, int col,
                                    finch_err *err) {
  pl_ctx c = {.path = p->path, .err = err};
  for (const char *r = strstr(text, "${env."); r; r = strstr(r + 1, "${env.")) {
    const char *end = strchr(r, '}');
    char name[256];
    snprintf(name, sizeof name, "%.*s", end ? (int)(end - r - 6) : 0, r + 6);
    if (!getenv(name)) return pl_fail_at(&c, line, col, key, "environment variable %s is not set", name);
  }
  return FINCH_OK;
}

finch_status cli_pipeline_check_env(const cli_pipeline_file *p, finch_err *err) {
  finch_status st = FINCH_OK;
  char key[128];
  for (size_t k = 0; k < p->n_vars && !st; k++) {
    snprintf(key, sizeof key, "variables.%s", p->var_names[k].text);
    st = pl_check_env_in(p, p->var_values[k].text, key, p->var_values[k].line, p->var_values[k].col, err);
  }
  for (size_t i = 0; i < p->n_steps && !st; i++) {
    const cli_pipeline_step *s = &p->steps[i];
    for (size_t k = 0; k < s->n_with && !st; k++) {
      snprintf(key, sizeof key, "steps.%s.with.%s", s->name, s->with[k].key);
      if (s->with[k].value) st = pl_check_env_in(p, s->with[k].value, key, s->with[k].line, s->with[k].col, err);
    }
    for (size_t k = 0; k < s->n_args && !st; k++) {
      snprintf(key, sizeof key, "steps.%s.args[%zu]", s->name, k);
      st = pl_check_env_in(p, s->args[k].text, key, s->args[k].line, s->args[k].col, err);
    }
  }
  return st;
}
