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
-- Commit order, not insert order: with several writers a seq taken mid-transaction could commit
-- after a larger one, and a reader that already moved past the larger one would never see it.
-- So events are written at commit (a deferred trigger), under a lock held until the commit is
-- done: a reader that sees an event sees every event with a smaller seq. Only the commits of
-- transactions that wrote events queue on that lock, and only for the length of their commit.
CREATE SEQUENCE task_events_seq;
CREATE TABLE task_events (
    seq      bigint  PRIMARY KEY,
    task_id  uuid    NOT NULL,
    queue    text    NOT NULL,
    kind     text    NOT NULL,
    state    text    NOT NULL,
    attempt  integer NOT NULL,
    progress text,                                   -- JSON, for progress events
    at       bigint  NOT NULL                        -- ms since the epoch
);
CREATE INDEX task_events_task ON task_events (task_id, seq);

CREATE FUNCTION taskd_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The key is "taskd" + 3 in ASCII; no other lock of taskd uses it.
    PERFORM pg_advisory_xact_lock(127961897067523);
    INSERT INTO task_events (seq, task_id, queue, kind, state, attempt, progress, at)
    VALUES (nextval('task_events_seq'), NEW.id, NEW.queue, NEW.kind, NEW.state, NEW.attempt,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.progress IS DISTINCT FROM NEW.progress
                 THEN NEW.progress END,
            (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    RETURN NULL;
END $$;

-- Deferred: fires at commit, once per changed row, with the row as that change left it.
CREATE CONSTRAINT TRIGGER tasks_event_insert AFTER INSERT ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION taskd_task_event();
CREATE CONSTRAINT TRIGGER tasks_event_update AFTER UPDATE OF state, attempt, progress ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.attempt IS DISTINCT FROM NEW.attempt
          OR OLD.progress IS DISTINCT FROM NEW.progress)
    EXECUTE FUNCTION taskd_task_event();

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
