-- 0010: each event is written once, numbered as it is inserted (docs/benchmarks.md,
-- "PostgreSQL drain: events written once").
--
-- Since 0002 the triggers inserted events without a `seq` and every reader first numbered
-- what had committed (`taskd_sequence_events`): an UPDATE of every event, into every index of
-- the table, ~7 µs of the database's time per event (two events per drained task). It gave
-- the log its reading rule: a reader that sees an event sees every event with a smaller
-- `seq`. Here is another way to the same rule, without the second write:
--
-- - A writer takes `seq` from the sequence as it inserts the event (in id order within a
--   statement), after taking an advisory lock of its own, keyed by its backend's pid, that it
--   holds until its transaction ends. Writers never wait for each other: each has its own key.
-- - A reader first asks for the horizon (`taskd_events_writers`): it reads the sequence's
--   last value H, then waits for every writer that holds its lock at that moment. A writer
--   that took a seq ≤ H took its lock before, so it is among them, or has ended. When the
--   wait is over, every seq ≤ H is committed or rolled back for good, and the reader reads
--   `seq > after AND seq <= H` in a statement of its own (a snapshot taken after the wait).
--
-- What a reader sees is what it saw before: every event in `seq` order, none skipped. What
-- differs: a rolled-back change leaves a gap in `seq` (its numbers are not reused, as
-- before), and a reader waits for the transactions that write events at that moment (the
-- database's commit of a claim or a batch of ends, milliseconds) where it used to wait for
-- the numbering's lock. A writer may wait for a reader only while the reader's lock on its key
-- is granted and not yet released: the end of one statement.
--
-- During a rolling upgrade, a node of an older version still calls `taskd_sequence_events`
-- before it reads: that now waits for the horizon and numbers nothing, and the older node
-- reads without the upper bound, so its live streams may, rarely, skip an event that commits
-- late (a stream that resumes from the log later gets it).

-- Events committed but not numbered yet are numbered now, as before. The lock first: a node
-- of an older version writing meanwhile waits for this migration's commit, so none of its
-- events is left unnumbered (after the commit, an insert without a seq fails, NOT NULL below,
-- rather than leave an event no reader would return).
LOCK TABLE task_events IN EXCLUSIVE MODE;
SELECT taskd_sequence_events(2147483647);

-- The writers' locks: first key 1702260340 ("evnt" in ASCII), second key the writer's pid.
CREATE OR REPLACE FUNCTION taskd_task_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    -- Before the first seq is taken; held until this transaction ends (see the header).
    PERFORM pg_advisory_xact_lock(1702260340, pg_backend_pid());
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_events (seq, task_id, queue, kind, state, attempt, at)
            SELECT nextval('task_events_seq'), id, queue, kind, state, attempt, now_ms
            FROM new_rows ORDER BY id;
    ELSE
        INSERT INTO task_events (seq, task_id, queue, kind, state, attempt, progress, at)
            SELECT nextval('task_events_seq'), n.id, n.queue, n.kind, n.state, n.attempt,
                   CASE WHEN o.progress IS DISTINCT FROM n.progress THEN n.progress END, now_ms
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE o.state IS DISTINCT FROM n.state OR o.attempt IS DISTINCT FROM n.attempt
               OR o.progress IS DISTINCT FROM n.progress
            ORDER BY n.id;
    END IF;
    RETURN NULL;
END $$;

-- The horizon: the sequence's last value, and the writers that hold their locks as it is
-- read (their pids, the second keys). Every event up to the horizon is committed or rolled
-- back for good once each of those writers' transactions has ended: taskd waits for each
-- in a statement of its own (`SELECT pg_advisory_xact_lock_shared(1702260340, pid)`, granted
-- when that writer ends, released as the statement ends), so a reader holds at most the key
-- it waits for and never stands in a circle of waits; then it reads `seq <= ` the horizon.
CREATE FUNCTION taskd_events_writers(OUT horizon bigint, OUT writers integer[])
LANGUAGE plpgsql AS $$
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO horizon
        FROM task_events_seq;
    SELECT coalesce(array_agg(l.objid::integer), '{}') INTO writers FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.classid = 1702260340::oid AND l.objsubid = 2
          AND l.mode = 'ExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
END $$;

-- For nodes of an older version (see the header): nothing is left to number; it waits for
-- the horizon's writers in one statement.
CREATE OR REPLACE FUNCTION taskd_sequence_events(batch integer) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1702260340, writer)
        FROM unnest((taskd_events_writers()).writers) AS writer;
    RETURN 0;
END $$;

-- Every event has its seq from its insert on; the index of unnumbered events is empty for good.
DROP INDEX task_events_unnumbered;
ALTER TABLE task_events ALTER COLUMN seq SET NOT NULL;
