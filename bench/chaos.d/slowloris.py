"""Slowloris against taskd (bench/chaos): CONNS connections drip a request head, one byte every
DRIP seconds, and never finish it. Measures when the server closes each one, and whether a
normal client and /healthz are served while the flood holds its connections.

Usage: slowloris.py HOST PORT CONNS DRIP TIMEOUT SLACK
Prints one line: opened closed_in_time closed_late still_open first_close last_close
normal_status normal_ms health_status health_ms. Stops by itself after TIMEOUT + SLACK + 10 s.
"""
import asyncio, sys, time, urllib.request, json

host, port, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
drip, timeout, slack = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
HEAD = f"POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Slow: ".encode()
HEAD += b"a" * 1000  # never reaches the blank line that would end the head
deadline = time.monotonic() + timeout + slack + 10


async def one(closes):
    """One slow connection; appends the seconds from connect to the server's close (or None)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    opened = time.monotonic()

    async def drip_bytes():
        for byte in HEAD:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except OSError:
                return
            await asyncio.sleep(drip)

    dripper = asyncio.create_task(drip_bytes())
    try:
        left = deadline - time.monotonic()
        data = await asyncio.wait_for(reader.read(65536), left)
        # b"" is the server's close; anything else would be an answer the head never asked for.
        closes.append(time.monotonic() - opened if data == b"" else ("answered", data[:40]))
    except (asyncio.TimeoutError, TimeoutError):
        closes.append(None)
    except OSError:
        closes.append(time.monotonic() - opened)
    dripper.cancel()
    writer.close()
    return True


def normal_client():
    """A well-behaved submit and a health check, each timed; status 0 when it got no answer."""
    out = []
    for method, path, body in (("POST", "/v1/tasks", {"kind": "echo", "input": 1}),
                               ("GET", "/healthz", None)):
        started = time.monotonic()
        req = urllib.request.Request(f"http://{host}:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except Exception:
            status = 0
        out += [status, round((time.monotonic() - started) * 1000)]
    return out


async def main():
    closes = []
    tasks = [asyncio.create_task(one(closes)) for _ in range(conns)]
    await asyncio.sleep(1)  # the flood is open and dripping
    normal = await asyncio.to_thread(normal_client)
    opened = sum(await asyncio.gather(*tasks))
    times = [c for c in closes if isinstance(c, float)]
    in_time = sum(1 for c in times if c <= timeout + slack)
    answered = sum(1 for c in closes if isinstance(c, tuple))
    still_open = sum(1 for c in closes if c is None)
    first = f"{min(times):.1f}" if times else "-"
    last = f"{max(times):.1f}" if times else "-"
    print(opened, in_time, len(times) - in_time + answered, still_open, first, last, *normal)


asyncio.run(main())
