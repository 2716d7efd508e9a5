-- 0007: schedules. A schedule submits its task at each slot of its cron (read in its time
-- zone). `next_at` is the next slot not yet fired or skipped: the maintainer of any node fires
-- the schedules whose `next_at` has come, and moves it on with a guarded update. The fired
-- task's idempotency key is the slot (`schedule:NAME:SLOT`), so two nodes that fire one slot
-- store one task, and a crash between the insert and the move fires nothing twice.
--
-- `task` is the JSON of the task template (queue, kind, input and the submit options that make
-- sense for a repeated task); `queue` repeats its queue so a queue-scoped key's listing can
-- filter without reading the JSON.

CREATE TABLE schedules (
    name         TEXT    PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    cron         TEXT    NOT NULL,
    timezone     TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    task         TEXT    NOT NULL,
    overlap      TEXT    NOT NULL CHECK (overlap IN ('skip', 'allow')),
    catch_up     TEXT    NOT NULL CHECK (catch_up IN ('latest', 'none')),
    paused       INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_at      INTEGER NOT NULL,
    last_task_id TEXT,
    last_slot_at INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    CHECK ((last_task_id IS NULL) = (last_slot_at IS NULL))
) WITHOUT ROWID;

-- The maintainer's question: which unpaused schedules are due.
CREATE INDEX schedules_due ON schedules (next_at) WHERE paused = 0;
