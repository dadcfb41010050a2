//! Where the cluster's Redis lives: behind TLS (`rediss://`, Debian's redis-server speaking
//! TLS with a certificate made here), and behind Redis Sentinel (a master, a replica and a
//! sentinel; the master killed under publish load, the replica promoted, the nodes following).
mod common;
use std::net::SocketAddr;
use std::time::Duration;

use common::http::json;
use common::redis::{Redis, Sentinel, fault_node, wait_long};
use common::*;
use serde_json::{Value, json};
use wsedge::config::RedisUrl;
use wsedge::{Config, RunningServer};

fn node(url: RedisUrl, prefix: &str, id: &str, tweak: impl FnOnce(&mut Config)) -> RunningServer {
    fault_node(url, prefix, id, tweak)
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    json(addr, "POST", path, Some(&admin_token("root")), Some(body))
}

#[test]
fn a_cluster_over_rediss_delivers_across_nodes() {
    let dir = std::env::temp_dir().join(format!("wsedge-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let redis = Redis::start_tls(&cert, &key);
    let url: RedisUrl = format!("rediss://localhost:{}", redis.port).parse().unwrap();
    let with_ca = |c: &mut Config| c.redis_ca = Some(cert.clone());
    let n1 = node(url.clone(), "tls", "t1", with_ca);
    let n2 = node(url.clone(), "tls", "t2", with_ca);
    let (mut una, _) = connect(n2.local_addr(), &token("una"));
    wait_until("una's channel is subscribed", || {
        redis.cli(&["PUBSUB", "NUMSUB", "tls:user:una"]).lines().nth(1) == Some("1")
    });
    let (status, body) = post(
        n1.local_addr(),
        "/ws/users/una/messages",
        json!({"type": "m", "data": {"i": 1}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(recv_json(&mut una)["data"]["i"], 1);

    // A certificate the node does not trust: it never joins, and says why in /ready.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_ca = dir.join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let untrusting = start(Config {
        workers: 1,
        redis: Some(url),
        redis_prefix: "tls".into(),
        node_id: "t3".into(),
        redis_ca: Some(other_ca),
        ..common::config()
    });
    let a = untrusting.local_addr();
    wait_long("/ready says the cluster is down", || {
        json(a, "GET", "/ready", None, None) == (503, json!({"status": "not ready", "cluster": "down"}))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sentinel_failover_under_publish_load_loses_nothing_answered_200() {
    let mut master = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    wait_long("the replica is in sync", || {
        replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
    });
    let sentinel = Sentinel::start(master.port);
    wait_long("the sentinel knows the replica", || sentinel.replicas() == 1);
    let url: RedisUrl = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port)
        .parse()
        .unwrap();
    let n1 = node(url.clone(), "sent", "s1", |_| {});
    let n2 = node(url, "sent", "s2", |_| {});
    let (mut vic, _) = connect(n2.local_addr(), &token("vic"));
    vic.get_ref().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    wait_until("vic's channel is subscribed", || {
        master.cli(&["PUBSUB", "NUMSUB", "sent:user:vic"]).lines().nth(1) == Some("1")
    });

    // Publishes go on while the master dies and the replica takes over; each answer is kept.
    let a = n1.local_addr();
    let mut answered_200 = Vec::new();
    let mut others = 0;
    let mut i = 0u64;
    let mut killed_at = None;
    let replica_port = replica.port;
    loop {
        i += 1;
        let (status, _) = post(a, "/ws/users/vic/messages", json!({"type": "m", "data": {"i": i}}));
        match status {
            200 => answered_200.push(i),
            503 | 504 => others += 1,
            s => panic!("unexpected status {s}"),
        }
        if i == 20 {
            master.kill_now();
            killed_at = Some(i);
        }
        let after_failover = killed_at.is_some() && sentinel.master_port() == Some(replica_port);
        if after_failover && answered_200.last().is_some_and(|&l| l > 20) && answered_200.len() >= 30 {
            break;
        }
        assert!(i < 5_000, "the nodes never followed the failover ({others} refused)");
    }
    // Every publish answered 200 reaches vic, once, in order; the last one tells us when to stop.
    let last = *answered_200.last().unwrap();
    let mut got = Vec::new();
    loop {
        let m = recv_json(&mut vic);
        let n = m["data"]["i"].as_u64().unwrap();
        got.push(n);
        if n == last {
            break;
        }
    }
    for n in &answered_200 {
        assert_eq!(
            got.iter().filter(|&g| g == n).count(),
            1,
            "message {n} answered 200: {got:?}"
        );
    }
    assert!(others > 0, "the failover was seen by the publisher");
}
