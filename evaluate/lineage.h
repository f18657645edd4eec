/* Where an evaluated model came from, walked back through the registry, for
 * the report's "lineage" section (evaluate/body.h).
 *
 * From the model, its parent_model_id chain: a compiled model's parent is
 * the float model it was compiled from, a student's the teacher it was
 * distilled from. Each model appears once (its registry row without time
 * stamps or file path: config holds every option it was trained with), with
 * depth (0 = the evaluated model) and derivation ("compiled", "distilled",
 * "derived" or, without a parent, "trained"). Then the training_runs of
 * those models (with their count of training_metrics steps), and the
 * datasets those models were trained on and the evaluated dataset, each
 * once, with their ingest runs (source, source SHA-256, seed, holdout,
 * split policy, counts, options) and augment runs (options with their seed,
 * counts), in id order. Time stamps and durations are left out so that the
 * section is the same on every run.
 *
 *   {models: [...], teacher_model_id (the nearest teacher, or null),
 *    training_runs: [...], datasets: [{name, format, ingest_runs: [...],
 *    augment_runs: [...]}], method}
 * A model not in the registry (model_id 0) has no models and no runs; the
 * evaluated dataset's runs are still given. */
#ifndef FINCH_EVALUATE_LINEAGE_H
#define FINCH_EVALUATE_LINEAGE_H

#include <jansson.h>
#include <stddef.h>

#include "core/db.h"
#include "core/status.h"

/* dataset may be NULL (rows from a file). *out: a new reference. */
finch_status finch_eval_lineage(finch_db *db, long long model_id, const char *dataset, json_t **out, finch_err *err);

/* The SHA-256 of the files dataset was ingested from: its finished ingest
 * runs' distinct source_sha256, sorted and comma-separated ("" when none is
 * recorded). */
finch_status finch_eval_dataset_source_sha256(finch_db *db, const char *dataset, char *buf, size_t n,
                                              finch_err *err);

#endif
