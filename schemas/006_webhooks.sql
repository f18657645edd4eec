-- Outbound webhooks (serve/webhook.h): subscriptions, and the columns the
-- delivery workers need on the transactional outbox of 001_init.sql.

-- One receiving endpoint. secret is stored as given, in clear, because the
-- worker needs it to sign every delivery (HMAC-SHA256); it cannot be hashed.
-- Treat this table like a credential store: grant it only to finch's role, and
-- rotate a secret by subscribing anew and deactivating the old subscription.
-- event_types lists the event names delivered, or {*} for all of them.
CREATE TABLE webhook_subscriptions (
  id           bigserial PRIMARY KEY,
  url          text NOT NULL CHECK (url ~ '^https?://[^[:space:]]+$'),
  secret       text NOT NULL CHECK (length(secret) > 0),
  event_types  text[] NOT NULL CHECK (cardinality(event_types) > 0),
  active       boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, subscription). payload is the whole body sent,
-- {"id", "type", "created_at", "data"}; the worker sends payload::text, which
-- is the same bytes on every attempt. endpoint is the subscription's URL when
-- the event was written. idempotency_key is sent as Idempotency-Key and
-- Finch-Webhook-Id and never changes, across retries and redeliveries.
--
-- A worker claims a pending, due row by setting locked_until/locked_by (and
-- counting the attempt) in a short transaction, delivers outside it, and
-- records the result only while its claim still holds. A worker that dies
-- mid-delivery leaves a lease that expires at locked_until, after which any
-- worker may claim the row again. locked_by stays as the last claimant.
ALTER TABLE webhook_outbox
  ADD COLUMN subscription_id  bigint REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
  ADD COLUMN event_id         text,
  ADD COLUMN locked_until     timestamptz,
  ADD COLUMN locked_by        text,
  ADD COLUMN last_status      integer,
  ADD COLUMN last_attempt_at  timestamptz;

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX webhook_outbox_status ON webhook_outbox (status, id);
