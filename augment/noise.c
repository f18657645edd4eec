/* noise: the way customers actually type. One apply makes 1-2 edits chosen
 * by the stream among keyboard typos, dropped punctuation or apostrophes,
 * casing, contractions (both ways) and texting spellings. Finance terms from
 * finch_aug_protected_at and <PLACEHOLDERS> are never edited, except that
 * casing may change the case of a protected word (never of a placeholder). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "augment/internal.h"
#include "augment/methods.h"
#include "core/rng.h"

typedef struct {
  const char *from, *to;
} noise_pair;

/* Long form, short form; matched in both directions. */
static const noise_pair contractions[] = {
    {"do not", "don't"},       {"does not", "doesn't"},     {"did not", "didn't"},   {"is not", "isn't"},
    {"are not", "aren't"},     {"was not", "wasn't"},       {"were not", "weren't"}, {"have not", "haven't"},
    {"has not", "hasn't"},     {"had not", "hadn't"},       {"cannot", "can't"},     {"could not", "couldn't"},
    {"would not", "wouldn't"}, {"should not", "shouldn't"}, {"will not", "won't"},   {"i am", "i'm"},
    {"i have", "i've"},        {"i will", "i'll"},          {"i would", "i'd"},      {"it is", "it's"},
    {"that is", "that's"},     {"what is", "what's"},       {"there is", "there's"}, {"where is", "where's"},
    {"you are", "you're"},     {"we are", "we're"},         {"they are", "they're"}, {"you have", "you've"},
    {"we have", "we've"},      {"let us", "let's"},
};

/* Only "can not" -> "can't" one way; the other direction maps to "cannot". */
static const noise_pair contractions_one_way[] = {{"can not", "can't"}};

/* Standard spelling, texting spelling; one way. */
static const noise_pair texting[] = {
    {"you", "u"},          {"your", "ur"},          {"you're", "ur"},      {"are", "r"},
    {"please", "pls"},     {"please", "plz"},       {"thanks", "thx"},     {"thank you", "ty"},
    {"before", "b4"},      {"tomorrow", "tmrw"},    {"because", "cuz"},    {"because", "bc"},
    {"what", "wat"},       {"okay", "ok"},          {"message", "msg"},    {"people", "ppl"},
    {"really", "rly"},     {"though", "tho"},       {"tonight", "tonite"}, {"later", "l8r"},
    {"great", "gr8"},      {"someone", "some1"},    {"anyone", "any1"},    {"going to", "gonna"},
    {"want to", "wanna"},  {"got to", "gotta"},     {"i don't know", "idk"}, {"as soon as possible", "asap"},
    {"right now", "rn"},   {"by the way", "btw"},   {"why", "y"},          {"know", "kno"},
    {"today", "2day"},     {"tonight", "2nite"},    {"for you", "4u"},     {"sorry", "sry"},
    {"probably", "prob"},  {"information", "info"}, {"with", "w/"},        {"without", "w/o"},
};

/* QWERTY neighbours of a..z. */
static const char *const qwerty[26] = {
    "qwsz", "vghn", "xdfv", "serfcx", "wsdr", "drtgvc", "ftyhbv", "gyujnb", "ujko", "huikmn", "jiolm", "kop", "njk",
    "bhjm", "iklp", "ol",   "wa",   "edft", "awedxz", "rfgy", "yhji", "cfgb", "qase", "zsdc", "tghu", "asx",
};

enum { NOISE_TYPO, NOISE_PUNCT, NOISE_CASE, NOISE_CONTRACT, NOISE_TEXTING, NOISE_KINDS };
static const unsigned kind_weight[NOISE_KINDS] = {3, 1, 1, 2, 2};
static const char *const kind_name[NOISE_KINDS] = {"typo", "punct", "casing", "contraction", "texting"};

enum { CASE_LOWER, CASE_FIRST, CASE_UPPER };
enum { PUNCT_FINAL, PUNCT_APOS };

#define NOISE_MAX_CAND 256
#define NOISE_MAX_SPANS 128
#define NOISE_MAX_WORD 40

typedef struct {
  int kind, sub;
  size_t start, len;
  const char *to; /* contraction/texting replacement */
} noise_cand;

typedef struct {
  size_t start, len;
  int placeholder;
} noise_span;

/* Placeholder spans of the working text, kept in order and shifted after edits. */
typedef struct {
  noise_span s[NOISE_MAX_SPANS];
  size_t n;
  size_t limit; /* bytes at or after limit count as protected (span overflow) */
} noise_spans;

static int is_word_byte(unsigned char c) { return isalnum(c) || c == '\'' || c >= 0x80; }

static int word_start(const char *s, size_t i) { return i == 0 || !is_word_byte((unsigned char)s[i - 1]); }

/* Placeholder spans (<CARD>, <IBAN>, ...) of s. */
static void find_spans(const char *s, size_t len, noise_spans *sp) {
  sp->n = 0;
  sp->limit = (size_t)-1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] != '<' || !word_start(s, i)) continue;
    size_t k = finch_aug_protected_at(s + i);
    if (!k) continue;
    if (sp->n == NOISE_MAX_SPANS) {
      sp->limit = i;
      return;
    }
    sp->s[sp->n++] = (noise_span){i, k, 1};
    i += k - 1;
  }
}

static int term_start(const char *s, size_t i) {
  return (isalnum((unsigned char)s[i]) || s[i] == '<') && word_start(s, i);
}

/* Whether a protected term overlaps s[start, start+len). Terms span at most
 * three words, so only the three word starts before start can reach into it.
 * Checked only for the candidate about to be used: finch_aug_protected_at
 * scans the whole stop-list and is the costliest call here. */
static int overlaps_protected(const char *s, size_t start, size_t len) {
  size_t i = start;
  for (int back = 0; back < 3 && i > 0; back++) {
    do i--;
    while (i > 0 && !term_start(s, i));
    if (!term_start(s, i)) break;
    size_t k = finch_aug_protected_at(s + i);
    if (k && i + k > start) return 1;
  }
  for (size_t q = start; q < start + len; q++)
    if (term_start(s, q) && finch_aug_protected_at(s + q)) return 1;
  return 0;
}

static int in_placeholder(const noise_spans *sp, size_t i) {
  for (size_t k = 0; k < sp->n; k++)
    if (sp->s[k].placeholder && i >= sp->s[k].start && i < sp->s[k].start + sp->s[k].len) return 1;
  return 0;
}

static inline unsigned char ascii_lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; }

/* Case-insensitive whole-phrase match of pattern (lower case) at s[i]. */
static inline size_t match_phrase(const char *s, size_t len, size_t i, const char *pat) {
  if (ascii_lower((unsigned char)s[i]) != (unsigned char)pat[0]) return 0;
  size_t n = 1;
  for (; pat[n]; n++)
    if (i + n >= len || ascii_lower((unsigned char)s[i + n]) != (unsigned char)pat[n]) return 0;
  if (i + n < len && is_word_byte((unsigned char)s[i + n])) return 0;
  return n;
}

static void add_cand(noise_cand *c, size_t *n, noise_cand x) {
  if (*n < NOISE_MAX_CAND) c[(*n)++] = x;
}

/* Candidates for local edits in s, outside placeholders and outside the
 * span [ts, te) that an earlier edit wrote. */
static size_t find_cands(const char *s, size_t len, const noise_spans *sp, size_t ts, size_t te, int punct_done,
                         noise_cand *c) {
  size_t n = 0, k = 0;
  for (size_t i = 0; i < len && i < sp->limit;) {
    while (k < sp->n && sp->s[k].start + sp->s[k].len <= i) k++;
    if (k < sp->n && i >= sp->s[k].start) {
      i = sp->s[k].start + sp->s[k].len;
      continue;
    }
    if (!word_start(s, i) || !is_word_byte((unsigned char)s[i])) {
      i++;
      continue;
    }
    size_t next_prot = k < sp->n ? sp->s[k].start : sp->limit;
#define NOISE_OK(st, ln) ((st) + (ln) <= next_prot && ((st) + (ln) <= ts || (st) >= te))
    if (isalpha((unsigned char)s[i])) {
      for (size_t t = 0; t < sizeof contractions / sizeof contractions[0]; t++) {
        size_t m = match_phrase(s, len, i, contractions[t].from);
        if (m && NOISE_OK(i, m)) add_cand(c, &n, (noise_cand){NOISE_CONTRACT, 0, i, m, contractions[t].to});
        m = match_phrase(s, len, i, contractions[t].to);
        if (m && NOISE_OK(i, m)) add_cand(c, &n, (noise_cand){NOISE_CONTRACT, 0, i, m, contractions[t].from});
      }
      for (size_t t = 0; t < sizeof contractions_one_way / sizeof contractions_one_way[0]; t++) {
        size_t m = match_phrase(s, len, i, contractions_one_way[t].from);
        if (m && NOISE_OK(i, m)) add_cand(c, &n, (noise_cand){NOISE_CONTRACT, 0, i, m, contractions_one_way[t].to});
      }
      for (size_t t = 0; t < sizeof texting / sizeof texting[0]; t++) {
        size_t m = match_phrase(s, len, i, texting[t].from);
        if (m && NOISE_OK(i, m)) add_cand(c, &n, (noise_cand){NOISE_TEXTING, 0, i, m, texting[t].to});
      }
    }
    size_t e = i, letters = 0, apos = 0, other = 0;
    while (e < len && is_word_byte((unsigned char)s[e])) {
      unsigned char b = (unsigned char)s[e];
      if (isalpha(b)) {
        letters++;
        e++;
      } else if (b == '\'' && e > i && e + 1 < len && isalpha((unsigned char)s[e + 1])) {
        apos++;
        e++;
      } else if (b == 0xE2 && e + 3 < len && (unsigned char)s[e + 1] == 0x80 && (unsigned char)s[e + 2] == 0x99 &&
                 e > i && isalpha((unsigned char)s[e + 3])) {
        apos++; /* U+2019 right single quotation mark */
        e += 3;
      } else {
        other++;
        e++;
      }
    }
    size_t w = e - i;
    if (w <= NOISE_MAX_WORD && NOISE_OK(i, w)) {
      if (!apos && !other && letters >= 4) add_cand(c, &n, (noise_cand){NOISE_TYPO, 0, i, w, NULL});
      if (apos && !other && !punct_done) add_cand(c, &n, (noise_cand){NOISE_PUNCT, PUNCT_APOS, i, w, NULL});
    }
#undef NOISE_OK
    i = e;
  }
  if (!punct_done && len && strchr("?.!", s[len - 1]) && len - 1 < sp->limit && (len - 1 >= te || len - 1 < ts))
    add_cand(c, &n, (noise_cand){NOISE_PUNCT, PUNCT_FINAL, len - 1, 1, NULL});
  return n;
}

/* Replaces s[start, start+old) by repl (rlen bytes); 0 when it would not fit. */
static int splice(char *s, size_t *len, size_t cap, size_t start, size_t old, const char *repl, size_t rlen) {
  if (*len - old + rlen + 1 > cap) return 0;
  memmove(s + start + rlen, s + start + old, *len - start - old + 1);
  memcpy(s + start, repl, rlen);
  *len = *len - old + rlen;
  return 1;
}

/* Gives repl the case of src: all caps when src is, else a capital first letter. */
static size_t match_case(const char *src, size_t slen, const char *repl, char *out, size_t cap) {
  size_t n = strlen(repl);
  if (n + 1 > cap) n = cap - 1;
  memcpy(out, repl, n);
  out[n] = 0;
  size_t up = 0, low = 0;
  for (size_t i = 0; i < slen; i++) {
    if (isupper((unsigned char)src[i])) up++;
    if (islower((unsigned char)src[i])) low++;
  }
  if (up > 1 && !low) {
    for (size_t i = 0; i < n; i++) out[i] = (char)toupper((unsigned char)out[i]);
  } else if (slen && isupper((unsigned char)src[0]) && n) {
    out[0] = (char)toupper((unsigned char)out[0]);
  }
  return n;
}

/* Makes a typo in word w (n ASCII letters) into out; returns its length. */
static size_t make_typo(const char *w, size_t n, finch_rng *r, char *out) {
  int op = (int)finch_rng_below(r, 3);
  size_t p = 1 + (size_t)finch_rng_below(r, n - 1); /* keep the first letter, as people mostly do */
  if (op == 0) {
    memcpy(out, w, n);
    int lc = tolower((unsigned char)w[p]);
    const char *nb = qwerty[lc - 'a'];
    char c = nb[finch_rng_below(r, strlen(nb))];
    out[p] = isupper((unsigned char)w[p]) ? (char)toupper((unsigned char)c) : c;
    return n;
  }
  if (op == 1) {
    memcpy(out, w, p);
    memcpy(out + p, w + p + 1, n - p - 1);
    return n - 1;
  }
  memcpy(out, w, p + 1);
  memcpy(out + p + 1, w + p, n - p);
  return n + 1;
}

static finch_status noise_open(void **state, finch_err *err) {
  (void)err;
  *state = NULL;
  return FINCH_OK;
}

static void noise_close(void *state) { (void)state; }

#define NOISE_REC 200

static int noise_apply(const void *state, const char *text, uint64_t stream, char *out, size_t cap, char *params,
                       size_t params_cap) {
  (void)state;
  if (out && cap) out[0] = 0;
  if (params && params_cap) params[0] = 0;
  if (!text || !out || !params || !cap) return 0;
  size_t len = strlen(text);
  if (len + 1 > cap) return 0;
  memcpy(out, text, len + 1);

  finch_rng r = {stream};
  noise_spans sp;
  find_spans(out, len, &sp);
  noise_cand c[NOISE_MAX_CAND];
  char rec[2][NOISE_REC];
  size_t nrec = 0, ts = 0, te = 0;
  int punct_done = 0, case_done = 0;
  int want = 1 + (int)finch_rng_below(&r, 2);

  for (int edit = 0; edit < want; edit++) {
    size_t nc = find_cands(out, len, &sp, ts, te, punct_done, c);
    size_t per_kind[NOISE_KINDS] = {0};
    for (size_t i = 0; i < nc; i++) per_kind[c[i].kind]++;
    /* Casing: which variants would change something outside placeholders. */
    int case_ok[3] = {0, 0, 0};
    if (!case_done) {
      for (size_t i = 0; i < len && i < sp.limit; i++) {
        unsigned char b = (unsigned char)out[i];
        if (!isalpha(b) || in_placeholder(&sp, i)) continue;
        if (isupper(b)) case_ok[CASE_LOWER] = 1;
        if (islower(b)) case_ok[CASE_UPPER] = 1;
      }
      case_ok[CASE_FIRST] = len > 1 && isupper((unsigned char)out[0]) && !isupper((unsigned char)out[1]) &&
                            !in_placeholder(&sp, 0);
      per_kind[NOISE_CASE] = (size_t)(case_ok[0] + case_ok[1] + case_ok[2]);
    }
    char dead[NOISE_MAX_CAND] = {0};
    int kind = -1;
    noise_cand *x = NULL;
    for (;;) {
      unsigned total = 0;
      for (int k = 0; k < NOISE_KINDS; k++) total += per_kind[k] ? kind_weight[k] : 0;
      if (!total) break;
      unsigned pick = (unsigned)finch_rng_below(&r, total);
      for (kind = 0; kind < NOISE_KINDS; kind++) {
        unsigned w = per_kind[kind] ? kind_weight[kind] : 0;
        if (pick < w) break;
        pick -= w;
      }
      if (kind == NOISE_CASE) break;
      size_t j = (size_t)finch_rng_below(&r, per_kind[kind]);
      size_t xi = 0;
      for (; xi < nc; xi++)
        if (c[xi].kind == kind && !dead[xi] && j-- == 0) break;
      x = &c[xi];
      if ((kind == NOISE_PUNCT && x->sub == PUNCT_FINAL) || !overlaps_protected(out, x->start, x->len)) break;
      dead[xi] = 1;
      per_kind[kind]--;
      x = NULL;
      kind = -1;
    }
    if (kind < 0) break;

    char *rc = rec[nrec];
    if (kind == NOISE_CASE) {
      /* Lower-case variants are common, shouting is rare. */
      unsigned wt[3] = {case_ok[0] ? 45u : 0u, case_ok[1] ? 45u : 0u, case_ok[2] ? 10u : 0u};
      unsigned p = (unsigned)finch_rng_below(&r, wt[0] + wt[1] + wt[2]);
      int sub = p < wt[0] ? CASE_LOWER : p < wt[0] + wt[1] ? CASE_FIRST : CASE_UPPER;
      if (sub == CASE_FIRST) {
        out[0] = (char)tolower((unsigned char)out[0]);
      } else {
        for (size_t i = 0; i < len && i < sp.limit; i++) {
          if (!isalpha((unsigned char)out[i]) || in_placeholder(&sp, i)) continue;
          out[i] = (char)(sub == CASE_LOWER ? tolower((unsigned char)out[i]) : toupper((unsigned char)out[i]));
        }
      }
      snprintf(rc, NOISE_REC, "casing:%s", sub == CASE_LOWER ? "lower" : sub == CASE_FIRST ? "first-lower" : "upper");
      case_done = 1;
      nrec++;
      continue;
    }

    char from[NOISE_REC], to[NOISE_REC];
    size_t flen = x->len < sizeof from ? x->len : sizeof from - 1;
    memcpy(from, out + x->start, flen);
    from[flen] = 0;
    size_t tlen = 0;
    if (kind == NOISE_TYPO) {
      tlen = make_typo(from, flen, &r, to);
    } else if (kind == NOISE_PUNCT) {
      for (size_t i = 0; i < flen; i++) {
        if (from[i] == '\'' && x->sub == PUNCT_APOS) continue;
        if ((unsigned char)from[i] == 0xE2 && i + 2 < flen && (unsigned char)from[i + 1] == 0x80 &&
            (unsigned char)from[i + 2] == 0x99 && x->sub == PUNCT_APOS) {
          i += 2;
          continue;
        }
        if (x->sub == PUNCT_FINAL) continue;
        to[tlen++] = from[i];
      }
      punct_done = 1;
    } else {
      tlen = match_case(from, flen, x->to, to, sizeof to);
    }
    to[tlen] = 0;
    if (!splice(out, &len, cap, x->start, x->len, to, tlen)) break; /* no room: keep earlier edits */
    /* Shift placeholder spans after the edit; edits never overlap them. */
    for (size_t k = 0; k < sp.n; k++)
      if (sp.s[k].start >= x->start + x->len) sp.s[k].start = sp.s[k].start + tlen - x->len;
    if (sp.limit != (size_t)-1) sp.limit = sp.limit + tlen - x->len;
    ts = x->start;
    te = x->start + tlen;
    if (kind == NOISE_PUNCT && x->sub == PUNCT_FINAL)
      snprintf(rc, NOISE_REC, "punct:drop %s", from);
    else
      snprintf(rc, NOISE_REC, "%s:%s->%s", kind == NOISE_PUNCT ? "apostrophe" : kind_name[kind], from, to);
    nrec++;
  }

  if (!nrec || strcmp(out, text) == 0) {
    out[0] = 0;
    return 0;
  }
  size_t pl = augment__json_raw(params, 0, params_cap, "{\"edits\": [");
  for (size_t i = 0; i < nrec; i++) {
    pl = augment__json_raw(params, pl, params_cap, i ? ", \"" : "\"");
    pl = augment__json_put(params, pl, params_cap, rec[i], strlen(rec[i]));
    pl = augment__json_raw(params, pl, params_cap, "\"");
  }
  pl = augment__json_raw(params, pl, params_cap, "]}");
  if (pl == (size_t)-1) {
    out[0] = 0;
    params[0] = 0;
    return 0;
  }
  return 1;
}

const finch_aug_method finch_aug_noise = {"noise", noise_open, noise_close, noise_apply, NULL};
