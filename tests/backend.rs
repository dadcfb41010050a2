//! The backend bridge against a real HTTP backend (tests/common/backend.rs): forwarding with
//! identity, batching, rpc results and errors, retries, deadlines, refusals, bad answers,
//! lifecycle events, and the send-to-connection admin route.

mod common;

use std::time::Duration;

use common::backend::{Answer, Backend, results};
use common::*;
use serde_json::{Value, json};
use wsedge::config::{BackendConfig, Forwarding, LifecycleEvents};

fn bridged(
    backend: &Backend,
    forward: &str,
    events: &str,
    tune: impl FnOnce(&mut BackendConfig),
) -> wsedge::RunningServer {
    let mut c = config();
    let mut b = BackendConfig::from_url(&backend.url()).unwrap();
    tune(&mut b);
    c.backend = Some(b);
    c.forward = Forwarding::parse(forward).unwrap();
    c.backend_events = LifecycleEvents::parse(events).unwrap();
    c.rate_limit_messages = 0;
    start(c)
}

#[test]
fn forwarded_messages_carry_identity_and_arrive_once() {
    let backend = Backend::accepting();
    let server = bridged(&backend, "chat,upload.cancel", "", |_| {});
    let t = sign(json!({"sub": "ann", "exp": now() + 3600, "email": "a@x", "name": "Ann"}));
    let (mut ws, hello) = connect(server.local_addr(), &t);
    send_json(&mut ws, json!({"type": "chat", "id": "c1", "data": {"text": "hi"}}));
    let batch = backend.next();
    assert_eq!(batch["node_id"], server.handle().config().node_id.as_str());
    assert!(batch["batch_id"].as_str().is_some_and(|b| b.len() == 36));
    let item = &batch["items"][0];
    assert_eq!(item["kind"], "message");
    assert_eq!(item["type"], "chat");
    assert_eq!(item["id"], "c1");
    assert_eq!(item["data"], json!({"text": "hi"}));
    assert_eq!(item["user_id"], "ann");
    assert_eq!(item["connection_id"], hello["data"]["connection_id"]);
    assert_eq!(
        item["claims"],
        json!({"email": "a@x", "name": "Ann", "is_admin": false})
    );
    assert!(item["message_id"].as_str().is_some_and(|m| m.len() == 36));
    assert!(item["at"].as_str().is_some_and(|a| a.ends_with('Z')));
    // upload.cancel is checked first, then forwarded (not logged-and-dropped).
    send_json(&mut ws, json!({"type": "upload.cancel", "data": {}}));
    assert_eq!(next_of(&mut ws, "error")["data"]["code"], "INVALID_MESSAGE_FORMAT");
    send_json(&mut ws, json!({"type": "upload.cancel", "data": {"upload_id": "u9"}}));
    let item = backend.item(|i| i["type"] == "upload.cancel");
    assert_eq!(item["data"]["upload_id"], "u9");
    // Types not listed are still refused, and a structured id is refused.
    send_json(&mut ws, json!({"type": "task.update", "data": {}}));
    assert_eq!(next_of(&mut ws, "error")["data"]["code"], "INVALID_MESSAGE_TYPE");
    send_json(&mut ws, json!({"type": "chat", "id": {"a": 1}, "data": {}}));
    assert_eq!(next_of(&mut ws, "error")["data"]["code"], "INVALID_MESSAGE_FORMAT");
    let m = server.handle().stats();
    assert_eq!(m.backend.forwarded, 2);
    assert_eq!(m.backend.failed, 0);
    let (_, _, metrics) = http::request(server.local_addr(), "GET", "/metrics", Some(&admin_token("root")), None);
    for series in [
        "wsedge_backend_forwarded_total 2",
        "wsedge_backend_failed_total 0",
        "wsedge_backend_latency_seconds_count",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}

#[test]
fn messages_sent_while_a_request_is_in_flight_go_in_one_batch() {
    let (go, wait) = std::sync::mpsc::channel();
    let mut wait = Some(wait);
    let backend = Backend::start(move |_| match wait.take() {
        Some(w) => Answer::After(w, Box::new(Answer::Reply(200, "{}".into()))),
        None => Answer::Reply(200, "{}".into()),
    });
    let server = bridged(&backend, "chat", "", |_| {});
    let (mut ws, _) = connect(server.local_addr(), &token("bob"));
    for i in 0..200 {
        send_json(&mut ws, json!({"type": "chat", "data": {"n": i}}));
    }
    // The first message went alone; the other 199 wait behind it.
    assert_eq!(backend.next()["items"].as_array().unwrap().len(), 1);
    wait_until("199 queued", || server.handle().stats().backend.queue_depth == 200);
    go.send(()).unwrap();
    let second = backend.next();
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 199);
    let order: Vec<i64> = items.iter().map(|i| i["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(order, (1..200).collect::<Vec<_>>());
    wait_until("all forwarded", || server.handle().stats().backend.forwarded == 200);
    assert_eq!(server.handle().stats().backend.requests, 2);
}

#[test]
fn rpcs_get_results_and_errors_in_the_batch_response() {
    let backend = Backend::start(|batch| {
        let items = batch["items"].as_array().unwrap();
        let m = &items[0];
        match m["method"].as_str() {
            Some("add") => Answer::Reply(200, results(batch, |i| json!(i["params"]["a"].as_i64().unwrap() + 1))),
            Some("fail") => Answer::Reply(
                200,
                json!({"results": [{"message_id": m["message_id"], "error": {"code": "NOPE", "message": "no"}}]})
                    .to_string(),
            ),
            _ => Answer::Reply(200, "{}".into()),
        }
    });
    let server = bridged(&backend, "rpc", "", |_| {});
    let (mut ws, _) = connect(server.local_addr(), &token("cat"));
    send_json(
        &mut ws,
        json!({"type": "rpc", "id": 41, "data": {"method": "add", "params": {"a": 41}}}),
    );
    let r = next_of(&mut ws, "rpc.result");
    assert_eq!(
        (r["data"]["id"].clone(), r["data"]["result"].clone()),
        (json!(41), json!(42))
    );
    send_json(&mut ws, json!({"type": "rpc", "id": "f", "data": {"method": "fail"}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(e["data"]["code"], "RPC_ERROR");
    assert_eq!(e["data"]["id"], "f");
    assert_eq!(e["data"]["error"], json!({"code": "NOPE", "message": "no"}));
    // Malformed rpcs never reach the backend.
    send_json(&mut ws, json!({"type": "rpc", "data": {"method": "add"}}));
    assert_eq!(next_of(&mut ws, "error")["data"]["code"], "INVALID_MESSAGE_FORMAT");
    send_json(&mut ws, json!({"type": "rpc", "id": 1, "data": {"params": {}}}));
    assert_eq!(next_of(&mut ws, "error")["data"]["code"], "INVALID_MESSAGE_FORMAT");
}

#[test]
fn failed_requests_are_retried_with_the_same_message_ids() {
    let mut n = 0;
    let backend = Backend::start(move |batch| {
        n += 1;
        match n {
            1 => Answer::Reply(503, "{}".into()),
            2 => Answer::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n".to_vec()),
            _ => Answer::Reply(200, results(batch, |_| json!("ok"))),
        }
    });
    let server = bridged(&backend, "rpc", "", |_| {});
    let (mut ws, _) = connect(server.local_addr(), &token("dan"));
    send_json(&mut ws, json!({"type": "rpc", "id": 1, "data": {"method": "m"}}));
    let ids: Vec<Value> = (0..3)
        .map(|_| backend.next()["items"][0]["message_id"].clone())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let r = next_of(&mut ws, "rpc.result");
    assert_eq!(
        (r["data"]["result"].clone(), r["data"]["message_id"].clone()),
        (json!("ok"), ids[0].clone())
    );
    let m = server.handle().stats();
    assert_eq!(
        (m.backend.retried, m.backend.bad_responses, m.backend.forwarded),
        (2, 1, 1)
    );
}

#[test]
fn a_backend_that_never_answers_gives_timeouts_with_unknown_outcome() {
    let backend = Backend::start(|_| Answer::Stall);
    let server = bridged(&backend, "rpc,chat", "", |b| {
        b.timeout = Duration::from_millis(300);
        b.deadline = Duration::from_millis(700);
    });
    let (mut ws, _) = connect(server.local_addr(), &token("eve"));
    send_json(&mut ws, json!({"type": "rpc", "id": "slow", "data": {"method": "m"}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(e["data"]["code"], "RPC_TIMEOUT");
    assert_eq!(e["data"]["outcome"], "unknown");
    assert_eq!(e["data"]["id"], "slow");
    send_json(&mut ws, json!({"type": "chat", "id": 5, "data": {}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(
        (e["data"]["code"].clone(), e["data"]["outcome"].clone()),
        (json!("BACKEND_UNAVAILABLE"), json!("unknown"))
    );
    assert!(server.handle().stats().backend.failed >= 2);
}

#[test]
fn an_unreachable_backend_fails_senders_with_not_delivered() {
    // A port with nothing listening (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config();
    let mut b = BackendConfig::from_url(&format!("http://127.0.0.1:{port}/events")).unwrap();
    b.deadline = Duration::from_millis(500);
    c.backend = Some(b);
    c.forward = Forwarding::parse("chat").unwrap();
    let server = start(c);
    let (mut ws, _) = connect(server.local_addr(), &token("fay"));
    send_json(&mut ws, json!({"type": "chat", "id": "x", "data": {}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(e["data"]["code"], "BACKEND_UNAVAILABLE");
    assert_eq!(e["data"]["outcome"], "not_delivered");
    assert_eq!(e["data"]["id"], "x");
    assert!(e["data"]["message_id"].as_str().is_some());
}

#[test]
fn a_full_queue_refuses_at_once_and_a_4xx_rejects_the_batch() {
    let (go, wait) = std::sync::mpsc::channel();
    let mut wait = Some(wait);
    let backend = Backend::start(move |_| match wait.take() {
        Some(w) => Answer::After(w, Box::new(Answer::Reply(400, "{}".into()))),
        None => Answer::Reply(422, "{}".into()),
    });
    let server = bridged(&backend, "chat", "", |b| b.queue = 2);
    let (mut ws, _) = connect(server.local_addr(), &token("gus"));
    for i in 0..3 {
        send_json(&mut ws, json!({"type": "chat", "id": i, "data": {}}));
    }
    let e = next_of(&mut ws, "error");
    assert_eq!(
        (e["data"]["code"].clone(), e["data"]["id"].clone()),
        (json!("BACKEND_UNAVAILABLE"), json!(2))
    );
    assert_eq!(e["data"]["message"], "backend queue full");
    go.send(()).unwrap();
    for (id, status) in [(0, 400), (1, 422)] {
        let e = next_of(&mut ws, "error");
        assert_eq!(e["data"]["code"], "BACKEND_REJECTED");
        assert_eq!(
            (e["data"]["id"].clone(), e["data"]["status"].clone()),
            (json!(id), json!(status))
        );
    }
}

#[test]
fn lifecycle_events_arrive_in_order() {
    let backend = Backend::accepting();
    let server = bridged(&backend, "", "all", |_| {});
    let t = sign(json!({"sub": "hal", "exp": now() + 3600, "rooms": ["r1"]}));
    let (mut ws, hello) = connect(server.local_addr(), &t);
    let conn = hello["data"]["connection_id"].clone();
    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": ["system.notification", "nope"]}}),
    );
    next_of(&mut ws, "subscription.acknowledged");
    send_json(&mut ws, json!({"type": "join", "data": {"rooms": ["r1", "r2"]}}));
    next_of(&mut ws, "room.joined");
    send_json(&mut ws, json!({"type": "leave", "data": {"rooms": ["r1"]}}));
    next_of(&mut ws, "room.left");
    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "data": {"events": ["system.notification"]}}),
    );
    next_of(&mut ws, "subscription.acknowledged");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 6 {
        seen.extend(backend.next()["items"].as_array().unwrap().iter().cloned());
    }
    let kinds: Vec<&str> = seen.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["connect", "subscribe", "join", "leave", "unsubscribe", "disconnect"]
    );
    assert!(seen.iter().all(|i| i["connection_id"] == conn && i["user_id"] == "hal"));
    assert!(seen[0]["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(seen[1]["events"], json!(["system.notification"]));
    assert_eq!(seen[2]["rooms"], json!(["r1"]));
    assert_eq!(seen[3]["rooms"], json!(["r1"]));
    assert_eq!(seen[5]["code"], 1000);
    assert_eq!(seen[5]["reason"], "normal closure");
    assert!(seen[5]["messages_in"].as_u64().unwrap() >= 4);
}

#[test]
fn admin_sends_to_one_connection_by_id() {
    let server = start(config());
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("ivy"));
    let (_other, _) = connect(addr, &token("ivy"));
    let id = hello["data"]["connection_id"].as_str().unwrap().to_string();
    let admin = admin_token("root");
    let body = json!({"type": "rpc.result", "data": {"id": 3, "result": "late"}});
    let (status, r) = http::json(
        addr,
        "POST",
        &format!("/ws/connections/{id}/messages"),
        Some(&admin),
        Some(body),
    );
    assert_eq!(
        (status, r["data"]["connections_reached"].clone()),
        (200, json!(1)),
        "{r}"
    );
    let m = next_of(&mut ws, "rpc.result");
    assert_eq!(m["data"]["result"], "late");
    let (status, _) = http::json(
        addr,
        "POST",
        "/ws/connections/nope/messages",
        Some(&admin),
        Some(json!({"type": "x"})),
    );
    assert_eq!(status, 400);
    let unknown = uuid::Uuid::new_v4();
    let (status, r) = http::json(
        addr,
        "POST",
        &format!("/ws/connections/{unknown}/messages"),
        Some(&admin),
        Some(json!({"type": "x"})),
    );
    assert_eq!((status, r["data"]["connections_reached"].clone()), (200, json!(0)));
    let (status, _) = http::json(
        addr,
        "POST",
        &format!("/ws/connections/{id}/messages"),
        None,
        Some(json!({"type": "x"})),
    );
    assert_eq!(status, 401);
}

#[test]
fn rpcs_answered_later_through_the_admin_route_or_timed_out() {
    let backend = Backend::accepting();
    let server = bridged(&backend, "rpc", "", |b| b.deadline = Duration::from_millis(800));
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("kim"));
    let conn = hello["data"]["connection_id"].as_str().unwrap().to_string();
    let admin = admin_token("root");
    send_json(
        &mut ws,
        json!({"type": "rpc", "id": "later", "data": {"method": "slow.job"}}),
    );
    let mid = backend.item(|i| i["id"] == "later")["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let route = format!("/ws/connections/{conn}/rpc");
    // A 2xx without a result: the rpc waits for the route (the reply may race the batch's
    // answer being read, so wait until the route finds it).
    let mut status = 0;
    wait_until("the rpc waits", || {
        let body = json!({"message_id": mid, "result": {"done": true}});
        status = http::json(addr, "POST", &route, Some(&admin), Some(body)).0;
        status != 404
    });
    assert_eq!(status, 200);
    let r = next_of(&mut ws, "rpc.result");
    assert_eq!(
        (r["data"]["id"].clone(), r["data"]["result"].clone()),
        (json!("later"), json!({"done": true}))
    );
    // Answered once: a second answer finds nothing waiting.
    let (status, _) = http::json(
        addr,
        "POST",
        &route,
        Some(&admin),
        Some(json!({"message_id": mid, "result": 1})),
    );
    assert_eq!(status, 404);
    for bad in [
        json!({"message_id": "x", "result": 1}),
        json!({"message_id": mid}),
        json!({"message_id": mid, "result": 1, "error": 2}),
    ] {
        assert_eq!(http::json(addr, "POST", &route, Some(&admin), Some(bad)).0, 400);
    }
    // An error answer, then one never answered.
    send_json(&mut ws, json!({"type": "rpc", "id": 7, "data": {"method": "m"}}));
    let mid = backend.item(|i| i["id"] == 7)["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the rpc waits", || {
        let body = json!({"message_id": mid, "error": {"reason": "denied"}});
        http::json(addr, "POST", &route, Some(&admin), Some(body)).0 != 404
    });
    let e = next_of(&mut ws, "error");
    assert_eq!(
        (e["data"]["code"].clone(), e["data"]["error"].clone()),
        (json!("RPC_ERROR"), json!({"reason": "denied"}))
    );
    send_json(&mut ws, json!({"type": "rpc", "id": 8, "data": {"method": "m"}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(
        (e["data"]["code"].clone(), e["data"]["outcome"].clone()),
        (json!("RPC_TIMEOUT"), json!("delivered"))
    );
    assert_eq!(e["data"]["id"], 8);
}

#[test]
fn bad_answers_are_bounded_counted_and_never_crash() {
    let mut n = 0;
    let backend = Backend::start(move |batch| {
        n += 1;
        match n {
            // Not JSON at all, with a 2xx: the batch is taken; its rpc waits for the route.
            1 => Answer::Reply(200, "<html>oops</html>".into()),
            // Results for ids that are not in the batch.
            2 => Answer::Reply(
                200,
                json!({"results": [{"message_id": "00000000-0000-0000-0000-000000000000", "result": 1}]}).to_string(),
            ),
            // Slowloris: a head, then nothing more.
            3 => Answer::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{".to_vec()),
            // Chunked garbage.
            4 => Answer::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()),
            _ => Answer::Reply(200, results(batch, |_| json!("finally"))),
        }
    });
    let server = bridged(&backend, "rpc", "", |b| {
        b.timeout = Duration::from_millis(300);
        b.deadline = Duration::from_millis(900);
    });
    let (mut ws, _) = connect(server.local_addr(), &token("jo"));
    send_json(&mut ws, json!({"type": "rpc", "id": "a", "data": {"method": "m"}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(
        (e["data"]["code"].clone(), e["data"]["outcome"].clone()),
        (json!("RPC_TIMEOUT"), json!("delivered"))
    );
    send_json(&mut ws, json!({"type": "rpc", "id": "b", "data": {"method": "m"}}));
    let e = next_of(&mut ws, "error");
    assert_eq!(
        (e["data"]["code"].clone(), e["data"]["id"].clone()),
        (json!("RPC_TIMEOUT"), json!("b"))
    );
    // Two broken responses in a row are retried; the third attempt answers.
    send_json(&mut ws, json!({"type": "rpc", "id": "c", "data": {"method": "m"}}));
    let r = next_of(&mut ws, "rpc.result");
    assert_eq!(
        (r["data"]["id"].clone(), r["data"]["result"].clone()),
        (json!("c"), json!("finally"))
    );
    let m = server.handle().stats();
    assert!(m.backend.bad_responses >= 3, "{:?}", m.backend);
    assert!(m.backend.retried >= 2, "{:?}", m.backend);
}

#[test]
fn an_answer_through_the_route_may_come_before_the_batch_response() {
    let (go, wait) = std::sync::mpsc::channel();
    let mut wait = Some(wait);
    // The batch's response is held until the test has answered through the route; it then
    // carries a result of its own (null), which must not answer the rpc a second time.
    let backend = Backend::start(move |batch| match wait.take() {
        Some(w) => Answer::After(w, Box::new(Answer::Reply(200, results(batch, |_| Value::Null)))),
        None => Answer::Reply(200, results(batch, |_| Value::Null)),
    });
    let server = bridged(&backend, "rpc", "", |_| {});
    let addr = server.local_addr();
    let (mut ws, hello) = connect(addr, &token("lee"));
    let conn = hello["data"]["connection_id"].as_str().unwrap().to_string();
    send_json(&mut ws, json!({"type": "rpc", "id": 1, "data": {"method": "fast"}}));
    let mid = backend.item(|i| i["id"] == 1)["message_id"].clone();
    let route = format!("/ws/connections/{conn}/rpc");
    let body = json!({"message_id": mid, "result": "from the route"});
    let (status, r) = http::json(addr, "POST", &route, Some(&admin_token("root")), Some(body));
    assert_eq!(status, 200, "{r}");
    go.send(()).unwrap();
    let r = next_of(&mut ws, "rpc.result");
    assert_eq!(r["data"]["result"], "from the route");
    // A null result is a result: the next rpc gets it (and nothing more came for the first).
    send_json(&mut ws, json!({"type": "rpc", "id": 2, "data": {"method": "void"}}));
    let r = recv_json(&mut ws);
    assert_eq!(
        (r["type"].clone(), r["data"]["id"].clone(), r["data"]["result"].clone()),
        (json!("rpc.result"), json!(2), Value::Null)
    );
}
