-- 0012: the statement triggers that pair each changed row with its old version join by hash
-- (docs/benchmarks.md, "PostgreSQL drain: the triggers' joins").
--
-- `taskd_task_events` and `taskd_notify_tasks` join `new_rows` to `old_rows` on `id`. PL/pgSQL
-- plans a query without parameters once per connection and keeps that plan, and the planner
-- sizes a transition table by the rows it holds at that first run. A connection whose first
-- UPDATE changed one row (a heartbeat, a single end) kept a nested loop: every later batch
-- of n rows compared n × n pairs, 65,536 for a claim or a batch of ends of 256, four times
-- per statement. With nested loops off inside these two functions the planner takes a hash
-- join at any size; for a single row that costs a few microseconds more. A drain of 100,000
-- tasks at --workers 256 went from ~19,000 to ~22,500/s.
--
-- A later `CREATE OR REPLACE` of either function drops this setting unless it repeats it
-- (`SET enable_nestloop = off` in the definition); the suite checks that every function that
-- joins `old_rows` has it.
ALTER FUNCTION taskd_task_events() SET enable_nestloop = off;
ALTER FUNCTION taskd_notify_tasks() SET enable_nestloop = off;
