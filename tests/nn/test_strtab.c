/* The string table (nn/strtab.h): dense, stable indices in insertion order,
 * byte-string keys (empty and embedded NUL included), two-part keys, values,
 * growth and reuse after free. */
#include "nn/strtab.h"

#include "tests/test.h"

/* FNV-1a 64 then splitmix64's finaliser, written out independently. */
static uint64_t ref_hash(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

static void test_basics(void) {
  nn_strtab t = {0};
  CHECK_INT_EQ(nn_strtab_size(&t), 0);
  CHECK_INT_EQ(nn_strtab_find(&t, "card", 4), -1); /* an empty table has no slots yet */
  int added = -1;
  CHECK_INT_EQ(nn_strtab_add(&t, "card", 4, &added), 0);
  CHECK_INT_EQ(added, 1);
  CHECK_INT_EQ(nn_strtab_add(&t, "pin", 3, &added), 1);
  CHECK_INT_EQ(added, 1);
  CHECK_INT_EQ(nn_strtab_add(&t, "card", 4, &added), 0);
  CHECK_INT_EQ(added, 0);
  CHECK_INT_EQ(nn_strtab_add(&t, "pin", 3, NULL), 1);
  CHECK_INT_EQ(nn_strtab_size(&t), 2);
  CHECK_INT_EQ(nn_strtab_find(&t, "card", 4), 0);
  CHECK_INT_EQ(nn_strtab_find(&t, "pin", 3), 1);
  /* Prefixes and extensions of a key are other keys. */
  CHECK_INT_EQ(nn_strtab_find(&t, "car", 3), -1);
  CHECK_INT_EQ(nn_strtab_find(&t, "cards", 5), -1);
  CHECK_INT_EQ(nn_strtab_find(&t, "cardx", 4), 0); /* only len bytes count */
  /* Keys are copied and NUL-terminated. */
  char buf[8] = "top";
  CHECK_INT_EQ(nn_strtab_add(&t, buf, 3, NULL), 2);
  memcpy(buf, "xyz", 3);
  CHECK_STR_EQ(nn_strtab_key(&t, 2), "top");
  CHECK_INT_EQ(nn_strtab_len(&t, 2), 3);
  CHECK_STR_EQ(nn_strtab_key(&t, 0), "card");
  CHECK(nn_strtab_val(&t, 0) == NULL); /* no values */
  nn_strtab_free(&t);
  CHECK_INT_EQ(nn_strtab_size(&t), 0);
  CHECK_INT_EQ(nn_strtab_find(&t, "card", 4), -1);
  nn_strtab_free(&t); /* twice is harmless */
}

static void test_empty_and_nul_keys(void) {
  nn_strtab t = {0};
  int added;
  CHECK_INT_EQ(nn_strtab_find(&t, "", 0), -1);
  CHECK_INT_EQ(nn_strtab_add(&t, "", 0, &added), 0);
  CHECK_INT_EQ(added, 1);
  CHECK_INT_EQ(nn_strtab_add(&t, NULL, 0, &added), 0); /* no bytes: the pointer is not read */
  CHECK_INT_EQ(added, 0);
  CHECK_INT_EQ(nn_strtab_len(&t, 0), 0);
  CHECK_STR_EQ(nn_strtab_key(&t, 0), "");
  /* Embedded NUL bytes are part of the key. */
  CHECK_INT_EQ(nn_strtab_add(&t, "\0", 1, NULL), 1);
  CHECK_INT_EQ(nn_strtab_add(&t, "a", 1, NULL), 2);
  CHECK_INT_EQ(nn_strtab_add(&t, "a\0b", 3, NULL), 3);
  CHECK_INT_EQ(nn_strtab_add(&t, "a\0c", 3, NULL), 4);
  CHECK_INT_EQ(nn_strtab_find(&t, "", 0), 0);
  CHECK_INT_EQ(nn_strtab_find(&t, "\0", 1), 1);
  CHECK_INT_EQ(nn_strtab_find(&t, "a\0b", 3), 3);
  CHECK_INT_EQ(nn_strtab_find(&t, "a\0", 2), -1);
  CHECK_INT_EQ(nn_strtab_len(&t, 3), 3);
  CHECK(memcmp(nn_strtab_key(&t, 4), "a\0c", 4) == 0); /* the bytes, then the NUL */
  nn_strtab_free(&t);
}

static void test_two_part_keys(void) {
  nn_strtab t = {0};
  int added;
  CHECK_INT_EQ(nn_strtab_add2(&t, "c##", 3, "ing", 3, &added), 0);
  CHECK_INT_EQ(added, 1);
  CHECK_STR_EQ(nn_strtab_key(&t, 0), "c##ing");
  CHECK_INT_EQ(nn_strtab_find(&t, "c##ing", 6), 0);
  CHECK_INT_EQ(nn_strtab_find2(&t, "c", 1, "##ing", 5), 0); /* any split of the same bytes */
  CHECK_INT_EQ(nn_strtab_find2(&t, "c##ing", 6, NULL, 0), 0);
  CHECK_INT_EQ(nn_strtab_add2(&t, "c##i", 4, "ng", 2, &added), 0);
  CHECK_INT_EQ(added, 0);
  CHECK_INT_EQ(nn_strtab_find2(&t, "i", 1, "ing", 3), -1);
  /* Too long: refused, the table unchanged (the bytes are never read). */
  static const char dummy[1] = {0};
  CHECK_INT_EQ(nn_strtab_add2(&t, dummy, (size_t)UINT32_MAX - 1, dummy, 1, &added), -1);
  CHECK_INT_EQ(added, 0);
  CHECK_INT_EQ(nn_strtab_size(&t), 1);
  nn_strtab_free(&t);
}

/* Growth: indices are dense and stable, in insertion order, through many
 * rehashes and arena moves; values follow their entries. */
static void test_many_keys_and_values(void) {
  enum { N = 200000 };
  nn_strtab t;
  nn_strtab_init(&t, sizeof(uint64_t));
  char key[32];
  for (unsigned i = 0; i < N; i++) {
    int n = snprintf(key, sizeof key, "key-%u", i * 7919u);
    int added;
    int64_t k = nn_strtab_add(&t, key, (size_t)n, &added);
    if (k != (int64_t)i || !added) {
      CHECK_INT_EQ(k, i);
      break;
    }
    uint64_t *v = nn_strtab_val(&t, (size_t)k);
    if (*v != 0) CHECK_INT_EQ(*v, 0); /* zeroed when created */
    *v = (uint64_t)i * 3 + 1;
  }
  CHECK_INT_EQ(nn_strtab_size(&t), N);
  int bad = 0;
  for (unsigned i = 0; i < N && bad < 5; i++) {
    int n = snprintf(key, sizeof key, "key-%u", i * 7919u);
    if (nn_strtab_find(&t, key, (size_t)n) != (int64_t)i || nn_strtab_len(&t, i) != (size_t)n ||
        strcmp(nn_strtab_key(&t, i), key) != 0 || *(uint64_t *)nn_strtab_val(&t, i) != (uint64_t)i * 3 + 1) {
      TEST_FAIL_("entry %u (\"%s\") is not where it was added", i, key);
      bad++;
    }
  }
  CHECK_INT_EQ(nn_strtab_find(&t, "key-1", 5), -1);
  /* Adding an existing key keeps its value. */
  CHECK_INT_EQ(nn_strtab_add(&t, "key-7919", 8, NULL), 1);
  CHECK_INT_EQ(*(uint64_t *)nn_strtab_val(&t, 1), 4);
  nn_strtab_free(&t);
  /* Free keeps val_size: the table is reusable as it was set up. */
  CHECK_INT_EQ(nn_strtab_add(&t, "again", 5, NULL), 0);
  CHECK(nn_strtab_val(&t, 0) != NULL);
  CHECK_INT_EQ(*(uint64_t *)nn_strtab_val(&t, 0), 0);
  nn_strtab_free(&t);
}

/* A struct value, as a caller with several per-entry fields uses it. */
static void test_struct_values(void) {
  typedef struct {
    uint32_t df, last;
    uint64_t count;
  } counts;
  nn_strtab t;
  nn_strtab_init(&t, sizeof(counts));
  const char *words[] = {"a", "b", "a", "c", "a", "b"};
  for (size_t i = 0; i < 6; i++) {
    int64_t k = nn_strtab_add(&t, words[i], 1, NULL);
    CHECK(k >= 0);
    counts *c = nn_strtab_val(&t, (size_t)k);
    c->count++;
    c->last = (uint32_t)i;
  }
  CHECK_INT_EQ(nn_strtab_size(&t), 3);
  CHECK_INT_EQ(((counts *)nn_strtab_val(&t, 0))->count, 3);
  CHECK_INT_EQ(((counts *)nn_strtab_val(&t, 1))->count, 2);
  CHECK_INT_EQ(((counts *)nn_strtab_val(&t, 1))->last, 5);
  CHECK_INT_EQ(((counts *)nn_strtab_val(&t, 2))->count, 1);
  CHECK_INT_EQ(((counts *)nn_strtab_val(&t, 2))->df, 0);
  nn_strtab_free(&t);
}

int main(void) {
  CHECK(nn_strtab_hash("card", 4) == ref_hash("card", 4));
  CHECK(nn_strtab_hash("", 0) == ref_hash("", 0));
  test_basics();
  test_empty_and_nul_keys();
  test_two_part_keys();
  test_many_keys_and_values();
  test_struct_values();
  TEST_DONE();
}
