/* The bow architecture's file sections (format in nn/modelfile.h): CONFIG,
 * ARCH, VOCAB, LABELS, META, then one TENSOR per parameter tensor. */
#include <stdlib.h>
#include <string.h>

#include "nn/bow.h"
#include "nn/model_impl.h"

/* ---- writing ----------------------------------------------------------- */

/* One TENSOR section; q8 applies to matrices only. */
static void put_tensor(nn_file_writer *w, const char *name, const float *x, uint64_t rows, uint64_t cols,
                       int n_dims, int q8) {
  nn_file_tensor t;
  memset(&t, 0, sizeof t);
  memcpy(t.name, name, strlen(name) < sizeof t.name ? strlen(name) : sizeof t.name - 1);
  t.dtype = q8 ? NN_DTYPE_Q8 : NN_DTYPE_F32;
  t.n_dims = (uint32_t)n_dims;
  t.shape[0] = rows;
  t.shape[1] = cols;
  nn__file_section_begin(w, "TENSOR");
  nn_buf_put(&w->b, &t, sizeof t);
  if (!q8) {
    nn_buf_put(&w->b, x, (size_t)(rows * cols * 4));
  } else {
    /* rows f32 scales, then rows*cols int8 */
    unsigned char *q = nn_buf_reserve(&w->b, (size_t)(rows * 4 + rows * cols));
    for (uint64_t r = 0; q && r < rows; r++) {
      float s;
      nn_q8_quantize_row_ref(x + r * cols, (size_t)cols, (int8_t *)(q + rows * 4 + r * cols), &s);
      memcpy(q + r * 4, &s, 4);
    }
  }
  nn__file_section_end(w);
}

finch_status nn__bow_write(const nn_model *m, const nn_bow *b, nn_dtype dtype, nn_file_writer *w, finch_err *err) {
  const int q8 = dtype == NN_DTYPE_Q8;
  size_t n_words = nn_featurizer_n_words(b->feat);
  const char **words = malloc((n_words + 1) * sizeof *words);
  if (!words) return finch_err_set(err, FINCH_ENOMEM, "out of memory saving a model");
  for (size_t i = 0; i < n_words; i++) words[i] = nn_featurizer_word(b->feat, i);

  const nn_train_config *c = &b->cfg;
  nn_file_config fc = {c->dim, c->hidden, c->buckets, c->minn, c->maxn, c->word_ngrams, c->min_count,
                       c->epochs, c->batch, c->lr, c->weight_decay, c->warmup, c->label_smoothing,
                       c->dropout, c->seed};
  nn__file_section(w, "CONFIG", &fc, sizeof fc);
  nn_file_arch a = {.name = "bow", .rows = b->R, .dim = b->D, .hidden = b->H,
                    .n_labels = b->C, .n_words = (uint32_t)n_words, .reserved = 0};
  nn__file_section(w, "ARCH", &a, sizeof a);
  nn__file_section_begin(w, "VOCAB");
  nn_buf_strings(&w->b, words, n_words);
  nn__file_section_end(w);
  free(words);
  nn__model_write_labels_meta(w, m);

  put_tensor(w, "emb", b->emb, b->R, b->D, 2, q8);
  if (b->H > 0) {
    put_tensor(w, "W1", b->W1, b->H, b->D, 2, q8);
    put_tensor(w, "b1", b->b1, b->H, 1, 1, 0);
  }
  put_tensor(w, "W2", b->W2, b->C, b->Din, 2, q8);
  put_tensor(w, "b2", b->b2, b->C, 1, 1, 0);
  return FINCH_OK;
}

/* ---- reading ----------------------------------------------------------- */

enum { T_EMB, T_W1, T_B1, T_W2, T_B2, T_N };
static const char *const tensor_names[T_N] = {"emb", "W1", "b1", "W2", "b2"};

typedef struct {
  nn_file_tensor h;
  const unsigned char *data;
  uint64_t size;
} tensor_ref;

/* What the sections say, before anything is built. */
typedef struct {
  nn_file_config fc;
  nn_file_arch arch;
  int have_cfg, have_arch;
  char **words, **labels, *meta;
  uint32_t n_words, n_labels;
  tensor_ref tens[T_N];
} bow_sections;

/* Sorts the sections into s; FINCH_EFORMAT naming the section and the fault. */
static finch_status read_sections(const nn_blob *secs, size_t n, const char *path, bow_sections *s, finch_err *err) {
  for (size_t i = 0; i < n; i++) {
    const unsigned char *p = secs[i].data;
    const size_t size = secs[i].size;
    char tag[9] = {0};
    memcpy(tag, secs[i].tag, 8);
    const char *why = NULL;
    if (strcmp(tag, "CONFIG") == 0) {
      if (s->have_cfg || size < sizeof s->fc) why = "duplicate or short CONFIG";
      else memcpy(&s->fc, p, sizeof s->fc);
      s->have_cfg = 1;
    } else if (strcmp(tag, "ARCH") == 0) {
      if (s->have_arch || size < sizeof s->arch) why = "duplicate or short ARCH";
      else memcpy(&s->arch, p, sizeof s->arch);
      s->have_arch = 1;
    } else if (strcmp(tag, "VOCAB") == 0) {
      if (s->words) why = "duplicate VOCAB";
      else s->words = nn__read_strings(p, size, &s->n_words, &why);
    } else if (strcmp(tag, "LABELS") == 0) {
      if (s->labels) why = "duplicate LABELS";
      else s->labels = nn__read_strings(p, size, &s->n_labels, &why);
    } else if (strcmp(tag, "META") == 0) {
      if (s->meta) why = "duplicate META";
      else if (memchr(p, '\0', size)) why = "META holds a NUL byte";
      else if (!(s->meta = malloc(size + 1))) why = "out of memory";
      else memcpy(s->meta, p, size), s->meta[size] = '\0';
    } else if (strcmp(tag, "TENSOR") == 0) {
      nn_file_tensor t;
      if (size < sizeof t) {
        why = "short TENSOR header";
      } else {
        memcpy(&t, p, sizeof t);
        int k = 0;
        t.name[sizeof t.name - 1] = '\0';
        while (k < T_N && strcmp(t.name, tensor_names[k]) != 0) k++;
        if (k == T_N) why = "unknown tensor name";
        else if (s->tens[k].data) why = "duplicate tensor";
        else s->tens[k] = (tensor_ref){t, p + sizeof t, (uint64_t)(size - sizeof t)};
      }
    }
    if (why) return finch_err_set(err, FINCH_EFORMAT, "%s: section %zu (%s): %s", path, i, tag, why);
  }
  return FINCH_OK;
}

/* Fills b's tensors from s; sets *any_q8 when one was stored as Q8. */
static finch_status read_tensors(nn_bow *b, const bow_sections *s, const char *path, int *any_q8, finch_err *err) {
  struct {
    float *dst;
    uint64_t rows, cols;
    int matrix;
  } want[T_N] = {{b->emb, b->R, b->D, 1}, {b->W1, b->H, b->D, 1}, {b->b1, b->H, 1, 0},
                 {b->W2, b->C, b->Din, 1}, {b->b2, b->C, 1, 0}};
  for (int k = 0; k < T_N; k++) {
    const tensor_ref *t = &s->tens[k];
    if ((k == T_W1 || k == T_B1) && b->H == 0) {
      if (t->data)
        return finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s present in a model without a hidden layer", path,
                             tensor_names[k]);
      continue;
    }
    if (!t->data) return finch_err_set(err, FINCH_EFORMAT, "%s: missing tensor %s", path, tensor_names[k]);
    uint64_t rows = want[k].rows, cols = want[k].cols;
    if (t->h.shape[0] != rows || t->h.shape[1] != cols || t->h.n_dims != (want[k].matrix ? 2u : 1u))
      return finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s has shape (%llu,%llu), expected (%llu,%llu)", path,
                           tensor_names[k], (unsigned long long)t->h.shape[0], (unsigned long long)t->h.shape[1],
                           (unsigned long long)rows, (unsigned long long)cols);
    if (t->h.dtype > NN_DTYPE_Q8)
      return finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s has unknown dtype %u", path, tensor_names[k],
                           t->h.dtype);
    if (t->size != (t->h.dtype == NN_DTYPE_F32 ? rows * cols * 4 : rows * 4 + rows * cols))
      return finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s holds %llu data bytes, wrong for its shape and dtype",
                           path, tensor_names[k], (unsigned long long)t->size);
    if (t->h.dtype == NN_DTYPE_F32) {
      memcpy(want[k].dst, t->data, (size_t)(rows * cols * 4));
    } else {
      *any_q8 = 1;
      for (uint64_t r = 0; r < rows; r++) {
        float sc;
        memcpy(&sc, t->data + r * 4, 4);
        nn_q8_dequantize_row_ref((const int8_t *)(t->data + rows * 4 + r * cols), sc, (size_t)cols,
                                 want[k].dst + r * cols);
      }
    }
  }
  return FINCH_OK;
}

finch_status nn__bow_load(nn_model **out, const nn_blob *secs, size_t n, const char *path, finch_err *err) {
  *out = NULL;
  bow_sections s;
  memset(&s, 0, sizeof s);
  nn_bow *b = NULL;
  int any_q8 = 0;
  finch_status st = read_sections(secs, n, path, &s, err);
  if (st != FINCH_OK) goto out;
  if (!s.have_cfg || !s.have_arch || !s.words || !s.labels) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: missing section %s", path,
                       !s.have_cfg ? "CONFIG" : !s.have_arch ? "ARCH" : !s.words ? "VOCAB" : "LABELS");
    goto out;
  }
  const nn_file_config *fc = &s.fc;
  nn_train_config cfg = {fc->dim, fc->hidden, fc->buckets, fc->minn, fc->maxn, fc->word_ngrams, fc->min_count,
                         fc->epochs, fc->batch, fc->lr, fc->weight_decay, fc->warmup, fc->label_smoothing,
                         fc->dropout, fc->seed};
  if (nn__config_check(&cfg, err) != FINCH_OK) {
    finch_err_prefix(err, "%s: CONFIG", path);
    st = FINCH_EFORMAT;
    if (err) err->code = st;
    goto out;
  }
  nn_file_arch *arch = &s.arch;
  arch->name[sizeof arch->name - 1] = '\0';
  if (strcmp(arch->name, "bow") != 0 || arch->dim != cfg.dim || arch->hidden != cfg.hidden ||
      arch->n_words != s.n_words || arch->n_labels != s.n_labels || s.n_labels == 0 ||
      (uint64_t)arch->rows != (uint64_t)s.n_words + cfg.buckets) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: ARCH (%s, rows %u, dim %u, hidden %u, %u labels, %u words) "
                       "does not match CONFIG and the lists (%u labels, %u words)", path, arch->name,
                       arch->rows, arch->dim, arch->hidden, arch->n_labels, arch->n_words, s.n_labels, s.n_words);
    goto out;
  }
  nn_featurizer *feat = NULL;
  nn_feat_config fcfg = nn__feat_config(&cfg);
  st = nn_featurizer_from_words(&feat, (const char *const *)s.words, s.n_words, &fcfg, err);
  if (st == FINCH_OK) st = nn_bow_create(&b, &cfg, feat, s.n_labels, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    goto out;
  }
  if ((st = read_tensors(b, &s, path, &any_q8, err)) != FINCH_OK) goto out;
  if ((st = nn__model_new(out, &nn__bow_vt, b, (const char *const *)s.labels, s.n_labels, err)) != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    goto out;
  }
  b = NULL;
  (*out)->dtype = any_q8 ? NN_DTYPE_Q8 : NN_DTYPE_F32;
  (*out)->meta = s.meta;
  s.meta = NULL;
out:
  nn_bow_free(b);
  free(s.meta);
  free(s.words);
  free(s.labels);
  return st;
}
