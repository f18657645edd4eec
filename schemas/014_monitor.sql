-- Monitoring from the serving side (serve/monitor.h): what `finch monitor`
-- reads besides the turns and the labelling tasks.
--
-- A turn's latency: milliseconds from the request's headers to the turn's
-- insert (body, redaction, classification, rules, the rollout's read); the
-- insert and its transaction are not in it. NULL for turns from before.
ALTER TABLE conversation_turns ADD COLUMN latency_ms real;

-- POST /v1/intent stores no row per request: the server counts its answers
-- in memory per (deployment, model, UTC minute) and writes each finished
-- minute once, and the rest when it stops (serve/monitor.h). Several
-- servers, or one that restarted, may write rows for the same minute: a
-- reader sums them. The latency histogram is sparse: latency_bins[i] is a
-- bin of serve_monitor_bin() (upper edge 0.01 ms * 2^(bin/8)) holding
-- latency_counts[i] requests, bins ascending, latencies to the response's
-- end as /metrics has them.
CREATE TABLE serve_minutes (
  id              bigserial PRIMARY KEY,
  deployment      text NOT NULL,
  model_sha256    text NOT NULL,
  minute          timestamptz NOT NULL,
  requests        bigint NOT NULL CHECK (requests >= 0),
  out_of_scope    bigint NOT NULL CHECK (out_of_scope >= 0 AND out_of_scope <= requests),
  latency_bins    smallint[] NOT NULL,
  latency_counts  bigint[] NOT NULL CHECK (cardinality(latency_bins) = cardinality(latency_counts)),
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX serve_minutes_deployment ON serve_minutes (deployment, minute);
