-- 0003: the completion-webhook trigger fires when finished_at is written, not when state is.
--
-- A task enters a terminal state exactly when its finished_at goes from NULL to a time (0001
-- ties the two with a CHECK), so the trigger fires for the same changes as before. What
-- changes is the cost of every other UPDATE: SQLite runs an `AFTER UPDATE OF state` trigger
-- program for every row whose state is written and only then tests its WHEN, and because
-- this trigger writes to `tasks` itself, its presence also made each such UPDATE take the
-- slower two-pass path. A claim (queued -> running) sets no finished_at, so it no longer
-- touches this trigger at all, and an end no longer takes the two-pass path. Measured on the
-- raw statements (40,000 tasks claimed and ended in batches of 256): ~40 µs of SQLite time
-- per task before, ~20 after; taskd's drain at 256 workers went from ~18,000 to ~26,000
-- tasks/s (docs/benchmarks.md).
--
-- SQLite only: PostgreSQL tests a row trigger's WHEN before it runs the trigger, so its
-- schema keeps 0002's trigger, and PostgreSQL has no version 3.

DROP TRIGGER tasks_callback;

CREATE TRIGGER tasks_callback AFTER UPDATE OF finished_at ON tasks
    WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
     AND NEW.callback_url IS NOT NULL BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, secret, next_at, created_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url,
            NEW.callback_secret, CAST(unixepoch('subsec') * 1000 AS INTEGER),
            CAST(unixepoch('subsec') * 1000 AS INTEGER));
    UPDATE tasks SET callback_status = 'pending' WHERE id = NEW.id;
END;
