-- 0008: a queue's rate limit: at most `rate_limit` attempts start per `rate_per_ms`
-- milliseconds, in any window of that length (both NULL: no limit).
--
-- `queue_starts` is the sliding log the limit is checked against: one row per attempt started
-- in a limited queue, kept while it lies inside the window. A claim counts the queue's rows
-- newer than `now - rate_per_ms`, starts at most the difference, adds a row per start and
-- drops the rows that fell out of the window, all in the claim's transaction. A fixed window
-- or a token bucket would let twice the limit start across a boundary; the log cannot, and
-- holds at most `rate_limit` rows per queue.

ALTER TABLE queues ADD COLUMN rate_limit INTEGER CHECK (rate_limit >= 1);
ALTER TABLE queues ADD COLUMN rate_per_ms INTEGER CHECK (rate_per_ms >= 1);

CREATE TABLE queue_starts (
    queue      TEXT    NOT NULL,
    started_at INTEGER NOT NULL
);

CREATE INDEX queue_starts_window ON queue_starts (queue, started_at);
