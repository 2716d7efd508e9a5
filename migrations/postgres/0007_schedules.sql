-- 0007: schedules, as migrations/sqlite/0007_schedules.sql in PostgreSQL's dialect. `next_at`
-- is the next slot not yet fired or skipped; every node's maintainer fires the due ones and
-- moves `next_at` on with a guarded update. The fired task's idempotency key is the slot, so
-- two nodes firing one slot store one task.

CREATE TABLE schedules (
    name         text    PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    cron         text    NOT NULL,
    timezone     text    NOT NULL,
    queue        text    NOT NULL,
    task         text    NOT NULL,
    overlap      text    NOT NULL CHECK (overlap IN ('skip', 'allow')),
    catch_up     text    NOT NULL CHECK (catch_up IN ('latest', 'none')),
    paused       boolean NOT NULL DEFAULT false,
    next_at      bigint  NOT NULL,
    last_task_id text,
    last_slot_at bigint,
    created_at   bigint  NOT NULL,
    updated_at   bigint  NOT NULL,
    CHECK ((last_task_id IS NULL) = (last_slot_at IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_at) WHERE NOT paused;
