//! Payloads from Redis (another node's message, request or answer, or anything else someone
//! publishes on the prefix) never panic a node, and the position fields added to a delivered
//! frame keep it a well-formed text frame holding the same JSON object plus three fields.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsedge::testing::{cluster_channels, inspect_cluster_payload, with_position};

fuzz_target!(|data: &[u8]| {
    let channels = cluster_channels("wsedge", "n1");
    let (channel, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"wsedge:all"[..], data),
    };
    let _ = inspect_cluster_payload(&channels, channel, payload);

    // Any bytes as a "frame": unchanged unless one whole unmasked text frame holding a JSON object.
    let pos = wsedge::Position {
        offset: data.len() as u64,
        epoch: "e".into(),
    };
    let out = with_position(payload, "user:x", &pos);
    let is_object = |f: &[u8]| -> Option<serde_json::Value> {
        let (head, len) = match *f.get(1)? {
            126 => (4, u16::from_be_bytes(f.get(2..4)?.try_into().ok()?) as usize),
            127 => (10, u64::from_be_bytes(f.get(2..10)?.try_into().ok()?) as usize),
            n if n < 126 => (2, n as usize),
            _ => return None,
        };
        let body = f.get(head..)?;
        if body.len() != len {
            return None;
        }
        serde_json::from_slice(body).ok()
    };
    if let (Some(serde_json::Value::Object(before)), true) = (is_object(payload), payload.first() == Some(&0x81)) {
        let after = is_object(&out).expect("still JSON");
        assert_eq!(after["offset"], pos.offset);
        for (k, v) in before {
            if !["channel", "offset", "epoch"].contains(&k.as_str()) {
                assert_eq!(after[&k], v, "{k} kept");
            }
        }
    }
});
