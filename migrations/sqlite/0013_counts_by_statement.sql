-- 0013: a claim, or a batch of successes, counts what it moved once per queue and state,
-- not twice per row.
--
-- `tasks_count_update` wrote `queue_counts` twice for every task a statement moved: an
-- UPDATE of the old state's count and an upsert of the new one's, about 14,000 of the ~175,000
-- instructions the writer spends per task of a drain. While `counts_by_statement.active` is 1
-- the trigger stands aside, and the statement's caller adds up the rows its RETURNING gave
-- and writes each queue's counts once (store/sqlite/counts.rs). The flag is set and cleared
-- around that one statement, inside the writer's transaction: a failure in between rolls
-- back with the job, flag included. Any other write of `state`, taskd's or a person's
-- with the sqlite3 shell, finds it 0 and is counted by the trigger as before.
CREATE TABLE counts_by_statement (
    active INTEGER NOT NULL CHECK (active IN (0, 1))
);
INSERT INTO counts_by_statement (active) VALUES (0);

DROP TRIGGER tasks_count_update;
CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks
    WHEN OLD.state <> NEW.state AND (SELECT active FROM counts_by_statement) = 0 BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO queue_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
