-- 0009: a drain writes and sends less per task (docs/benchmarks.md, "PostgreSQL drain: where
-- the time goes"): one `finished` wake-up per 200 ended tasks instead of one per task, event
-- rows without a primary key, and an index of leases that the ends of attempts cannot take.
--
-- Wake-ups. 0001/0002 sent `finished:<id>` for every task a statement ended: a batch of 256 ends queued
-- 256 notifications at commit, and every listening node, this one included, read each of
-- them (the sender's own node then drops them). Now the ids of one statement go together,
-- comma-separated, `finished:<id>,<id>,…`, at most 200 to a notification (a payload holds
-- fewer than 8,000 bytes; 200 ids take 7,400). A node reads every id of the list as before
-- (store/postgres/signals.rs). A node of an older version reads such a list as no id and
-- ignores it: during a rolling upgrade its waiters on tasks that end elsewhere answer at
-- their own deadline instead of at once (no wrong answer, a late one).
--
-- `work` and `cancel:<id>` are unchanged: `work` is already one per statement, and a cancel
-- of a running task is one task at a time.

CREATE OR REPLACE FUNCTION taskd_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('taskd', 'work')
            WHERE EXISTS (SELECT 1 FROM new_rows WHERE state IN ('queued', 'scheduled'));
        PERFORM pg_notify('taskd', 'finished:' || string_agg(id::text, ','))
            FROM (SELECT id, (row_number() OVER () - 1) / 200 AS chunk FROM new_rows
                  WHERE state IN ('succeeded', 'failed', 'cancelled')) AS ended
            GROUP BY chunk;
    ELSE
        PERFORM pg_notify('taskd', 'work')
            WHERE EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o USING (id)
                          WHERE n.state IN ('queued', 'scheduled') AND n.state <> o.state);
        PERFORM pg_notify('taskd', 'finished:' || string_agg(id::text, ','))
            FROM (SELECT n.id, (row_number() OVER () - 1) / 200 AS chunk
                  FROM new_rows n JOIN old_rows o USING (id)
                  WHERE n.state IN ('succeeded', 'failed', 'cancelled')
                    AND n.state <> o.state) AS ended
            GROUP BY chunk;
        PERFORM pg_notify('taskd', 'cancel:' || n.id)
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.state = 'running' AND n.cancel_requested AND NOT o.cancel_requested;
    END IF;
    RETURN NULL;
END $$;

-- Event rows. Every event is written twice: inserted by a trigger, then numbered
-- (`taskd_sequence_events`), and the numbering is not a HOT update (`seq` is indexed), so each
-- write also adds an entry to every index of the table. The primary key on `id` served only
-- the numbering's join back to the rows it picked; the numbering now joins on the rows'
-- physical addresses (`ctid`, stable inside its statement), so the key goes, and with it one
-- index entry per event written and one per event numbered. `id` stays: it is the insert
-- order the numbering follows (`task_events_unnumbered`).
ALTER TABLE task_events DROP CONSTRAINT task_events_pkey;

CREATE OR REPLACE FUNCTION taskd_sequence_events(batch integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    numbered bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(127961897067523);
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO base
        FROM task_events_seq;
    UPDATE task_events e SET seq = base + next.position
        FROM (SELECT ctid AS row, row_number() OVER (ORDER BY id) AS position
              FROM task_events WHERE seq IS NULL ORDER BY id LIMIT batch) AS next
        WHERE e.ctid = next.row;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        -- Not rolled back with the transaction: a failed numbering leaves a gap, never a reuse.
        PERFORM setval('task_events_seq', base + numbered);
    END IF;
    RETURN numbered;
END $$;

-- The index of leases by expiry (the rescue's) was partial on `state = 'running'`. The
-- statements that move running tasks by id (an end, a renewal, a progress report) guard
-- `state = 'running'`, so the planner, counting few running tasks, could read all of this
-- index (or all `running` entries of `tasks_state`) in a bitmap scan instead of probing for
-- the ids: every entry of every dead row version a claim left since the last vacuum, which a
-- bitmap scan never marks dead. A drain of 20,000 tasks spent most of its database time
-- there. The statements now name their ids as `id = ANY($1)` too (an index condition of
-- `tasks_state` and of the key), and this index takes the same rows (the CHECKs of 0001 tie a
-- lease, its expiry and `running` together) under a predicate a state guard does not imply:
-- the rescue (`lease_expires_at < $1`) still uses it, an end no longer can.
DROP INDEX tasks_lease;
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
