/* entities: substitution from finance lexicons written for finch. apply finds
 * mentions (currencies, amounts, merchants, card brands, countries, dates,
 * ATMs, banks, PII placeholders) as whole words, case-insensitively, and
 * replaces 1-2 of them with another entry of the same type. Amounts and some
 * dates are found by small scanners and rendered anew in a random format. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "augment/internal.h"
#include "augment/methods.h"
#include "core/rng.h"

/* One currency: ISO code, symbol (NULL when it has no distinct one), plural name. */
typedef struct {
  const char *code, *symbol, *name;
} ent_currency;

static const ent_currency currencies[] = {
    {"GBP", "£", "pounds"},          {"EUR", "€", "euros"},
    {"USD", "$", "dollars"},         {"JPY", "¥", "yen"},
    {"CHF", NULL, "Swiss francs"},   {"CAD", "C$", "Canadian dollars"},
    {"AUD", "A$", "Australian dollars"}, {"NZD", NULL, "New Zealand dollars"},
    {"SEK", NULL, "Swedish kronor"}, {"NOK", NULL, "Norwegian kroner"},
    {"DKK", NULL, "Danish kroner"},  {"PLN", "zł", "zloty"},
    {"CZK", NULL, "Czech koruna"},   {"HUF", NULL, "forints"},
    {"INR", "₹", "rupees"},          {"CNY", NULL, "yuan"},
    {"HKD", "HK$", "Hong Kong dollars"}, {"SGD", "S$", "Singapore dollars"},
    {"ZAR", NULL, "rand"},           {"MXN", NULL, "Mexican pesos"},
    {"BRL", "R$", "reais"},          {"AED", NULL, "dirhams"},
    {"THB", "฿", "baht"},            {"KRW", "₩", "Korean won"},
};
#define N_CUR (sizeof currencies / sizeof currencies[0])

enum { CUR_CODE, CUR_SYMBOL, CUR_NAME };

/* Further ways to write a currency name: alias, currency index. */
static const struct {
  const char *alias;
  int cur;
} cur_aliases[] = {
    {"pound", 0},   {"pounds sterling", 0}, {"sterling", 0}, {"quid", 0},      {"euro", 1},
    {"dollar", 2},  {"US dollars", 2},      {"bucks", 2},    {"swiss franc", 4}, {"francs", 4},
    {"rupee", 14},  {"renminbi", 15},       {"peso", 19},    {"pesos", 19},    {"dirham", 21},
};

static const char *const merchants[] = {
    "Tesco",   "Sainsbury's", "Asda",    "Lidl",     "Aldi",       "Waitrose",     "Morrisons",
    "Amazon",  "eBay",        "ASOS",    "Argos",    "Zalando",    "AliExpress",   "Etsy",
    "Uber",    "Lyft",        "Deliveroo", "Just Eat", "Uber Eats", "Netflix",     "Spotify",
    "Disney+", "Ryanair",     "easyJet", "British Airways", "Lufthansa", "Airbnb", "Booking.com",
    "Starbucks", "McDonald's", "IKEA",   "Zara",     "Primark",    "Costa",        "Pret",
};

static const char *const brands[] = {
    "Visa", "Mastercard", "American Express", "Amex", "Maestro", "Visa Electron", "Diners Club", "JCB", "UnionPay",
};

static const char *const countries[] = {
    "United Kingdom", "UK",       "Britain",     "England",  "Scotland",    "Ireland",  "France",
    "Germany",        "Spain",    "Italy",       "Portugal", "Netherlands", "Belgium",  "Switzerland",
    "Austria",        "Poland",   "Sweden",      "Norway",   "Denmark",     "Finland",  "Greece",
    "United States",  "USA",      "Canada",      "Australia", "New Zealand", "Japan",   "China",
    "India",          "Thailand", "Mexico",      "Brazil",   "South Africa", "the UAE", "Singapore",
};

static const char *const dates[] = {
    "Monday",         "Tuesday",   "Wednesday",  "Thursday",          "Friday",        "Saturday",
    "Sunday",         "yesterday", "today",      "last week",         "last month",    "last night",
    "this morning",   "earlier today", "the day before yesterday", "a few days ago", "a week ago",
    "two days ago",   "three days ago", "two weeks ago", "over the weekend", "last weekend",
};

static const char *const atm_article[] = {
    "the ATM", "an ATM", "a cash machine", "the cash machine", "a cashpoint", "the cashpoint", "a cash point",
};
static const char *const atm_bare[] = {"ATM", "cash machine", "cashpoint", "cash point"};

static const char *const banks[] = {
    "Barclays", "HSBC", "Santander", "Lloyds", "NatWest", "Halifax", "Metro Bank", "Monzo", "Starling",
    "Revolut",  "Chase Bank", "Wells Fargo", "Bank of America", "Citibank", "Deutsche Bank", "BNP Paribas", "ING", "TSB",
};

static const char *const pii[] = {"<CARD>", "<IBAN>", "<EMAIL>", "<PHONE>", "<ACCOUNT>", "<SSN>"};

static const char *const months[] = {"January", "February", "March",     "April",   "May",      "June",
                                     "July",    "August",   "September", "October", "November", "December"};

typedef struct {
  const char *type;
  const char *const *e;
  size_t n;
} ent_table;

#define ENT_TABLE(type, a) {type, a, sizeof a / sizeof a[0]}
static const ent_table tables[] = {
    ENT_TABLE("merchant", merchants), ENT_TABLE("brand", brands),    ENT_TABLE("country", countries),
    ENT_TABLE("date", dates),         ENT_TABLE("atm", atm_article), ENT_TABLE("atm", atm_bare),
    ENT_TABLE("bank", banks),         ENT_TABLE("pii", pii),
};
#define N_TABLES (sizeof tables / sizeof tables[0])
enum { T_DATE = 3 };

enum { M_TABLE, M_CURRENCY, M_AMOUNT, M_DATE };

typedef struct {
  size_t start, len;
  int kind;
  int table, index; /* M_TABLE: table and entry; M_CURRENCY: form and currency */
} ent_mention;

#define ENT_MAX_MENTIONS 32
#define ENT_REPL 128

static int alnum_at(const char *s, size_t i, size_t len) { return i < len && isalnum((unsigned char)s[i]); }

static inline unsigned char ascii_lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; }

/* Case-insensitive (ASCII) match of entry at s[i] that ends on a word boundary. */
static inline size_t match_entry(const char *s, size_t i, size_t len, const char *e) {
  size_t n = 0;
  for (; e[n]; n++)
    if (i + n >= len || ascii_lower((unsigned char)s[i + n]) != ascii_lower((unsigned char)e[n])) return 0;
  if (isalnum((unsigned char)e[n - 1]) && alnum_at(s, i + n, len)) return 0;
  return n;
}

/* The longest currency spelling at s[i]: its length, currency and form. */
static size_t match_currency(const char *s, size_t i, size_t len, int *cur, int *form) {
  size_t best = 0;
  for (size_t c = 0; c < N_CUR; c++) {
    size_t m = match_entry(s, i, len, currencies[c].code);
    if (m > best) best = m, *cur = (int)c, *form = CUR_CODE;
    if (currencies[c].symbol && (m = match_entry(s, i, len, currencies[c].symbol)) > best)
      best = m, *cur = (int)c, *form = CUR_SYMBOL;
    if ((m = match_entry(s, i, len, currencies[c].name)) > best) best = m, *cur = (int)c, *form = CUR_NAME;
  }
  for (size_t a = 0; a < sizeof cur_aliases / sizeof cur_aliases[0]; a++) {
    size_t m = match_entry(s, i, len, cur_aliases[a].alias);
    if (m > best) best = m, *cur = cur_aliases[a].cur, *form = CUR_NAME;
  }
  return best;
}

/* A number: 1,250 or 1250 or 3.50 or 1.5k. Returns its length (0 if none);
 * *decimals is the count of digits after the point. */
static size_t scan_number(const char *s, size_t i, size_t len, int *decimals) {
  size_t j = i, digits = 0;
  while (j < len && isdigit((unsigned char)s[j]) && digits < 9) j++, digits++;
  if (!digits) return 0;
  while (digits <= 3 && j + 3 < len && s[j] == ',' && isdigit((unsigned char)s[j + 1]) &&
         isdigit((unsigned char)s[j + 2]) && isdigit((unsigned char)s[j + 3]) && !isdigit((unsigned char)s[j + 4]))
    j += 4;
  *decimals = 0;
  if (j + 1 < len && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
    j++;
    while (j < len && isdigit((unsigned char)s[j]) && *decimals < 2) j++, (*decimals)++;
  }
  if (j < len && (s[j] == 'k' || s[j] == 'K') && !alnum_at(s, j + 1, len)) j++;
  if (alnum_at(s, j, len)) return 0;
  return j;
}

/* An amount at s[i]: symbol or code then number, number then symbol, code or
 * name, or a bare number with two decimals. */
static size_t scan_amount(const char *s, size_t i, size_t len, size_t m, int form) {
  int cur, dec;
  if (m && form != CUR_NAME) {
    size_t j = i + m;
    if (j < len && s[j] == ' ') j++;
    size_t e = scan_number(s, j, len, &dec);
    if (e) return e - i;
  }
  size_t e = scan_number(s, i, len, &dec);
  if (!e) return 0;
  size_t j = e < len && s[e] == ' ' ? e + 1 : e;
  if (j < len && (m = match_currency(s, j, len, &cur, &form))) return j + m - i;
  if (dec == 2 && s[e - 1] != 'k' && s[e - 1] != 'K') return e - i;
  return 0;
}

static int month_at(const char *s, size_t i, size_t len, size_t *n) {
  for (int m = 0; m < 12; m++)
    if ((*n = match_entry(s, i, len, months[m]))) return m;
  return -1;
}

/* Dates the lexicon cannot list: 2024-03-12, 12 March, 12th March, March 12,
 * 3 days ago. */
static size_t scan_date(const char *s, size_t i, size_t len) {
  size_t n;
  if (i + 10 <= len && !alnum_at(s, i + 10, len)) {
    static const char pat[] = "dddd-dd-dd";
    size_t k = 0;
    while (k < 10 && (pat[k] == 'd' ? isdigit((unsigned char)s[i + k]) : s[i + k] == '-')) k++;
    if (k == 10) return 10;
  }
  if (isdigit((unsigned char)s[i])) {
    size_t j = i;
    while (j < len && isdigit((unsigned char)s[j]) && j - i < 3) j++;
    size_t num_end = j;
    if (j + 1 < len && j - i <= 2 && isalpha((unsigned char)s[j])) {
      if (strncasecmp(s + j, "st", 2) == 0 || strncasecmp(s + j, "nd", 2) == 0 || strncasecmp(s + j, "rd", 2) == 0 ||
          strncasecmp(s + j, "th", 2) == 0)
        j += 2;
    }
    if (j < len && s[j] == ' ' && !alnum_at(s, j, len)) {
      if (j - i <= 4 && month_at(s, j + 1, len, &n) >= 0) return j + 1 + n - i;
      if (j == num_end) {
        static const char *const ago[] = {"days ago", "day ago", "weeks ago", "week ago", "hours ago", "months ago"};
        for (size_t a = 0; a < sizeof ago / sizeof ago[0]; a++)
          if ((n = match_entry(s, j + 1, len, ago[a]))) return j + 1 + n - i;
      }
    }
    return 0;
  }
  if (month_at(s, i, len, &n) >= 0 && i + n + 1 < len && s[i + n] == ' ' && isdigit((unsigned char)s[i + n + 1])) {
    size_t j = i + n + 1, d = 0;
    while (j < len && isdigit((unsigned char)s[j]) && d < 2) j++, d++;
    if (j + 1 < len && isalpha((unsigned char)s[j]) &&
        (strncasecmp(s + j, "st", 2) == 0 || strncasecmp(s + j, "nd", 2) == 0 || strncasecmp(s + j, "rd", 2) == 0 ||
         strncasecmp(s + j, "th", 2) == 0))
      j += 2;
    if (!alnum_at(s, j, len)) return j - i;
  }
  return 0;
}

static size_t find_mentions(const char *s, size_t len, ent_mention *m) {
  size_t n = 0;
  for (size_t i = 0; i < len && n < ENT_MAX_MENTIONS;) {
    unsigned char b = (unsigned char)s[i];
    if (b == ' ' || (b >= 0x80 && b < 0xC0) || (i && isalnum((unsigned char)s[i - 1]))) {
      i++;
      continue;
    }
    ent_mention x = {i, 0, 0, 0, 0};
    int cur = 0, form = 0;
    size_t cm = match_currency(s, i, len, &cur, &form), k;
    if ((k = scan_date(s, i, len))) {
      x.len = k, x.kind = M_DATE;
    } else if ((k = scan_amount(s, i, len, cm, form))) {
      x.len = k, x.kind = M_AMOUNT;
    } else {
      if (cm) x.len = cm, x.kind = M_CURRENCY, x.table = form, x.index = cur;
      for (size_t t = 0; t < N_TABLES; t++)
        for (size_t e = 0; e < tables[t].n; e++)
          if ((k = match_entry(s, i, len, tables[t].e[e])) > x.len)
            x.len = k, x.kind = M_TABLE, x.table = (int)t, x.index = (int)e;
      /* Do not split a longer finance term ("Apple Pay", "bank transfer"). */
      if (x.len && finch_aug_protected_at(s + i) > x.len) x.len = 0;
    }
    if (x.len) {
      m[n++] = x;
      i += x.len;
    } else {
      i++;
    }
  }
  return n;
}

/* Writes an amount like 1,250.00 into buf. */
static void render_number(char *buf, size_t cap, long long cents, int decimals, int commas) {
  long long whole = cents / 100;
  char w[32];
  if (commas && whole >= 1000)
    snprintf(w, sizeof w, "%lld,%03lld", whole / 1000, whole % 1000);
  else
    snprintf(w, sizeof w, "%lld", whole);
  if (decimals)
    snprintf(buf, cap, "%s.%02lld", w, cents % 100);
  else
    snprintf(buf, cap, "%s", w);
}

static void new_amount(finch_rng *r, char *buf, size_t cap) {
  const ent_currency *c = &currencies[finch_rng_below(r, N_CUR)];
  int fmt = (int)finch_rng_below(r, 6);
  if ((fmt == 0 || fmt == 4) && !c->symbol) fmt = 1;
  if (fmt == 4) {
    long long k = 1 + (long long)finch_rng_below(r, 20);
    if (finch_rng_below(r, 4) == 0)
      snprintf(buf, cap, "%s%lld.5k", c->symbol, k);
    else
      snprintf(buf, cap, "%s%lldk", c->symbol, k);
    return;
  }
  static const long long lo[] = {1, 10, 100, 1000}, span[] = {20, 90, 900, 9000};
  int mag = (int)finch_rng_below(r, 4);
  long long cents = (lo[mag] + (long long)finch_rng_below(r, (uint64_t)span[mag])) * 100;
  int decimals = fmt == 3 || finch_rng_below(r, 3) == 0;
  if (decimals && finch_rng_below(r, 2)) cents += (long long)finch_rng_below(r, 100);
  char num[48];
  render_number(num, sizeof num, cents, decimals, (int)finch_rng_below(r, 2));
  switch (fmt) {
  case 0: snprintf(buf, cap, "%s%s", c->symbol, num); break;
  case 1: snprintf(buf, cap, "%s %s", num, c->code); break;
  case 2: snprintf(buf, cap, "%s %s", num, c->name); break;
  case 3: snprintf(buf, cap, "%s", num); break;
  default: snprintf(buf, cap, "%s %s", c->code, num); break;
  }
}

/* A new date; after "on" only forms that read well there (weekday, 12 March,
 * 2024-03-12). */
static void new_date(finch_rng *r, int after_on, char *buf, size_t cap) {
  uint64_t form = after_on ? 1 + finch_rng_below(r, 3) : finch_rng_below(r, 5);
  if (form == 3 && after_on) {
    snprintf(buf, cap, "%s", dates[finch_rng_below(r, 7)]); /* the weekdays lead the table */
    return;
  }
  switch (form) {
  case 0: snprintf(buf, cap, "%d days ago", 2 + (int)finch_rng_below(r, 9)); break;
  case 1:
    snprintf(buf, cap, "%d %s", 1 + (int)finch_rng_below(r, 28), months[finch_rng_below(r, 12)]);
    break;
  case 2:
    snprintf(buf, cap, "%d-%02d-%02d", 2022 + (int)finch_rng_below(r, 4), 1 + (int)finch_rng_below(r, 12),
             1 + (int)finch_rng_below(r, 28));
    break;
  default: snprintf(buf, cap, "%s", dates[finch_rng_below(r, sizeof dates / sizeof dates[0])]); break;
  }
}

/* A different entry of the same type as m, into buf. */
static void replacement(const char *s, const ent_mention *m, finch_rng *r, char *buf, size_t cap) {
  buf[0] = 0;
  for (int tries = 0; tries < 8; tries++) {
    if (m->kind == M_AMOUNT) {
      new_amount(r, buf, cap);
    } else if (m->kind == M_DATE || (m->kind == M_TABLE && m->table == T_DATE)) {
      int after_on = m->start >= 3 && strncasecmp(s + m->start - 3, "on ", 3) == 0 &&
                     (m->start == 3 || !isalnum((unsigned char)s[m->start - 4]));
      new_date(r, after_on, buf, cap);
    } else if (m->kind == M_CURRENCY) {
      size_t c;
      do c = (size_t)finch_rng_below(r, N_CUR);
      while ((int)c == m->index || (m->table == CUR_SYMBOL && !currencies[c].symbol));
      snprintf(buf, cap, "%s", m->table == CUR_CODE     ? currencies[c].code
                               : m->table == CUR_SYMBOL ? currencies[c].symbol
                                                        : currencies[c].name);
    } else {
      const ent_table *t = &tables[m->table];
      size_t e = (size_t)finch_rng_below(r, t->n - 1);
      if ((int)e >= m->index) e++;
      snprintf(buf, cap, "%s", t->e[e]);
    }
    if (strlen(buf) != m->len || strncasecmp(buf, s + m->start, m->len) != 0) break;
  }
  /* At a capital ("The ATM", "Yesterday"), capitalise the replacement,
   * unless it is written in camel case ("eBay", "easyJet"). */
  int camel = 0;
  for (const char *p = buf + 1; *p; p++) camel |= isupper((unsigned char)*p) && isalpha((unsigned char)p[-1]);
  if (isupper((unsigned char)s[m->start]) && islower((unsigned char)buf[0]) && m->kind != M_CURRENCY && !camel)
    buf[0] = (char)toupper((unsigned char)buf[0]);
}

static const char *mention_type(const ent_mention *m) {
  switch (m->kind) {
  case M_AMOUNT: return "amount";
  case M_DATE: return "date";
  case M_CURRENCY: return "currency";
  default: return tables[m->table].type;
  }
}

size_t finch_aug_find_entities(const char *text, finch_aug_mention *out, size_t max) {
  ent_mention m[ENT_MAX_MENTIONS];
  size_t n = find_mentions(text, strlen(text), m), k = 0;
  for (size_t i = 0; i < n && k < max; i++, k++) {
    out[k].start = m[i].start;
    out[k].len = m[i].len;
    out[k].type = mention_type(&m[i]);
  }
  return k;
}

static finch_status entities_open(void **state, finch_err *err) {
  (void)err;
  *state = NULL;
  return FINCH_OK;
}

static void entities_close(void *state) { (void)state; }

static int entities_apply(const void *state, const char *text, uint64_t stream, char *out, size_t cap, char *params,
                          size_t params_cap) {
  (void)state;
  if (out && cap) out[0] = 0;
  if (params && params_cap) params[0] = 0;
  if (!text || !out || !params || !cap || !params_cap) return 0;
  size_t len = strlen(text);
  ent_mention m[ENT_MAX_MENTIONS];
  size_t n = find_mentions(text, len, m);
  if (!n) return 0;

  finch_rng r = {stream};
  size_t want = 1 + (size_t)finch_rng_below(&r, 2), pick[2];
  if (want > n) want = n;
  pick[0] = (size_t)finch_rng_below(&r, n);
  if (want == 2) {
    pick[1] = (size_t)finch_rng_below(&r, n - 1);
    if (pick[1] >= pick[0]) pick[1]++;
    if (pick[1] < pick[0]) {
      size_t t = pick[0];
      pick[0] = pick[1];
      pick[1] = t;
    }
  }

  size_t ol = 0, pos = 0;
  size_t pl = augment__json_raw(params, 0, params_cap, "{\"replaced\": [");
  for (size_t k = 0; k < want; k++) {
    const ent_mention *x = &m[pick[k]];
    char repl[ENT_REPL];
    replacement(text, x, &r, repl, sizeof repl);
    size_t gap = x->start - pos, rl = strlen(repl);
    if (ol + gap + rl + 1 > cap) goto fail;
    memcpy(out + ol, text + pos, gap);
    memcpy(out + ol + gap, repl, rl);
    ol += gap + rl;
    pos = x->start + x->len;
    pl = augment__json_raw(params, pl, params_cap, k ? ", [\"" : "[\"");
    pl = augment__json_put(params, pl, params_cap, text + x->start, x->len);
    pl = augment__json_raw(params, pl, params_cap, "\", \"");
    pl = augment__json_put(params, pl, params_cap, repl, rl);
    pl = augment__json_raw(params, pl, params_cap, "\", \"");
    pl = augment__json_raw(params, pl, params_cap, mention_type(x));
    pl = augment__json_raw(params, pl, params_cap, "\"]");
  }
  pl = augment__json_raw(params, pl, params_cap, "]}");
  if (pl == (size_t)-1 || ol + (len - pos) + 1 > cap) goto fail;
  memcpy(out + ol, text + pos, len - pos + 1);
  if (strcmp(out, text) == 0) goto fail;
  return 1;
fail:
  out[0] = 0;
  params[0] = 0;
  return 0;
}

const finch_aug_method finch_aug_entities = {"entities", entities_open, entities_close, entities_apply, NULL};
