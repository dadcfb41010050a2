//! Seed envelopes: parsing a client `ping` and serializing the `pong` (timestamp and UUID
//! included). Why: this is the protocol server's per-message cost beyond framing.
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wsedge::Timestamp;
use wsedge::testing::{IdGen, data_as, parse_client_message, write_envelope};

#[derive(serde::Deserialize)]
struct Ping<'a> {
    #[serde(rename = "pingId", borrow)]
    ping_id: Option<&'a serde_json::value::RawValue>,
}

fn bench(c: &mut Criterion) {
    let text = r#"{"type":"ping","data":{"pingId":"abc-123"},"timestamp":"2025-01-08T10:30:00Z","id":"msg_1"}"#;
    c.bench_function("envelope/parse_ping", |b| {
        b.iter(|| {
            let m = parse_client_message(black_box(text)).unwrap();
            let p: Ping = data_as(m.data).unwrap();
            black_box(p.ping_id.is_some())
        })
    });
    let mut ids = IdGen::from_os();
    let mut out = Vec::with_capacity(256);
    c.bench_function("envelope/serialize_pong", |b| {
        b.iter(|| {
            out.clear();
            write_envelope(
                &mut out,
                &mut ids,
                "pong",
                serde_json::json!({"timestamp": Timestamp::now(), "pingId": "abc-123"}),
            );
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
