-- 0001: tasks, queue settings, and the per-queue counts that admission control reads.
-- The same tables, constraints and indexes as migrations/sqlite/0001_tasks.sql, in PostgreSQL's
-- dialect. Append-only: a later change is a new file with the next number, never an edit here.
-- Applied in one transaction under an advisory lock (see store/postgres/mod.rs).

CREATE TABLE tasks (
    id               uuid    PRIMARY KEY,          -- UUIDv7: byte order is time order
    queue            text    NOT NULL,
    kind             text    NOT NULL,
    -- JSON is kept as text, not jsonb, on purpose: jsonb refuses "\u0000" inside strings, which
    -- SQLite (and the API) accept; text keeps both backends' behaviour the same.
    input            text    NOT NULL,
    state            text    NOT NULL CHECK (state IN
        ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms  bigint  NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_cap_ms   bigint  NOT NULL CHECK (backoff_cap_ms >= 0),
    timeout_ms       bigint  CHECK (timeout_ms > 0), -- NULL: attempts run without a limit
    run_at           bigint,                        -- ms since the epoch; when scheduled is due
    labels           text    NOT NULL DEFAULT '{}', -- JSON object of strings
    cancel_requested boolean NOT NULL DEFAULT false,
    result           text,                          -- JSON, only when succeeded
    error            text,                          -- JSON {type, message}, only when failed
    errors           text    NOT NULL DEFAULT '[]', -- JSON [{attempt, type, message, at}]
    idempotency_key  text,
    request_hash     text,                          -- digest of the request that used the key
    lease            text,                          -- the running attempt's fencing token
    lease_expires_at bigint,                        -- ms since the epoch
    created_at       bigint  NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    -- The database arbitrates: these hold whatever the code of any node does.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((state = 'running') = (lease IS NOT NULL)),
    CHECK ((lease IS NULL) = (lease_expires_at IS NULL)),
    CHECK ((state = 'scheduled') = (run_at IS NOT NULL)),
    CHECK ((state = 'succeeded') = (result IS NOT NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL)),
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CHECK (attempt <= max_attempts OR state IN ('succeeded', 'failed', 'cancelled', 'queued'))
) WITH (
    -- Every task is updated several times (claim, renewals, finish): room on each page lets
    -- the new row version stay on its page.
    fillfactor = 90,
    -- A queue table churns: vacuum after 2% of it changed, not the default 20%, so dead
    -- versions do not pile up in the hot partial indexes (needs autovacuum = on).
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
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
-- One task per idempotency key; the key goes when its task is deleted. Inserts use
-- ON CONFLICT on it, so two nodes racing with one key cannot both insert.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Queue settings; a queue without a row has the defaults. Queues come into being on first use.
CREATE TABLE queues (
    name        text    PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    concurrency integer CHECK (concurrency >= 0),  -- NULL: only the global pool limits it
    max_queued  bigint  CHECK (max_queued >= 0),   -- NULL: the server's --max-queued
    updated_at  bigint  NOT NULL
);

-- How many tasks each queue holds in each state, kept by triggers in the same transaction as
-- the change, so admission control and the claim read a few rows instead of counting tasks.
--
-- Unlike SQLite's one row per (queue, state) updated in place, here every statement that
-- changes tasks *appends* its net change per (queue, state), and a reader sums. With several
-- nodes writing at once, a row updated in place would be a hot spot: every insert, claim and
-- finish of a queue would wait on its row lock until the holder commits, and two transactions
-- taking two such rows in opposite orders (a claim: queued then running; a rescue: running then
-- queued) would deadlock. Appends never wait for each other. The store folds the changes into
-- one total row per (queue, state) every second (`fold_counts`), which is safe beside writers:
-- the fold deletes only the rows its snapshot sees and inserts their sum in one transaction.
CREATE TABLE queue_counts (
    queue text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL   -- a change (+ or −), or a folded total
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
CREATE INDEX queue_counts_queue ON queue_counts (queue, state);

CREATE FUNCTION taskd_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO queue_counts (queue, state, n)
            SELECT queue, state, count(*) FROM new_rows GROUP BY queue, state;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO queue_counts (queue, state, n)
            SELECT queue, state, -count(*) FROM old_rows GROUP BY queue, state;
    ELSE
        -- Net per (queue, state): a statement that moved no task (a renewal) adds nothing.
        INSERT INTO queue_counts (queue, state, n)
            SELECT queue, state, sum(change) FROM (
                SELECT queue, state, -1 AS change FROM old_rows
                UNION ALL
                SELECT queue, state, 1 FROM new_rows
            ) AS changes
            GROUP BY queue, state HAVING sum(change) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_count_tasks();
CREATE TRIGGER tasks_count_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_count_tasks();
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_count_tasks();

-- Wake-ups for the other nodes, sent on channel `taskd` by the transaction that made the change
-- (so delivered only if and after it commits; PostgreSQL folds repeats within one transaction):
-- `work` when tasks became claimable or scheduled (submitted, promoted, released, rescued,
-- retried, or a queue's settings changed), `finished:<id>` when a task reached a terminal
-- state. Triggers, not the store's code, send them, so no write path can forget one.
CREATE FUNCTION taskd_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
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
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_notify_tasks();
CREATE TRIGGER tasks_notify_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_notify_tasks();

CREATE FUNCTION taskd_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskd', 'work');
    RETURN NULL;
END $$;

-- A resumed queue or a raised concurrency may make work claimable on every node.
CREATE TRIGGER queues_notify AFTER INSERT OR UPDATE ON queues
    FOR EACH STATEMENT EXECUTE FUNCTION taskd_notify_work();
