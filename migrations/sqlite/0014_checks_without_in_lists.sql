-- 0014: the CHECKs of `tasks` without IN lists, so that no write of a task builds a table.
--
-- SQLite compiles `x IN ('a', 'b', 'c')` inside a CHECK into a small temporary b-tree of the
-- list's values that it fills and probes *every time the CHECK runs*: for every row an INSERT
-- or UPDATE writes (`EXPLAIN` shows an `OpenEphemeral` and an `IdxInsert` per value in the
-- row's loop, with no `Once` around them). `tasks` had five such lists (`state` in four CHECKs,
-- `callback_status`, `after_policy`), so a submit opened, filled and dropped about two and a
-- half of them (callgrind of taskd serving 5,000 submits: 12,099 `sqlite3BtreeCreateTable`
-- for 4,992 rows, each with a freshly zeroed page), and every claim and end cleared and
-- refilled them. The same constraints written as ORs of equalities compile to a few
-- comparisons. Measured with the same statements on a copy of the schema (Python's SQLite
-- 3.40, 20,000 rows, two runs each): a single-row insert 35.7 / 35.4 µs → 30.5 / 30.0 µs, a
-- claim and an end in statements of 256 rows 15.7 / 16.3 µs → 14.2 / 14.4 µs per task.
--
-- Each CHECK says what it said: `x IN (a, b)` and `x = a OR x = b` agree for every value,
-- NULL included (both are NULL, which a CHECK lets pass), so every row kept satisfies them.
-- SQLite cannot change a CHECK in place, so `tasks` is rebuilt as in 0006 (the documented
-- procedure, https://sqlite.org/lang_altertable.html#otheralter): a new table with the same
-- columns in the same order, every row copied as it is, the old table dropped with its
-- indexes and triggers, the new one renamed, and every index and trigger made again exactly
-- as the migrations up to 0013 left them. It runs inside the migration's transaction, so it
-- commits whole or not at all; copying and dropping fire no trigger, so `queue_counts`,
-- `task_events` and `webhook_deliveries` stay as they were. On a large database this copies
-- every task once, at the first start of this version (docs/operations.md, upgrades).
-- Other tables' lists stay: none of them is written per task.

CREATE TABLE tasks_0014 (
    id               TEXT    PRIMARY KEY,          -- UUIDv7, hyphenated: text order is time order
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    input            TEXT    NOT NULL,             -- JSON
    state            TEXT    NOT NULL CHECK (state = 'waiting' OR state = 'scheduled'
        OR state = 'queued' OR state = 'running' OR state = 'succeeded' OR state = 'failed'
        OR state = 'cancelled'),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms  INTEGER NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_cap_ms   INTEGER NOT NULL CHECK (backoff_cap_ms >= 0),
    timeout_ms       INTEGER CHECK (timeout_ms > 0), -- NULL: attempts run without a limit
    run_at           INTEGER,                      -- ms since the epoch; when scheduled is due
    labels           TEXT    NOT NULL DEFAULT '{}', -- JSON object of strings
    cancel_requested INTEGER NOT NULL DEFAULT 0
        CHECK (cancel_requested = 0 OR cancel_requested = 1),
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
        CHECK (callback_status = 'pending' OR callback_status = 'delivered'
            OR callback_status = 'failed'),
    traceparent      TEXT,                         -- 0005: the W3C trace context, as stored
    tracestate       TEXT,
    parents          TEXT,                         -- JSON array of the parents' ids, in order
    after_policy     TEXT CHECK (after_policy = 'all_succeeded'
        OR after_policy = 'all_finished' OR after_policy = 'any_succeeded'),
    input_from       TEXT,                         -- the parent whose result becomes the input
    -- The database arbitrates: these hold whatever the code does.
    CHECK ((state = 'succeeded' OR state = 'failed' OR state = 'cancelled')
        = (finished_at IS NOT NULL)),
    CHECK ((state = 'running') = (lease IS NOT NULL)),
    CHECK ((lease IS NULL) = (lease_expires_at IS NULL)),
    CHECK ((state = 'scheduled') = (run_at IS NOT NULL)),
    CHECK ((state = 'succeeded') = (result IS NOT NULL)),
    CHECK (state <> 'failed' OR error IS NOT NULL),
    CHECK (error IS NULL OR (state = 'failed' OR state = 'cancelled')),
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CHECK (attempt <= max_attempts OR state = 'succeeded' OR state = 'failed'
        OR state = 'cancelled' OR state = 'queued'),
    CHECK ((parents IS NULL) = (after_policy IS NULL)),
    CHECK (state <> 'waiting' OR parents IS NOT NULL),
    CHECK (input_from IS NULL OR parents IS NOT NULL)
);

INSERT INTO tasks_0014 (id, queue, kind, input, state, priority, attempt, max_attempts,
        backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, cancel_requested, result,
        error, errors,
        idempotency_key, request_hash, lease, lease_expires_at, created_at, started_at,
        finished_at, progress, callback_url, callback_secret, callback_status, traceparent,
        tracestate, parents, after_policy, input_from)
    SELECT id, queue, kind, input, state, priority, attempt, max_attempts, backoff_base_ms,
        backoff_cap_ms, timeout_ms, run_at, labels, cancel_requested, result, error, errors,
        idempotency_key, request_hash, lease, lease_expires_at, created_at, started_at,
        finished_at, progress, callback_url, callback_secret, callback_status, traceparent,
        tracestate, parents, after_policy, input_from
    FROM tasks;

DROP TABLE tasks;
ALTER TABLE tasks_0014 RENAME TO tasks;

-- The indexes, as 0001, 0002, 0009 and 0011 left them.
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, id) WHERE state = 'queued';
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_queue ON tasks (queue, id);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_callback ON tasks (queue, callback_status) WHERE callback_status IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, id) WHERE state <> 'running';

-- The triggers, as 0001, 0002, 0003, 0006 and 0013 left them.
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;

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

CREATE TRIGGER tasks_callback AFTER UPDATE OF finished_at ON tasks
    WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
     AND NEW.callback_url IS NOT NULL BEGIN
    INSERT INTO webhook_deliveries (id, task_id, url, secret, next_at, created_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.callback_url,
            NEW.callback_secret, CAST(unixepoch('subsec') * 1000 AS INTEGER),
            CAST(unixepoch('subsec') * 1000 AS INTEGER));
    UPDATE tasks SET callback_status = 'pending' WHERE id = NEW.id;
END;

CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks
    WHEN OLD.state <> NEW.state AND (SELECT active FROM counts_by_statement) = 0 BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
