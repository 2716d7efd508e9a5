-- 0002: the event log, progress, completion webhooks, and remote queues.
-- The same tables as migrations/sqlite/0002_events.sql, in PostgreSQL's dialect. Events and
-- deliveries are written by triggers, in the same transaction as the change they describe: an
-- event exists if and only if its change happened.

ALTER TABLE tasks ADD COLUMN progress text;          -- JSON {percent, message, at}
ALTER TABLE tasks ADD COLUMN callback_url text;      -- where to POST the finished task
ALTER TABLE tasks ADD COLUMN callback_secret text;   -- HMAC key (whsec_… base64); never served
ALTER TABLE tasks ADD COLUMN callback_status text
    CHECK (callback_status IN ('pending', 'delivered', 'failed'));

-- A queue's default callback for tasks that bring none.
ALTER TABLE queues ADD COLUMN callback_url text;
ALTER TABLE queues ADD COLUMN callback_secret text;
-- A remote queue is served by workers that lease over HTTP; local handlers never take from it.
ALTER TABLE queues ADD COLUMN remote boolean NOT NULL DEFAULT false;

-- Every state change and progress report, in commit order. `seq` is the resume point (SSE
-- `Last-Event-ID`), from a sequence, so a seq is never reused, even after deletes.
--
-- Commit order, not insert order: with several writers, a number taken mid-transaction could
-- commit after a larger one, and a reader already past the larger one would never see it. So
-- writers insert events without a `seq` (triggers, in the same transaction as the change,
-- never waiting for each other), and readers number what has committed before they read
-- (`taskd_sequence_events`, one at a time under a lock): a reader that sees an event sees
-- every event with a smaller seq, and events committed later get larger ones.
CREATE SEQUENCE task_events_seq;
CREATE TABLE task_events (
    id       bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- insert order
    seq      bigint  UNIQUE,                         -- commit order; NULL until numbered
    task_id  uuid    NOT NULL,
    queue    text    NOT NULL,
    kind     text    NOT NULL,
    state    text    NOT NULL,
    attempt  integer NOT NULL,
    progress text,                                   -- JSON, for progress events
    at       bigint  NOT NULL                        -- ms since the epoch
);
CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE INDEX task_events_unnumbered ON task_events (id) WHERE seq IS NULL;

CREATE FUNCTION taskd_task_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_events (task_id, queue, kind, state, attempt, at)
            SELECT id, queue, kind, state, attempt, now_ms FROM new_rows ORDER BY id;
    ELSE
        INSERT INTO task_events (task_id, queue, kind, state, attempt, progress, at)
            SELECT n.id, n.queue, n.kind, n.state, n.attempt,
                   CASE WHEN o.progress IS DISTINCT FROM n.progress THEN n.progress END, now_ms
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE o.state IS DISTINCT FROM n.state OR o.attempt IS DISTINCT FROM n.attempt
               OR o.progress IS DISTINCT FROM n.progress
            ORDER BY n.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_events_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_task_events();
CREATE TRIGGER tasks_events_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_task_events();

-- Numbers the committed events that have no `seq` yet, oldest first, at most `batch` of them;
-- returns how many. One caller at a time (the lock, "taskd" + 3 in ASCII, is held until the
-- caller's commit), so numbers become visible in order. The sequence is advanced only here.
CREATE FUNCTION taskd_sequence_events(batch integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    numbered bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(127961897067523);
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO base
        FROM task_events_seq;
    UPDATE task_events e SET seq = base + next.position
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS position
              FROM task_events WHERE seq IS NULL ORDER BY id LIMIT batch) AS next
        WHERE e.id = next.id;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        -- Not rolled back with the transaction: a failed numbering leaves a gap, never a reuse.
        PERFORM setval('task_events_seq', base + numbered);
    END IF;
    RETURN numbered;
END $$;

-- Completion webhooks waiting for (or done with) delivery. `id` is the `webhook-id`, the
-- same on every try, so receivers can deduplicate.
CREATE TABLE webhook_deliveries (
    id          text    PRIMARY KEY,
    task_id     uuid    NOT NULL,
    url         text    NOT NULL,
    secret      text,
    state       text    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    next_at     bigint  NOT NULL,                    -- when to try next (ms since the epoch)
    last_status integer,                             -- the receiver's last HTTP status
    last_error  text,
    created_at  bigint  NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);
-- Queue stats count callback statuses without reading every task of the queue.
CREATE INDEX tasks_callback ON tasks (queue, callback_status) WHERE callback_status IS NOT NULL;

-- A task that ends with a callback gets exactly one delivery, in the same transaction.
CREATE FUNCTION taskd_task_callback() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, secret, next_at, created_at)
    VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.callback_url,
            NEW.callback_secret, now_ms, now_ms);
    NEW.callback_status := 'pending';
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_callback BEFORE UPDATE OF state ON tasks FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled')
          AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled')
          AND NEW.callback_url IS NOT NULL)
    EXECUTE FUNCTION taskd_task_callback();

-- Events and deliveries live as long as their task.
CREATE FUNCTION taskd_task_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_events WHERE task_id IN (SELECT id FROM old_rows);
    DELETE FROM webhook_deliveries WHERE task_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_forget AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_task_forget();

-- Wake-ups, as in 0001, plus `cancel:<id>` when a cancel is asked of a running task: the node
-- that runs it (perhaps not the one that took the request) stops the attempt.
CREATE OR REPLACE FUNCTION taskd_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('taskd', 'work')
            WHERE EXISTS (SELECT 1 FROM new_rows WHERE state IN ('queued', 'scheduled'));
        PERFORM pg_notify('taskd', 'finished:' || id) FROM new_rows
            WHERE state IN ('succeeded', 'failed', 'cancelled');
    ELSE
        PERFORM pg_notify('taskd', 'work')
            WHERE EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o USING (id)
                          WHERE n.state IN ('queued', 'scheduled') AND n.state <> o.state);
        PERFORM pg_notify('taskd', 'finished:' || n.id)
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.state IN ('succeeded', 'failed', 'cancelled') AND n.state <> o.state;
        PERFORM pg_notify('taskd', 'cancel:' || n.id)
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.state = 'running' AND n.cancel_requested AND NOT o.cancel_requested;
    END IF;
    RETURN NULL;
END $$;
