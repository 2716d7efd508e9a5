#!/usr/bin/env python3
"""A remote taskd worker in plain Python (standard library only).

Leases tasks from a remote queue, runs `handle` on each input, and completes or fails it
under its lease. Usage: worker.py [--url http://127.0.0.1:8080] [--queue py]
"""
import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


def call(base, path, body):
    """POSTs JSON; returns (status, parsed body or None)."""
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=70) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except (urllib.error.URLError, OSError) as error:  # the server is down or unreachable
        return None, {"detail": str(error)}


def handle(task):
    """The work itself: sum the numbers of the input, or echo it."""
    numbers = task["input"].get("numbers") if isinstance(task["input"], dict) else None
    if numbers is not None:
        return {"sum": sum(numbers), "worker": "python"}
    return {"echo": task["input"], "worker": "python"}


def heartbeat_until(done, base, task, lease_ms):
    """Extends the lease every third of it until `done` is set."""
    while not done.wait(lease_ms / 3000):
        call(base, f"/v1/tasks/{task['id']}/heartbeat",
             {"lease": task["lease"], "lease_ms": lease_ms})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("TASKD_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--queue", default=os.environ.get("TASKD_QUEUE", "py"))
    parser.add_argument("--lease-ms", type=int, default=30000)
    args = parser.parse_args()
    lease = {"worker_id": f"python-{os.getpid()}", "max_tasks": 1,
             "lease_ms": args.lease_ms, "wait_ms": 30000}
    print(f"worker leasing from {args.url} queue {args.queue}", file=sys.stderr)
    pause = 1
    while True:
        status, body = call(args.url, f"/v1/queues/{args.queue}/lease", lease)
        if status == 204:
            continue  # nothing came within wait_ms; ask again (the long-poll paced us)
        if status != 200:
            # A refusal (409 queue_not_remote, 401, 403, 5xx) or no server answers at once:
            # say why, and back off (1 s doubling to 60 s) instead of asking in a busy loop.
            detail = (body or {}).get("detail", "")
            print(f"lease refused ({status}): {detail}; retrying in {pause} s", file=sys.stderr)
            time.sleep(pause)
            pause = min(pause * 2, 60)
            continue
        pause = 1
        for task in body["tasks"]:
            done = threading.Event()
            threading.Thread(target=heartbeat_until, daemon=True,
                             args=(done, args.url, task, args.lease_ms)).start()
            try:
                result = handle(task)
                call(args.url, f"/v1/tasks/{task['id']}/complete",
                     {"lease": task["lease"], "result": result})
            except Exception as error:  # the attempt fails; taskd retries it
                call(args.url, f"/v1/tasks/{task['id']}/fail",
                     {"lease": task["lease"], "retryable": True,
                      "error": {"type": type(error).__name__, "message": str(error)}})
            finally:
                done.set()


if __name__ == "__main__":
    main()
