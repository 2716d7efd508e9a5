-- 0006: dependencies between tasks. A task may name parents and wait for them in the state
-- `waiting`; a child cancelled because a parent failed keeps why in `error`
-- (`dependency_failed`).
--
-- SQLite cannot change a CHECK in place, so `tasks` is rebuilt as its documented procedure
-- says (https://sqlite.org/lang_altertable.html#otheralter): a new table with the columns
-- of 0001, 0002 and 0005, every row copied as it is, the old table dropped (with its indexes and
-- triggers), the new one renamed, and the indexes and triggers of 0001, 0002 and 0003 made
-- again, word for word. The migration runs inside the writer's transaction, so it commits
-- whole or not at all. Copying rows into another table fires no trigger, and dropping a
-- table fires none either: `queue_counts`, `task_events` and `webhook_deliveries` stay as
-- they were, and match, since every row keeps its state.

CREATE TABLE tasks_0006 (
    id               TEXT    PRIMARY KEY,          -- UUIDv7, hyphenated: text order is time order
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    input            TEXT    NOT NULL,             -- JSON
    state            TEXT    NOT NULL CHECK (state IN
        ('waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms  INTEGER NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_cap_ms   INTEGER NOT NULL CHECK (backoff_cap_ms >= 0),
    timeout_ms       INTEGER CHECK (timeout_ms > 0), -- NULL: attempts run without a limit
    run_at           INTEGER,                      -- ms since the epoch; when scheduled is due
    labels           TEXT    NOT NULL DEFAULT '{}', -- JSON object of strings
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    result           TEXT,                         -- JSON, only when succeeded
    error            TEXT,                         -- JSON {type, message}: failed, or cancelled
    errors           TEXT    NOT NULL DEFAULT '[]', -- JSON [{attempt, type, message, at}]
    idempotency_key  TEXT,
    request_hash     TEXT,                         -- digest of the request that used the key
    lease            TEXT,                         -- the running attempt's fencing token
    lease_expires_at INTEGER,                      -- ms since the epoch
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    progress         TEXT,                         -- 0002: JSON {percent, message, at}
    callback_url     TEXT,
    callback_secret  TEXT,
    callback_status  TEXT
        CHECK (callback_status IN ('pending', 'delivered', 'failed')),
    traceparent      TEXT,                         -- 0005: the W3C trace context, as stored
    tracestate       TEXT,
    parents          TEXT,                         -- JSON array of the parents' ids, in order
    after_policy     TEXT CHECK (after_policy IN
        ('all_succeeded', 'all_finished', 'any_succeeded')),
    input_from       TEXT,                         -- the parent whose result becomes the input
    -- The database arbitrates: these hold whatever the code does.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((state = 'running') = (lease IS NOT NULL)),
    CHECK ((lease IS NULL) = (lease_expires_at IS NULL)),
    CHECK ((state = 'scheduled') = (run_at IS NOT NULL)),
    CHECK ((state = 'succeeded') = (result IS NOT NULL)),
    CHECK (state <> 'failed' OR error IS NOT NULL),
    CHECK (error IS NULL OR state IN ('failed', 'cancelled')),
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CHECK (attempt <= max_attempts OR state IN ('succeeded', 'failed', 'cancelled', 'queued')),
    CHECK ((parents IS NULL) = (after_policy IS NULL)),
    CHECK (state <> 'waiting' OR parents IS NOT NULL),
    CHECK (input_from IS NULL OR parents IS NOT NULL)
);

INSERT INTO tasks_0006 (id, queue, kind, input, state, priority, attempt, max_attempts,
        backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, cancel_requested, result,
        error, errors, idempotency_key, request_hash, lease, lease_expires_at, created_at,
        started_at, finished_at, progress, callback_url, callback_secret, callback_status,
        traceparent, tracestate)
    SELECT id, queue, kind, input, state, priority, attempt, max_attempts,
        backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, cancel_requested, result,
        error, errors, idempotency_key, request_hash, lease, lease_expires_at, created_at,
        started_at, finished_at, progress, callback_url, callback_secret, callback_status,
        traceparent, tracestate
    FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_0006 RENAME TO tasks;

-- 0001's indexes.
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, id) WHERE state = 'queued';
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, id);
CREATE INDEX tasks_queue ON tasks (queue, id);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- 0002's.
CREATE INDEX tasks_callback ON tasks (queue, callback_status) WHERE callback_status IS NOT NULL;

-- 0001's triggers: the per-queue counts.
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;

-- 0002's: the event log and the webhooks' rows.
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

CREATE TRIGGER tasks_event_delete AFTER DELETE ON tasks BEGIN
    DELETE FROM task_events WHERE task_id = OLD.id;
END;

CREATE TRIGGER tasks_callback_delete AFTER DELETE ON tasks BEGIN
    DELETE FROM webhook_deliveries WHERE task_id = OLD.id;
END;

-- 0003's form of the completion-webhook trigger.
CREATE TRIGGER tasks_callback AFTER UPDATE OF finished_at ON tasks
    WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
     AND NEW.callback_url IS NOT NULL BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, secret, next_at, created_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url,
            NEW.callback_secret, CAST(unixepoch('subsec') * 1000 AS INTEGER),
            CAST(unixepoch('subsec') * 1000 AS INTEGER));
    UPDATE tasks SET callback_status = 'pending' WHERE id = NEW.id;
END;

-- Who waits for whom, while the child waits: a row lives from the child's insert until it
-- leaves `waiting` (released or cancelled), so the end of a parent finds its waiting
-- children by index, and a parent with a row cannot be deleted.
CREATE TABLE task_parents (
    parent_id TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
) WITHOUT ROWID;
CREATE INDEX task_parents_child ON task_parents (child_id);
