-- 0006: dependencies between tasks. The same as migrations/sqlite/0006_dependencies.sql, in
-- PostgreSQL's dialect: a task may name parents and wait for them in the state `waiting`;
-- a child cancelled because a parent failed keeps why in `error` (`dependency_failed`).
-- The constraints are replaced by name (the names PostgreSQL gave 0001's), each in place.

ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check CHECK (state IN
    ('waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'));

-- Was: error set <=> failed. A failed task still has its error; a cancelled one may have one.
ALTER TABLE tasks DROP CONSTRAINT tasks_check5;
ALTER TABLE tasks ADD CONSTRAINT tasks_error_check
    CHECK ((state <> 'failed' OR error IS NOT NULL)
           AND (error IS NULL OR state IN ('failed', 'cancelled')));

ALTER TABLE tasks
    ADD COLUMN parents      text,      -- JSON array of the parents' ids, in the order named
    ADD COLUMN after_policy text CHECK (after_policy IN
        ('all_succeeded', 'all_finished', 'any_succeeded')),
    ADD COLUMN input_from   uuid,      -- the parent whose result becomes the input
    ADD CONSTRAINT tasks_parents_check CHECK ((parents IS NULL) = (after_policy IS NULL)),
    ADD CONSTRAINT tasks_waiting_check CHECK (state <> 'waiting' OR parents IS NOT NULL),
    ADD CONSTRAINT tasks_input_from_check CHECK (input_from IS NULL OR parents IS NOT NULL);

-- Who waits for whom, while the child waits: a row lives from the child's insert until it
-- leaves `waiting` (released or cancelled), so the end of a parent finds its waiting
-- children by index, and a parent with a row cannot be deleted.
CREATE TABLE task_parents (
    parent_id uuid NOT NULL,
    child_id  uuid NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX task_parents_child ON task_parents (child_id);
