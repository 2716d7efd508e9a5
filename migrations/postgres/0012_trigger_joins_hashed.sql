-- 0012: the statement triggers that pair each changed row with its old version join by hash
-- (docs/benchmarks.md, "PostgreSQL drain: the triggers' joins").
--
-- `taskd_task_events` and `taskd_notify_tasks` join `new_rows` to `old_rows` on `id`. PL/pgSQL
-- plans a query without parameters once per connection and keeps that plan, and the planner
-- sizes a transition table by the rows it holds at that first run. A connection whose first
-- UPDATE changed one row (a heartbeat, a single end) kept a nested loop: every later batch
-- of n rows compared n × n pairs, 65,536 for a claim or a batch of ends of 256, four times
-- per statement. With nested loops off inside these two functions a drain of 100,000 tasks at
-- --workers 256 went from ~19,000 to ~22,500/s. The planner then took a merge join for some
-- of them, sorting both tables first; merge joins are off too, so every one of these joins is
-- a hash join, the same plan at any size (measured: no difference from the merge joins at
-- --workers 2048). For a single row a hash join costs a few microseconds more.
--
-- A later `CREATE OR REPLACE` of either function drops these settings unless it repeats them
-- (`SET enable_nestloop = off SET enable_mergejoin = off` in the definition); the suite
-- checks that every function that joins `old_rows` has them.
ALTER FUNCTION taskd_task_events() SET enable_nestloop = off;
ALTER FUNCTION taskd_task_events() SET enable_mergejoin = off;
ALTER FUNCTION taskd_notify_tasks() SET enable_nestloop = off;
ALTER FUNCTION taskd_notify_tasks() SET enable_mergejoin = off;
