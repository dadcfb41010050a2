"""A wsedge backend that consumes the Redis stream of --backend-stream in a consumer group.

Every forwarded message, rpc and lifecycle event is one stream entry with one field, `item`
(the same JSON object the HTTP bridge batches; see src/docs/backend.md). Entries are
acknowledged (XACK) only once handled: a consumer that dies leaves them pending for another
(XAUTOCLAIM), so nothing is lost while the backend is down or restarting.

This consumer answers rpc `math.add` through POST /ws/connections/{id}/rpc and prints the
rest. Run it beside a server started with --redis and --backend-stream:
    pip install redis
    python3 scripts/examples/stream_consumer.py --redis redis://127.0.0.1:6379 \
        --stream wsedge:inbox --group workers --wsedge http://127.0.0.1:8080 --admin-token "$ADMIN"
"""

import argparse
import json
import socket
import urllib.request

import redis


def answer(wsedge: str, token: str, item: dict, result) -> None:
    body = {"message_id": item["message_id"], "result": result}
    req = urllib.request.Request(
        f"{wsedge}/ws/connections/{item['connection_id']}/rpc",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, timeout=5).close()
    except urllib.error.HTTPError as e:
        # 404: the rpc timed out or its connection closed; nothing to retry.
        print("answer not delivered:", e.code, flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", default="redis://127.0.0.1:6379")
    p.add_argument("--stream", default="wsedge:inbox")
    p.add_argument("--group", default="workers")
    p.add_argument("--consumer", default=socket.gethostname())
    p.add_argument("--wsedge", default="http://127.0.0.1:8080")
    p.add_argument("--admin-token", default="")
    a = p.parse_args()
    r = redis.Redis.from_url(a.redis)
    try:
        r.xgroup_create(a.stream, a.group, id="0", mkstream=True)
    except redis.ResponseError:
        pass  # the group exists
    # First what this consumer left pending before a restart, then new entries.
    start = "0"
    while True:
        got = r.xreadgroup(a.group, a.consumer, {a.stream: start}, count=100, block=1000)
        entries = got[0][1] if got else []
        if start == "0" and not entries:
            start = ">"
            continue
        for entry_id, fields in entries:
            item = json.loads(fields[b"item"])
            if item["kind"] == "rpc" and item["method"] == "math.add":
                answer(a.wsedge, a.admin_token, item, sum(item["params"] or []))
            else:
                print(item["kind"], item.get("type", ""), item.get("user_id"), flush=True)
            r.xack(a.stream, a.group, entry_id)


if __name__ == "__main__":
    main()
