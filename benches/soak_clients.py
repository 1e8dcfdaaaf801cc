"""The misbehaving clients of benches/soak.sh: for DURATION seconds, every
second, a few raw connections to the gateway on 127.0.0.1:PORT that do what
a broken or hostile client does, so the soak sees whether any of them leaks
memory or a file descriptor:

  aborted    a partial request head, then close (the gateway logs an error:
             these also exercise its log-flood summary)
  drip       a head dripped a byte every 0.5 s, given up after 6 s
  stall      a partial head, then nothing: the gateway's header_timeout
             (5 s in the soak config) must close it; given up after 8 s
  slow_body  a POST whose body stops after a few bytes: body_timeout (2 s)
             must answer 408; given up after 6 s
  abandon    a whole request to a slow service (?delay_ms=1000), closed
             after 200 ms, while the gateway waits on the service

At most MAX_OPEN connections are open at once (a start past it is skipped
and counted); every wait is bounded. Prints one JSON object: for each kind,
how many there were and how each ended.

    python3 benches/soak_clients.py PORT DURATION TOKEN
"""

import asyncio
import collections
import json
import sys
import time

MAX_OPEN = 64
# Connections of each kind started every second.
PER_SECOND = {"aborted": 5, "drip": 1, "stall": 1, "slow_body": 2, "abandon": 2}

outcomes = collections.defaultdict(collections.Counter)
open_now = 0


async def connect(port):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)


async def status_or_eof(reader, wait):
    """The status code the gateway answers, "eof" when it closes without
    one, "gave_up" when neither happens within `wait` seconds."""
    try:
        line = await asyncio.wait_for(reader.readline(), wait)
    except asyncio.TimeoutError:
        return "gave_up"
    if not line:
        return "eof"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "garbled"


async def aborted(port, token):
    _, writer = await connect(port)
    writer.write(b"GET /users/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Par")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()  # a reset, as a client that crashed
    return "closed"


async def drip(port, token):
    reader, writer = await connect(port)
    head = b"GET /users/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: "
    writer.write(head)
    deadline = time.monotonic() + 6
    try:
        while time.monotonic() < deadline:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.5)
            if reader.at_eof():
                return "eof"
        return "gave_up"
    finally:
        writer.close()


async def stall(port, token):
    reader, writer = await connect(port)
    writer.write(b"GET /users/me HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    try:
        return await status_or_eof(reader, 8)
    finally:
        writer.close()


async def slow_body(port, token):
    reader, writer = await connect(port)
    writer.write(
        b"POST /users/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 64\r\n\r\n"
        b'{"name":'
    )
    await writer.drain()
    try:
        return await status_or_eof(reader, 6)
    finally:
        writer.close()


async def abandon(port, token):
    reader, writer = await connect(port)
    writer.write(
        b"GET /products/2?delay_ms=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    return "closed"


KINDS = {"aborted": aborted, "drip": drip, "stall": stall,
         "slow_body": slow_body, "abandon": abandon}


async def one(kind, port, token):
    global open_now
    try:
        outcome = await asyncio.wait_for(KINDS[kind](port, token), 12)
    except asyncio.TimeoutError:
        outcome = "timeout"
    except OSError as e:
        outcome = "error:" + type(e).__name__
    finally:
        open_now -= 1
    outcomes[kind][outcome] += 1


async def main(port, duration, token):
    global open_now
    tasks = set()
    start = time.monotonic()
    for second in range(duration):
        for kind, n in PER_SECOND.items():
            for _ in range(n):
                if open_now >= MAX_OPEN:
                    outcomes[kind]["skipped"] += 1
                    continue
                open_now += 1  # here, not in the task: it starts later
                task = asyncio.create_task(one(kind, port, token))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        await asyncio.sleep(max(0, start + second + 1 - time.monotonic()))
    if tasks:
        # Each connection is bounded at 12 s; nothing is left behind.
        await asyncio.wait(tasks, timeout=15)
    print(json.dumps({kind: {"total": sum(c.values()), **c} for kind, c in outcomes.items()}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
