-- 0008: a queue's rate limit, as migrations/sqlite/0008_queue_rate.sql in PostgreSQL's dialect:
-- at most `rate_limit` attempts start per `rate_per_ms` milliseconds, in any window of that
-- length, across all nodes. `queue_starts` is the sliding log of recent starts; a claim of a
-- limited queue takes the queue's advisory lock (as for its concurrency), counts the log's
-- rows inside the window, starts at most the difference and logs each start before commit,
-- so the next node's claim counts them.

ALTER TABLE queues ADD COLUMN rate_limit integer CHECK (rate_limit >= 1);
ALTER TABLE queues ADD COLUMN rate_per_ms bigint CHECK (rate_per_ms >= 1);

CREATE TABLE queue_starts (
    queue      text   NOT NULL,
    started_at bigint NOT NULL
);

CREATE INDEX queue_starts_window ON queue_starts (queue, started_at);
