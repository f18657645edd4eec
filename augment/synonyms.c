/* Synonym replacement: swaps one or a few ordinary words for a WordNet
 * synonym, most often from the word's most likely sense. Finance terms,
 * placeholders and function words are left alone. */
#include <stdlib.h>
#include <string.h>

#include "augment/methods.h"
#include "augment/wordnet.h"
#include "core/rng.h"

enum {
  MAX_WORD = 64,       /* longer words are not WordNet lemmas */
  MAX_CANDIDATES = 64, /* synonyms considered per word; more are ignored */
  LOCAL_WORDS = 64     /* eligible words kept on the stack before allocating */
};

/* Share of eligible words replaced (at least one), and the chance of drawing
 * from the most likely sense that has a usable synonym. */
#define REPLACE_SHARE 0.15
#define FIRST_SENSE_P 0.7

/* Sorted for binary search. */
static const char *const stop_words[] = {
    "a",       "about", "above", "after", "again", "all",    "also",    "am",      "an",     "any",
    "are",     "as",    "at",    "be",    "been",  "before", "being",   "below",   "both",   "but",
    "by",      "can",   "could", "did",   "do",    "does",   "doing",   "done",    "down",   "during",
    "each",    "even",  "ever",  "every", "few",   "for",    "from",    "further", "get",    "gets",
    "getting", "got",   "had",   "has",   "have",  "having", "he",      "her",     "here",   "hers",
    "him",     "his",   "how",   "i",     "if",    "in",     "into",    "is",      "it",     "its",
    "just",    "let",   "like",  "me",    "more",  "most",   "much",    "my",      "need",   "no",
    "nor",     "not",   "now",   "of",    "off",   "on",     "once",    "one",     "only",   "or",
    "other",   "our",   "ours",  "out",   "over",  "own",    "please",  "same",    "she",    "should",
    "so",      "some",  "still", "such",  "than",  "that",   "the",     "their",   "theirs", "them",
    "then",    "there", "these", "they",  "this",  "those",  "though",  "through", "thus",   "to",
    "too",     "under", "until", "up",    "upon",  "use",    "very",    "via",     "was",    "way",
    "we",      "well",  "were",  "what",  "when",  "where",  "whether", "which",   "while",  "who",
    "whom",    "whose", "why",   "will",  "with",  "would",  "yes",     "yet",     "you",    "your",
    "yours",
};

static int is_stop(const char *w) {
  size_t lo = 0, hi = sizeof stop_words / sizeof stop_words[0];
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(w, stop_words[mid]);
    if (c == 0) return 1;
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return 0;
}

static int is_lower(char c) { return c >= 'a' && c <= 'z'; }
static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_alpha(char c) { return is_lower(c) || is_upper(c); }

/* A word that may be replaced: the alphabetic core of a token. */
typedef struct {
  const char *core;
  size_t len;
  int capital;      /* "Purchase": capitalise the synonym */
  const char *repl; /* chosen synonym (lower case, into the lexicon), NULL when kept */
  size_t repl_len;
} slot;

static int ends_ly(const char *s, size_t n) { return n >= 2 && s[n - 2] == 'l' && s[n - 1] == 'y'; }

static finch_status syn_open(void **state, finch_err *err) {
  augment__wordnet *wn = NULL;
  finch_status st = augment__wordnet_open(NULL, &wn, err);
  if (st) return st;
  *state = wn;
  return FINCH_OK;
}

static void syn_close(void *state) { augment__wordnet_close(state); }

/* Picks a synonym for the lower-case word w (len bytes); 0 when it has none. */
static int pick(const augment__wordnet *wn, const char *w, size_t len, finch_rng *rng, const char **out,
                size_t *out_len) {
  augment__wordnet_word cand[MAX_CANDIDATES];
  size_t n = augment__wordnet_synonyms(wn, w, len, cand, MAX_CANDIDATES), k = 0;
  /* Keep single lower-case words other than w, each once. */
  for (size_t i = 0; i < n; i++) {
    int ok = cand[i].len <= MAX_WORD && !(cand[i].len == len && memcmp(cand[i].s, w, len) == 0);
    /* Without a tagger the part of speech is a guess: an -ly adverb for a
     * word that is not one ("new" -> "freshly") is almost always wrong. */
    ok = ok && !(ends_ly(cand[i].s, cand[i].len) && !ends_ly(w, len));
    for (size_t j = 0; ok && j < cand[i].len; j++) ok = is_lower(cand[i].s[j]);
    for (size_t j = 0; ok && j < k; j++)
      ok = !(cand[j].len == cand[i].len && memcmp(cand[j].s, cand[i].s, cand[i].len) == 0);
    if (ok) cand[k++] = cand[i];
  }
  while (k > 0) {
    unsigned best = cand[0].sense;
    size_t n_best = 0;
    for (size_t i = 0; i < k; i++) best = cand[i].sense < best ? cand[i].sense : best;
    for (size_t i = 0; i < k; i++) n_best += cand[i].sense == best;
    size_t c;
    if (finch_rng_uniform(rng) < FIRST_SENSE_P) {
      size_t r = (size_t)finch_rng_below(rng, n_best);
      for (c = 0; cand[c].sense != best || r-- > 0; c++) {
      }
    } else {
      c = (size_t)finch_rng_below(rng, k);
    }
    /* Finance terms are never introduced: drop and draw again. */
    char buf[MAX_WORD + 1];
    memcpy(buf, cand[c].s, cand[c].len);
    buf[cand[c].len] = '\0';
    if (finch_aug_protected_at(buf) == 0) {
      *out = cand[c].s;
      *out_len = cand[c].len;
      return 1;
    }
    cand[c] = cand[--k];
  }
  return 0;
}

static int by_position(const void *a, const void *b) {
  const slot *x = a, *y = b;
  return (x->core > y->core) - (x->core < y->core);
}

/* Appends to a bounded buffer; *o is the length so far, set past cap on overflow. */
static void put(char *buf, size_t cap, size_t *o, const char *s, size_t n) {
  if (*o > cap || n >= cap - *o) {
    *o = cap + 1;
    return;
  }
  memcpy(buf + *o, s, n);
  *o += n;
}

static void put_json_str(char *buf, size_t cap, size_t *o, const char *s, size_t n, int capital) {
  static const char hex[] = "0123456789abcdef";
  put(buf, cap, o, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (i == 0 && capital && is_lower((char)c)) c = (unsigned char)(c - 'a' + 'A');
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(buf, cap, o, e, 2);
    } else if (c < 0x20) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      put(buf, cap, o, e, 6);
    } else {
      put(buf, cap, o, (const char *)&c, 1);
    }
  }
  put(buf, cap, o, "\"", 1);
}

static int syn_apply(const void *state, const char *text, uint64_t stream, char *out, size_t cap,
                     char *params, size_t params_cap) {
  const augment__wordnet *wn = state;
  if (!wn || !text || !out || !params || cap == 0 || params_cap == 0) return 0;
  slot local[LOCAL_WORDS], *el = local;
  size_t n_el = 0, el_cap = LOCAL_WORDS;
  int made = 0;

  /* Eligible words, in text order. protected_end covers multi-word terms. */
  const char *protected_end = text;
  for (const char *p = text; *p;) {
    while (*p == ' ') p++;
    if (!*p) break;
    const char *tok = p;
    while (*p && *p != ' ') p++;
    const char *core = tok, *end = p;
    while (core < end && !is_alpha(*core)) core++;
    while (end > core && !is_alpha(end[-1])) end--;
    size_t pr = finch_aug_protected_at(tok);
    if (pr && tok + pr > protected_end) protected_end = tok + pr;
    if (core != tok && (pr = finch_aug_protected_at(core)) && core + pr > protected_end)
      protected_end = core + pr;
    size_t len = (size_t)(end - core);
    if (core < protected_end || len < 3 || len > MAX_WORD) continue;
    int capital = is_upper(core[0]), ok = 1;
    char w[MAX_WORD + 1];
    w[0] = capital ? (char)(core[0] - 'A' + 'a') : core[0];
    ok = is_lower(w[0]);
    for (size_t i = 1; ok && i < len; i++) ok = is_lower(w[i] = core[i]);
    if (!ok) continue;
    w[len] = '\0';
    if (is_stop(w) || !augment__wordnet_has(wn, w, len)) continue;
    if (n_el == el_cap) {
      slot *grown = malloc(2 * el_cap * sizeof *grown);
      if (!grown) goto out;
      memcpy(grown, el, n_el * sizeof *el);
      if (el != local) free(el);
      el = grown;
      el_cap *= 2;
    }
    el[n_el++] = (slot){core, len, capital, NULL, 0};
  }
  if (n_el == 0) goto out;

  /* Visit the eligible words in a random order, replacing until enough are. */
  finch_rng rng = {stream};
  size_t want = (size_t)((double)n_el * REPLACE_SHARE), done = 0, tried = 0;
  if (want < 1) want = 1;
  for (; tried < n_el && done < want; tried++) {
    size_t j = tried + (size_t)finch_rng_below(&rng, n_el - tried);
    slot t = el[tried];
    el[tried] = el[j];
    el[j] = t;
    slot *s = &el[tried];
    char w[MAX_WORD + 1];
    for (size_t i = 0; i < s->len; i++) w[i] = (char)(s->core[i] | 0x20);
    w[s->len] = '\0';
    if (pick(wn, w, s->len, &rng, &s->repl, &s->repl_len)) done++;
  }
  if (done == 0) goto out;
  size_t k = 0;
  for (size_t i = 0; i < tried; i++)
    if (el[i].repl) el[k++] = el[i];
  qsort(el, k, sizeof *el, by_position);

  /* The variant, then the parameters; either failing to fit gives 0. */
  size_t o = 0, q = 0;
  const char *from = text;
  for (size_t i = 0; i < k; i++) {
    put(out, cap, &o, from, (size_t)(el[i].core - from));
    size_t at = o;
    put(out, cap, &o, el[i].repl, el[i].repl_len);
    if (o <= cap && el[i].capital) out[at] = (char)(out[at] - 'a' + 'A');
    from = el[i].core + el[i].len;
  }
  put(out, cap, &o, from, strlen(from));
  put(params, params_cap, &q, "{\"replaced\": [", 14);
  for (size_t i = 0; i < k; i++) {
    put(params, params_cap, &q, i ? ", [" : "[", i ? 3 : 1);
    put_json_str(params, params_cap, &q, el[i].core, el[i].len, 0);
    put(params, params_cap, &q, ", ", 2);
    put_json_str(params, params_cap, &q, el[i].repl, el[i].repl_len, el[i].capital);
    put(params, params_cap, &q, "]", 1);
  }
  put(params, params_cap, &q, "]}", 2);
  if (o > cap || q > params_cap) goto out;
  out[o] = '\0';
  params[q] = '\0';
  made = 1;
out:
  if (el != local) free(el);
  if (!made) {
    out[0] = '\0';
    params[0] = '\0';
  }
  return made;
}

const finch_aug_method finch_aug_synonyms = {"synonyms", syn_open, syn_close, syn_apply, NULL};
