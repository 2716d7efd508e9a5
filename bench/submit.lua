-- wrk script for bench/run: POST one small echo task per request, then print one
-- machine-readable line that bench/run turns into a table row.
wrk.method = "POST"
wrk.path = "/v1/tasks"
wrk.body = '{"kind":"echo","input":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"

-- summary.errors.status counts responses with a status >= 400 (wrk's "Non-2xx or 3xx");
-- neither server answers 1xx or 3xx here, so it is the non-2xx count. Latencies are in us.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
