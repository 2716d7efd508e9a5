-- 0011: running tasks leave `tasks_state` (docs/benchmarks.md, "Running tasks out of the
-- state index").
--
-- Every claim moved a task's entry in `tasks_state` from `queued` to `running`, and every end
-- moved it again, from `running` to its final state: four index writes per task, in three
-- places of the index, on the writer's path. Without `running` entries a claim only deletes
-- and an end only inserts. Running tasks are still found by state through `tasks_lease`,
-- which holds exactly them (a lease is set exactly while a task runs: the CHECKs of 0001):
-- a listing of running tasks reads it and sorts by id; there are as many as the workers and
-- remote leases, not the backlog.
--
-- A listing of another state names `state <> 'running'` as well, the term SQLite needs to
-- see before it uses a partial index (store/sql.rs, `task_list`).
DROP INDEX tasks_state;
CREATE INDEX tasks_state ON tasks (state, id) WHERE state <> 'running';
