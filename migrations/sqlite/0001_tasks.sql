-- 0001: tasks, queue settings, and the per-queue counts that admission control reads.
-- Append-only: a later change is a new file with the next number, never an edit here.

CREATE TABLE tasks (
    id               TEXT    PRIMARY KEY,          -- UUIDv7, hyphenated: text order is time order
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    input            TEXT    NOT NULL,             -- JSON
    state            TEXT    NOT NULL CHECK (state IN
        ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
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
    error            TEXT,                         -- JSON {type, message}, only when failed
    errors           TEXT    NOT NULL DEFAULT '[]', -- JSON [{attempt, type, message, at}]
    idempotency_key  TEXT,
    request_hash     TEXT,                         -- digest of the request that used the key
    lease            TEXT,                         -- the running attempt's fencing token
    lease_expires_at INTEGER,                      -- ms since the epoch
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- The database arbitrates: these hold whatever the code does.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((state = 'running') = (lease IS NOT NULL)),
    CHECK ((lease IS NULL) = (lease_expires_at IS NULL)),
    CHECK ((state = 'scheduled') = (run_at IS NOT NULL)),
    CHECK ((state = 'succeeded') = (result IS NOT NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL)),
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CHECK (attempt <= max_attempts OR state IN ('succeeded', 'failed', 'cancelled', 'queued'))
);

-- The claim: per queue, highest priority first, then oldest (ids are time-ordered). Partial,
-- so the index holds only what waits, however many finished tasks are kept.
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, id) WHERE state = 'queued';
-- The maintainer: scheduled tasks by due time, running ones by lease expiry, finished ones
-- by age (retention).
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- Listing by state or queue, newest first.
CREATE INDEX tasks_state ON tasks (state, id);
CREATE INDEX tasks_queue ON tasks (queue, id);
-- One task per idempotency key; the key goes when its task is deleted.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Queue settings; a queue without a row has the defaults. Queues come into being on first use.
CREATE TABLE queues (
    name        TEXT    PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    concurrency INTEGER CHECK (concurrency >= 0),  -- NULL: only the global pool limits it
    max_queued  INTEGER CHECK (max_queued >= 0),   -- NULL: the server's --max-queued
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- How many tasks each queue holds in each state, kept by triggers in the same transaction
-- as the change, so admission control and the claim read one row instead of counting.
CREATE TABLE queue_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

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
