-- 0011: running tasks leave `tasks_state` (docs/benchmarks.md, "Running tasks out of the
-- state index").
--
-- Every claim gave a task a row version whose `running` entry went into `tasks_state` as into
-- every index, and the end gave it another. Without `running` entries a claim's new version
-- adds none here. Running tasks are still found by state through `tasks_lease`, which holds
-- exactly them (a lease and its expiry are set exactly while a task runs: the CHECKs of
-- 0001): a listing of running tasks names `lease_expires_at IS NOT NULL` too and sorts by id;
-- there are as many as the workers and remote leases, not the backlog. It also takes the
-- `running` entries out of the reach of an end's state guard (see 0009).
DROP INDEX tasks_state;
CREATE INDEX tasks_state ON tasks (state, id) WHERE state <> 'running';
