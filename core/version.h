/* What built this binary: finch's version (CMake's PROJECT_VERSION) and the
 * source commit compiled in at build time (cmake/source_commit.cmake): the
 * 40-hex-digit commit, "-dirty" appended when the checkout had changes not
 * committed, or "unknown" when it was built outside a git checkout. Reports
 * name both, so a figure can be traced to the code that produced it. */
#ifndef FINCH_CORE_VERSION_H
#define FINCH_CORE_VERSION_H

const char *finch_version(void);
const char *finch_source_commit(void);

#endif
