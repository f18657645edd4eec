/* Helpers shared by the augmentation methods. Not part of the room's interface. */
#ifndef FINCH_AUGMENT_INTERNAL_H
#define FINCH_AUGMENT_INTERNAL_H

#include <stddef.h>

/* Appends n bytes of s to buf[0..len) as JSON string content (no quotes),
 * escaping quotes, backslashes and control characters; returns the new
 * length, or (size_t)-1 when it does not fit in cap (or len already is -1),
 * so calls can be chained and checked once. buf stays NUL-terminated. */
size_t augment__json_put(char *buf, size_t len, size_t cap, const char *s, size_t n);
/* Appends s verbatim, with the same conventions. */
size_t augment__json_raw(char *buf, size_t len, size_t cap, const char *s);

#endif
