-- 0005: the W3C trace context a task was submitted under (docs/operations.md, "Traces").
-- `traceparent` names the span every attempt of the task is a child of (the submit's span,
-- or the caller's when taskd exports no spans); `tracestate` is the caller's, passed on as it
-- came. Both NULL: the task is not traced. Nullable, so existing rows need no backfill.

ALTER TABLE tasks ADD COLUMN traceparent TEXT;
ALTER TABLE tasks ADD COLUMN tracestate  TEXT;
