-- 0005: the W3C trace context a task was submitted under, as
-- migrations/sqlite/0005_traceparent.sql in PostgreSQL's dialect. `traceparent` names the
-- span every attempt of the task is a child of; `tracestate` is the caller's, passed on as it
-- came. Both NULL: the task is not traced. Adding a nullable column rewrites no rows.

ALTER TABLE tasks ADD COLUMN traceparent text;
ALTER TABLE tasks ADD COLUMN tracestate  text;
