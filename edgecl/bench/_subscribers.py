"""Idle Subscribe streams for ``edgecl bench cloud --subscribers N``, held from their own
process (so the streams' client costs none of the measured replica's or uploaders' CPU).

``python -m edgecl.bench._subscribers TARGET KEY SHA N``: registers N devices, then obeys
stdin, one command per line: ``open`` opens one Subscribe stream per device and answers
``{"held": n, "failed": k, "codes": {...}}`` once they settled; ``close`` cancels them and
answers ``{"closed": n}``; end of input exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

#: Streams per connection (HTTP/2 streams share one connection; several spread the load).
PER_CHANNEL = 100
#: Seconds an opened stream must stay open without an error to count as held.
SETTLE_S = 3.0


async def _register(stubs: list[Any], pb: Any, key: str, sha: str, n: int) -> list[str]:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with sem:
            resp = await stubs[i % len(stubs)].Register(pb.RegisterRequest(
                device_id=f"bench-sub-{i}", enrollment_key=key, encoder_sha256=sha),
                timeout=60)
            return str(resp.token)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _hold(call: Any, codes: dict[str, int]) -> None:
    import grpc

    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
    except asyncio.CancelledError:
        pass


async def main(target: str, key: str, sha: str, n: int) -> None:
    import grpc

    from edgecl._proto import edgecl_pb2 as pb
    from edgecl._proto import edgecl_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, -(-n // PER_CHANNEL)))]
    stubs = [pb_grpc.EdgeCloudStub(c) for c in channels]
    tokens = await _register(stubs, pb, key, sha, n)
    print(json.dumps({"registered": len(tokens)}), flush=True)
    loop = asyncio.get_running_loop()
    calls: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    codes: dict[str, int] = {}
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "open":
            codes.clear()
            calls = [stubs[i % len(stubs)].Subscribe(
                pb.SubscribeRequest(device_id=f"bench-sub-{i}"),
                metadata=(("authorization", f"Bearer {t}"),)) for i, t in enumerate(tokens)]
            tasks = [asyncio.create_task(_hold(c, codes)) for c in calls]
            await asyncio.sleep(SETTLE_S)
            alive = sum(not t.done() for t in tasks)
            print(json.dumps({"held": alive, "failed": len(tasks) - alive, "codes": codes}),
                  flush=True)
        elif line == "close":
            for c in calls:
                c.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            print(json.dumps({"closed": len(calls)}), flush=True)
            calls, tasks = [], []
    for c in channels:
        await c.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
