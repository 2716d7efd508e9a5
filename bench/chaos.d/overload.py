"""Overload against taskd (bench/chaos): RATE submits a second for SECONDS over CONNS keep-alive
connections, ignoring Retry-After, against a server that drains far fewer. Samples the server's
RSS (PID) every 100 ms, waits SETTLE s after the load, then checks every accepted id is stored.

Usage: overload.py HOST PORT PID RATE SECONDS CONNS SETTLE
Prints one line: sent offered/s accepted 429s 429s-with-Retry-After 5xx other conn-errors
retry-after-min retry-after-max retry-after-range-after-5s rss-start-kib rss-peak-kib rss-end-kib drained/s lost.
"""
import asyncio, json, sys, time, urllib.request

host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rate, seconds, conns, settle = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
BODY = json.dumps({"kind": "sleep", "input": {"ms": 100}}).encode()
REQUEST = (f"POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(path):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def main():
    stats = {"sent": 0, "accepted": 0, "429": 0, "429ra": 0, "5xx": 0, "other": 0, "errors": 0}
    retry_after, ids, rss = [], [], {"start": rss_kib(), "peak": 0}
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            rss["peak"] = max(rss["peak"], rss_kib())
            await asyncio.sleep(0.1)

    start = time.monotonic()
    end = start + seconds
    interval = conns / rate

    async def client(n):
        reader = writer = None
        k = 0
        while True:
            at = start + (n / conns + k) * interval  # paced: this connection's k-th send
            k += 1
            if at >= end:
                break
            await asyncio.sleep(max(0, at - time.monotonic()))
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(REQUEST)
                stats["sent"] += 1
                status, headers, body = await asyncio.wait_for(read_response(reader), 10)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                stats["errors"] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if status in (200, 202):
                stats["accepted"] += 1
                ids.append(json.loads(body)["id"])
            elif status == 429:
                stats["429"] += 1
                if "retry-after" in headers:
                    stats["429ra"] += 1
                    retry_after.append((time.monotonic() - start, int(headers["retry-after"])))
            elif status >= 500:
                stats["5xx"] += 1
            else:
                stats["other"] += 1
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    _, before = get("/v1/queues/default")
    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(client(n) for n in range(conns)))
    elapsed = time.monotonic() - start
    _, after = await asyncio.to_thread(get, "/v1/queues/default")
    succeeded = lambda q: (q or {}).get("counts", {}).get("succeeded", 0)
    drained = (succeeded(after) - succeeded(before)) / elapsed
    await asyncio.sleep(settle)
    done.set()
    await sampler
    rss_end = rss_kib()
    lost = 0
    for id_ in ids:
        status, _ = await asyncio.to_thread(get, f"/v1/tasks/{id_}")
        lost += status == 404
    values = [v for _, v in retry_after]
    later = [v for t, v in retry_after if t >= 5]  # once the drain rate has a few seconds of data
    ra_min = min(values) if values else "-"
    ra_max = max(values) if values else "-"
    ra_later = f"{min(later)}-{max(later)}" if later else "-"
    print(stats["sent"], round(stats["sent"] / elapsed), stats["accepted"], stats["429"], stats["429ra"],
          stats["5xx"], stats["other"], stats["errors"], ra_min, ra_max, ra_later, rss["start"], rss["peak"],
          rss_end, f"{drained:.1f}", lost)


asyncio.run(main())
