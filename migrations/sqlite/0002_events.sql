-- 0002: the event log, progress, completion webhooks, and remote queues.
-- Events and deliveries are written by triggers, in the same transaction as the change they
-- describe: an event exists if and only if its change happened.

ALTER TABLE tasks ADD COLUMN progress TEXT;          -- JSON {percent, message, at}
ALTER TABLE tasks ADD COLUMN callback_url TEXT;      -- where to POST the finished task
ALTER TABLE tasks ADD COLUMN callback_secret TEXT;   -- HMAC key (whsec_… base64); never served
ALTER TABLE tasks ADD COLUMN callback_status TEXT
    CHECK (callback_status IN ('pending', 'delivered', 'failed'));

-- A queue's default callback for tasks that bring none.
ALTER TABLE queues ADD COLUMN callback_url TEXT;
ALTER TABLE queues ADD COLUMN callback_secret TEXT;
-- A remote queue is served by workers that lease over HTTP; local handlers never take from it.
ALTER TABLE queues ADD COLUMN remote INTEGER NOT NULL DEFAULT 0 CHECK (remote IN (0, 1));

-- Every state change and progress report, in commit order. `seq` is the resume point
-- (SSE `Last-Event-ID`); AUTOINCREMENT so a seq is never reused, even after deletes.
CREATE TABLE task_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT    NOT NULL,
    queue    TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    progress TEXT,                                   -- JSON, for progress events
    at       INTEGER NOT NULL                        -- ms since the epoch
);
CREATE INDEX task_events_task ON task_events (task_id, seq);

CREATE TRIGGER tasks_event_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_events (task_id, queue, kind, state, attempt, at)
    VALUES (NEW.id, NEW.queue, NEW.kind, NEW.state, NEW.attempt,
            CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

CREATE TRIGGER tasks_event_update AFTER UPDATE OF state, attempt, progress ON tasks
    WHEN OLD.state IS NOT NEW.state OR OLD.attempt IS NOT NEW.attempt
      OR OLD.progress IS NOT NEW.progress BEGIN
    INSERT INTO task_events (task_id, queue, kind, state, attempt, progress, at)
    VALUES (NEW.id, NEW.queue, NEW.kind, NEW.state, NEW.attempt,
            CASE WHEN OLD.progress IS NOT NEW.progress THEN NEW.progress END,
            CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

-- Events live as long as their task.
CREATE TRIGGER tasks_event_delete AFTER DELETE ON tasks BEGIN
    DELETE FROM task_events WHERE task_id = OLD.id;
END;

-- Completion webhooks waiting for (or done with) delivery. `id` is the `webhook-id`, the
-- same on every try, so receivers can deduplicate.
CREATE TABLE webhook_deliveries (
    id          TEXT    PRIMARY KEY,
    task_id     TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    secret      TEXT,
    state       TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,                    -- when to try next (ms since the epoch)
    last_status INTEGER,                             -- the receiver's last HTTP status
    last_error  TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
-- Deleting a task deletes its deliveries: by task, not by scanning.
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);
-- Queue stats count callback statuses without reading every task of the queue.
CREATE INDEX tasks_callback ON tasks (queue, callback_status) WHERE callback_status IS NOT NULL;

-- A task that ends with a callback gets exactly one delivery, in the same transaction.
CREATE TRIGGER tasks_callback AFTER UPDATE OF state ON tasks
    WHEN NEW.state IN ('succeeded', 'failed', 'cancelled')
     AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled')
     AND NEW.callback_url IS NOT NULL BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, secret, next_at, created_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url,
            NEW.callback_secret, CAST(unixepoch('subsec') * 1000 AS INTEGER),
            CAST(unixepoch('subsec') * 1000 AS INTEGER));
    UPDATE tasks SET callback_status = 'pending' WHERE id = NEW.id;
END;

CREATE TRIGGER tasks_callback_delete AFTER DELETE ON tasks BEGIN
    DELETE FROM webhook_deliveries WHERE task_id = OLD.id;
END;
