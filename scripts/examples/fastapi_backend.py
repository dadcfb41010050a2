"""A wsedge backend in FastAPI: what the edge forwards, and the answers it sends back.

wsedge POSTs batches here (see src/docs/backend.md): client messages of the types listed in
--forward, rpcs, lifecycle events, and (with --auth-proxy) handshakes to let in. This backend:

- lets in a cookie `session=<user>` as that user (rooms: lobby), refuses anything else (401);
- answers rpc `math.add` (the sum of params) in the batch response, and rpc `tasks.later`
  afterwards through POST /ws/connections/{id}/rpc (as a slow job would);
- relays `chat` messages to their room through POST /ws/rooms/{room}/messages, skipping the
  sender;
- answers `upload.cancel` with an `upload.cancelled` message to that one connection
  (POST /ws/connections/{id}/messages);
- counts lifecycle events (GET /stats shows them).

Run it beside a server:
    pip install fastapi uvicorn
    python3 scripts/examples/fastapi_backend.py --port 9000 \
        --wsedge http://127.0.0.1:8080 --admin-token "$ADMIN"
    wsedge serve --jwt-secret S --backend-url http://127.0.0.1:9000/wsedge/events \
        --forward chat,upload.cancel,rpc --backend-events all \
        --auth-proxy http://127.0.0.1:9000/wsedge/auth
"""

import argparse
import json
import urllib.request
from collections import Counter

import uvicorn
from fastapi import BackgroundTasks, FastAPI

app = FastAPI()
WSEDGE = {"url": "http://127.0.0.1:8080", "token": ""}
EVENTS: Counter = Counter()


def admin(method: str, path: str, body: dict) -> int:
    """Calls wsedge's admin API; returns the HTTP status."""
    req = urllib.request.Request(
        WSEDGE["url"] + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": "Bearer " + WSEDGE["token"], "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def answer_later(item: dict) -> None:
    """A slow job's answer, after the batch was acknowledged."""
    body = {"message_id": item["message_id"], "result": {"done": item["params"]}}
    admin("POST", f"/ws/connections/{item['connection_id']}/rpc", body)


@app.post("/wsedge/events")
def events(batch: dict, background: BackgroundTasks) -> dict:
    results = []
    for item in batch["items"]:
        kind = item["kind"]
        if kind == "rpc" and item["method"] == "math.add":
            results.append({"message_id": item["message_id"], "result": sum(item["params"] or [])})
        elif kind == "rpc" and item["method"] == "tasks.later":
            background.add_task(answer_later, item)
        elif kind == "rpc":
            error = {"code": "unknown_method", "message": f"no method {item['method']}"}
            results.append({"message_id": item["message_id"], "error": error})
        elif kind == "message" and item["type"] == "chat":
            data = item["data"] or {}
            message = {
                "type": "chat",
                "data": {"text": data.get("text"), "from": item["user_id"]},
                "exclude_user": item["user_id"],
            }
            admin("POST", f"/ws/rooms/{data.get('room', 'lobby')}/messages", message)
        elif kind == "message" and item["type"] == "upload.cancel":
            upload = (item["data"] or {}).get("upload_id")
            message = {"type": "upload.cancelled", "data": {"upload_id": upload}}
            admin("POST", f"/ws/connections/{item['connection_id']}/messages", message)
        else:
            EVENTS[kind] += 1
    return {"results": results}


@app.post("/wsedge/auth")
def auth(batch: dict) -> dict:
    results = []
    for item in batch["items"]:
        cookie = item["headers"].get("cookie", "")
        user = cookie.removeprefix("session=") if cookie.startswith("session=") else ""
        if user.isalnum():
            result = {"user_id": user, "name": user.title(), "rooms": ["lobby"]}
            results.append({"message_id": item["message_id"], "result": result})
        else:
            refusal = {"status": 401, "message": "no session"}
            results.append({"message_id": item["message_id"], "error": refusal})
    return {"results": results}


@app.get("/stats")
def stats() -> dict:
    return dict(EVENTS)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--wsedge", default="http://127.0.0.1:8080")
    p.add_argument("--admin-token", default="")
    a = p.parse_args()
    WSEDGE.update(url=a.wsedge, token=a.admin_token)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")
