#include "core/version.h"

#include "finch_source_commit.h" /* generated in the build tree */

#ifndef FINCH_PROJECT_VERSION
#define FINCH_PROJECT_VERSION "unknown"
#endif

const char *finch_version(void) { return FINCH_PROJECT_VERSION; }
const char *finch_source_commit(void) { return FINCH_SOURCE_COMMIT; }
