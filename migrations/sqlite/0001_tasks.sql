-- 0001: the task table and the per-queue counts that admission control reads.
-- Append-only: a later change is a new file with the next number, never an edit here.

CREATE TABLE tasks (
    id               TEXT    PRIMARY KEY,          -- UUIDv7, hyphenated: text order is time order
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    input            TEXT    NOT NULL,             -- JSON
    state            TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    result           TEXT,                         -- JSON, only when succeeded
    error            TEXT,                         -- JSON {type, message}, only when failed
    lease            TEXT,                         -- the running attempt's fencing token
    lease_expires_at INTEGER,                      -- ms since the epoch
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- The database arbitrates: these hold whatever the code does.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((state = 'running') = (lease IS NOT NULL)),
    CHECK ((lease IS NULL) = (lease_expires_at IS NULL)),
    CHECK ((state = 'succeeded') = (result IS NOT NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL))
);

-- The claim: highest priority first, then oldest (ids are time-ordered). Partial, so the
-- index holds only what waits and stays small however many finished tasks are kept.
CREATE INDEX tasks_claim ON tasks (priority DESC, id) WHERE state = 'queued';
-- Listing by state or queue, newest first.
CREATE INDEX tasks_state ON tasks (state, id);
CREATE INDEX tasks_queue ON tasks (queue, id);

-- How many tasks each queue holds in each state, kept by triggers in the same transaction
-- as the change, so admission control reads one row instead of counting.
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
