/* The front of nn_model (nn/model.h, nn/model_arch.h): the record every
 * architecture shares, dispatch through the architecture's table
 * (nn/model_impl.h), and saving and loading, where a file's ARCH tag picks
 * the table. */
#include "nn/model_impl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every architecture a file may name. */
static const nn_model_vt *const archs[] = {&nn__bow_vt, &nn__tfm_vt, &nn__slr_vt, &nn__ensemble_vt,
                                             &nn__bert_vt};

/* A copy of n label names in one allocation (n pointers, then the strings),
 * released with free(); NULL when out of memory. */
static char **labels_copy(const char *const *labels, size_t n) {
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) bytes += strlen(labels[i]) + 1;
  char **out = malloc(n * sizeof(char *) + bytes);
  if (!out) return NULL;
  char *s = (char *)(out + n);
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(labels[i]) + 1;
    memcpy(s, labels[i], len);
    out[i] = s;
    s += len;
  }
  return out;
}

finch_status nn__model_new(nn_model **out, const nn_model_vt *vt, void *impl, const char *const *labels,
                           size_t n_labels, finch_err *err) {
  *out = NULL;
  if (n_labels < 1) return finch_err_set(err, FINCH_EINVAL, "a model needs at least one label");
  nn_model *m = calloc(1, sizeof *m);
  if (m) m->labels = labels_copy(labels, n_labels);
  if (!m || !m->labels) {
    free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a model");
  }
  m->vt = vt;
  m->impl = impl;
  m->n_labels = n_labels;
  m->dtype = NN_DTYPE_F32;
  *out = m;
  return FINCH_OK;
}

void nn_model_free(nn_model *m) {
  if (!m) return;
  m->vt->free_impl(m->impl);
  free(m->labels);
  free(m->meta);
  free(m);
}

nn_arch nn_model_arch(const nn_model *m) { return m->vt->id; }
const char *nn_model_arch_name(const nn_model *m) { return m->vt->name; }

size_t nn_model_n_labels(const nn_model *m) { return m->n_labels; }
const char *nn_model_label(const nn_model *m, size_t i) { return i < m->n_labels ? m->labels[i] : NULL; }
size_t nn_model_n_params(const nn_model *m) { return m->vt->n_params(m); }
nn_dtype nn_model_dtype(const nn_model *m) { return m->dtype; }
const char *nn_model_meta(const nn_model *m) { return m->meta ? m->meta : "{}"; }

const nn_train_config *nn_model_config(const nn_model *m) {
  static const nn_train_config none;
  return m->vt->config ? m->vt->config(m) : &none;
}

int nn_model_label_index(const nn_model *m, const char *name) {
  for (size_t i = 0; i < m->n_labels; i++)
    if (strcmp(m->labels[i], name) == 0) return (int)i;
  return -1;
}

int nn_model_meta_string(const nn_model *m, const char *key, char *buf, size_t n) {
  json_t *meta = json_loads(nn_model_meta(m), 0, NULL);
  const char *v = json_string_value(json_object_get(meta, key));
  snprintf(buf, n, "%s", v ? v : "");
  json_decref(meta);
  return v != NULL;
}

finch_status nn_model_set_meta(nn_model *m, const char *json, finch_err *err) {
  if (!json) {
    free(m->meta);
    m->meta = NULL;
    return FINCH_OK;
  }
  json_error_t je;
  json_t *v = json_loads(json, JSON_DECODE_ANY, &je);
  if (!v) return finch_err_set(err, FINCH_EINVAL, "model meta is not JSON: line %d: %s", je.line, je.text);
  int is_obj = json_is_object(v);
  json_decref(v);
  if (!is_obj) return finch_err_set(err, FINCH_EINVAL, "model meta must be a JSON object");
  char *copy = strdup(json);
  if (!copy) return finch_err_set(err, FINCH_ENOMEM, "out of memory copying model meta");
  free(m->meta);
  m->meta = copy;
  return FINCH_OK;
}

/* ---- prediction ------------------------------------------------------------ */

void nn__uniform(float *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = 1.0f / (float)n;
}

int nn__argmax(const float *p, size_t n) {
  size_t b = 0;
  for (size_t i = 1; i < n; i++)
    if (p[i] > p[b]) b = i;
  return (int)b;
}

int nn_model_predict(const nn_model *m, const char *text, float *probs, float temperature) {
  return m->vt->predict(m, text, probs, temperature > 0 ? temperature : 1.0f);
}

finch_status nn__predict_each(const nn_model *m, const char *const *texts, size_t n, float *probs, int32_t *pred,
                              float temperature, finch_err *err) {
  const size_t C = m->n_labels;
  float *one = malloc(C * sizeof *one);
  if (!one) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t r = 0; r < n; r++) {
    int k = nn_model_predict(m, texts[r], one, temperature);
    if (pred) pred[r] = k;
    if (probs) memcpy(probs + r * C, one, C * sizeof *one);
  }
  free(one);
  return FINCH_OK;
}

finch_status nn_model_predict_many(const nn_model *m, const char *const *texts, size_t n, float *probs,
                                   int32_t *pred, float temperature, finch_err *err) {
  if (temperature <= 0) temperature = 1.0f;
  if (m->vt->predict_many) return m->vt->predict_many(m, texts, n, probs, pred, temperature, err);
  return nn__predict_each(m, texts, n, probs, pred, temperature, err);
}

/* ---- the head sections ------------------------------------------------------ */

void nn__model_write_labels_meta(nn_file_writer *w, const nn_model *m) {
  nn__file_section_begin(w, "LABELS");
  nn_buf_strings(&w->b, (const char *const *)m->labels, m->n_labels);
  nn__file_section_end(w);
  const char *meta = nn_model_meta(m);
  nn__file_section(w, "META", meta, strlen(meta));
}

void nn__model_write_head(nn_file_writer *w, const nn_model *m) {
  nn_file_arch a;
  memset(&a, 0, sizeof a);
  /* NUL-padded, not NUL-terminated: "ensemble" fills all 8 bytes. */
  memcpy(a.name, m->vt->name, strnlen(m->vt->name, sizeof a.name));
  a.n_labels = (uint32_t)m->n_labels;
  nn__file_section(w, "ARCH", &a, sizeof a);
  nn__model_write_labels_meta(w, m);
}

void nn__model_head_free(nn_model_head *h) {
  free(h->labels);
  free(h->meta);
  memset(h, 0, sizeof *h);
}

finch_status nn__model_read_head(const nn_blob *secs, size_t ns, const char *path, nn_model_head *h,
                                 finch_err *err) {
  memset(h, 0, sizeof *h);
  const char *why = NULL;
  for (size_t i = 0; i < ns && !why; i++) {
    char tag[9] = {0};
    memcpy(tag, secs[i].tag, 8);
    if (!strcmp(tag, "ARCH")) {
      if (secs[i].size != sizeof h->arch) why = "ARCH has the wrong size";
      else memcpy(&h->arch, secs[i].data, sizeof h->arch);
    } else if (!strcmp(tag, "LABELS")) {
      if (h->labels) why = "duplicate LABELS";
      else if (!(h->labels = nn__read_strings(secs[i].data, secs[i].size, &h->n_labels, &why))) break;
    } else if (!strcmp(tag, "META")) {
      if (h->meta || memchr(secs[i].data, 0, secs[i].size)) why = "duplicate META or a NUL byte in it";
      else if ((h->meta = malloc(secs[i].size + 1)))
        memcpy(h->meta, secs[i].data, secs[i].size), h->meta[secs[i].size] = 0;
    }
  }
  if (!why && !h->labels) why = "missing LABELS";
  if (!why && h->arch.n_labels != h->n_labels) why = "ARCH and LABELS disagree on the number of labels";
  if (!why) return FINCH_OK;
  nn__model_head_free(h);
  return finch_err_set(err, FINCH_EFORMAT, "%s: %s", path, why);
}

/* ---- saving and loading ---------------------------------------------------- */

finch_status nn__model_bytes(const nn_model *m, nn_dtype dtype, unsigned char **buf, size_t *len, finch_err *err) {
  nn_file_writer w;
  nn__file_begin(&w);
  finch_status st = m->vt->write(m, dtype, &w, err);
  if (st != FINCH_OK) {
    nn_buf_free(&w.b);
    return st;
  }
  return nn__file_end(&w, buf, len, err);
}

finch_status nn_model_save(const nn_model *m, const char *path, nn_dtype dtype, char *sha256_hex,
                           finch_err *err) {
  if (dtype != NN_DTYPE_F32 && dtype != NN_DTYPE_Q8)
    return finch_err_set(err, FINCH_EINVAL, "%s: unknown dtype %d", path, (int)dtype);
  unsigned char *buf = NULL;
  size_t len = 0;
  finch_status st = nn__model_bytes(m, dtype, &buf, &len, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    return st;
  }
  st = nn__file_write_atomic(path, buf, len, err);
  if (st == FINCH_OK && sha256_hex) nn__sha256_hex(buf, len, sha256_hex);
  free(buf);
  return st;
}

finch_status nn_model_load(nn_model **out, const char *path, finch_err *err) {
  *out = NULL;
  unsigned char *buf = NULL;
  size_t size = 0;
  finch_status st = nn__file_read(path, &buf, &size, err);
  if (st == FINCH_OK) st = nn__model_from_bytes(out, buf, size, path, err);
  free(buf);
  return st;
}

finch_status nn__model_from_bytes(nn_model **out, const unsigned char *buf, size_t size, const char *path,
                                  finch_err *err) {
  *out = NULL;
  finch_status st = nn__file_verify(buf, size, path, err);
  if (st != FINCH_OK) return st;
  nn_blob *secs = NULL;
  size_t ns = 0;
  if ((st = nn__file_sections(buf, size, path, &secs, &ns, err)) != FINCH_OK) return st;
  const nn_blob *arch = nn__file_find(secs, ns, "ARCH");
  char name[9] = {0};
  if (arch && arch->size >= 8) memcpy(name, arch->data, 8);
  const nn_model_vt *vt = NULL;
  for (size_t i = 0; i < sizeof archs / sizeof *archs && !vt; i++)
    if (strcmp(name, archs[i]->name) == 0) vt = archs[i];
  if (!arch || arch->size < 8) st = finch_err_set(err, FINCH_EFORMAT, "%s: missing section ARCH", path);
  else if (!vt) st = finch_err_set(err, FINCH_EFORMAT, "%s: unknown architecture \"%s\"", path, name);
  else st = vt->load(out, secs, ns, path, err);
  free(secs);
  return st;
}
