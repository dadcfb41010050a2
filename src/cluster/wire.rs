//! The bytes one node's message travels as through Redis, and their parser.
//!
//! Owns: the payload layout. Does not touch: channels (the target of a delivery is the channel
//! it was published on) or what a request asks (its body is JSON the core reads).
//!
//! Every payload starts `[version 1][kind][origin length][origin node id]`. Then, by kind:
//! - `D` delivery: `[exclude-user length u16][exclude user][has connection u8][connection id
//!   16 bytes, if any][the WebSocket frame(s), as the publishing node encoded them]`. A
//!   receiving node queues the frame bytes as they are: no parsing, no re-encoding.
//! - `Q` request: `[reactor u16][ticket u64][JSON ask]` (answer to the origin's node channel).
//! - `A` answer: `[reactor u16][ticket u64][JSON answer]`.
//! - `P` probe: `[nonce u64]` (a node's message to itself, to see its subscription is alive).
//! - `E` eviction: `[connection id as text]` (sent by the per-user limit script to the node
//!   holding the user's oldest connection).
//! - `H` delivery with history: `[exclude-user length u16][exclude user][publish id u64]`,
//!   then, written by the publish script, `[offset as decimal]\n[epoch]\n[frame]`.
//! - `M` marker: `[query id u64]` (published by the range script: on the channel it falls
//!   right after the messages the script's reply covers).

const VERSION: u8 = 1;

/// A parsed payload; slices borrow from it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wire<'a> {
    Deliver {
        origin: &'a [u8],
        exclude_user: Option<&'a str>,
        connection: Option<uuid::Uuid>,
        /// Offset of the frame bytes in the payload.
        frame_at: usize,
    },
    Request {
        origin: &'a [u8],
        reactor: u16,
        ticket: u64,
        body: &'a [u8],
    },
    Answer {
        origin: &'a [u8],
        reactor: u16,
        ticket: u64,
        body: &'a [u8],
    },
    Probe {
        origin: &'a [u8],
        nonce: u64,
    },
    Evict {
        connection: uuid::Uuid,
    },
    History {
        origin: &'a [u8],
        exclude_user: Option<&'a str>,
        /// The publishing node's id for the publish.
        id: u64,
        offset: u64,
        epoch: &'a str,
        frame_at: usize,
    },
    Marker {
        origin: &'a [u8],
        id: u64,
    },
}

fn head(out: &mut Vec<u8>, kind: u8, origin: &str) {
    out.push(VERSION);
    out.push(kind);
    out.push(origin.len().min(255) as u8);
    out.extend_from_slice(&origin.as_bytes()[..origin.len().min(255)]);
}

pub(crate) fn deliver(
    origin: &str,
    exclude_user: Option<&str>,
    connection: Option<uuid::Uuid>,
    frame: &[u8],
) -> Vec<u8> {
    let ex = exclude_user.unwrap_or("").as_bytes();
    let ex = &ex[..ex.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(frame.len() + ex.len() + origin.len() + 24);
    head(&mut out, b'D', origin);
    out.extend_from_slice(&(ex.len() as u16).to_be_bytes());
    out.extend_from_slice(ex);
    match connection {
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(frame);
    out
}

fn addressed(kind: u8, origin: &str, reactor: usize, ticket: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + origin.len() + 16);
    head(&mut out, kind, origin);
    out.extend_from_slice(&(reactor as u16).to_be_bytes());
    out.extend_from_slice(&ticket.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub(crate) fn request(origin: &str, reactor: usize, ticket: u64, body: &[u8]) -> Vec<u8> {
    addressed(b'Q', origin, reactor, ticket, body)
}

pub(crate) fn answer(origin: &str, reactor: usize, ticket: u64, body: &[u8]) -> Vec<u8> {
    addressed(b'A', origin, reactor, ticket, body)
}

pub(crate) fn probe(origin: &str, nonce: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(origin.len() + 12);
    head(&mut out, b'P', origin);
    out.extend_from_slice(&nonce.to_be_bytes());
    out
}

/// The start of an eviction; the limit script appends the connection id.
pub(crate) fn evict_head(origin: &str) -> Vec<u8> {
    let mut out = Vec::new();
    head(&mut out, b'E', origin);
    out
}

/// The start of a delivery with history; the publish script appends the rest.
pub(crate) fn history_head(origin: &str, exclude_user: Option<&str>, id: u64) -> Vec<u8> {
    let ex = exclude_user.unwrap_or("").as_bytes();
    let ex = &ex[..ex.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(ex.len() + origin.len() + 16);
    head(&mut out, b'H', origin);
    out.extend_from_slice(&(ex.len() as u16).to_be_bytes());
    out.extend_from_slice(ex);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

pub(crate) fn marker(origin: &str, id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(origin.len() + 12);
    head(&mut out, b'M', origin);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Parses a payload; `None` if it is not one this version understands.
pub(crate) fn parse(p: &[u8]) -> Option<Wire<'_>> {
    let (&version, rest) = p.split_first()?;
    let (&kind, rest) = rest.split_first()?;
    let (&origin_len, rest) = rest.split_first()?;
    if version != VERSION || rest.len() < origin_len as usize {
        return None;
    }
    let (origin, rest) = rest.split_at(origin_len as usize);
    let u16_at = |b: &[u8]| b.get(..2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    let u64_at = |b: &[u8]| b.get(..8).and_then(|x| x.try_into().ok()).map(u64::from_be_bytes);
    match kind {
        b'D' => {
            let ex_len = u16_at(rest)? as usize;
            let rest = &rest[2..];
            let ex = rest.get(..ex_len)?;
            let rest = &rest[ex_len..];
            let exclude_user = if ex.is_empty() {
                None
            } else {
                Some(std::str::from_utf8(ex).ok()?)
            };
            let (&has, rest) = rest.split_first()?;
            let connection = match has {
                0 => None,
                1 => Some(uuid::Uuid::from_slice(rest.get(..16)?).ok()?),
                _ => return None,
            };
            let frame_at = p.len() - rest.len() + if connection.is_some() { 16 } else { 0 };
            Some(Wire::Deliver {
                origin,
                exclude_user,
                connection,
                frame_at,
            })
        }
        b'Q' | b'A' => {
            let reactor = u16_at(rest)?;
            let ticket = u64_at(rest.get(2..)?)?;
            let body = &rest[10..];
            Some(if kind == b'Q' {
                Wire::Request {
                    origin,
                    reactor,
                    ticket,
                    body,
                }
            } else {
                Wire::Answer {
                    origin,
                    reactor,
                    ticket,
                    body,
                }
            })
        }
        b'E' => Some(Wire::Evict {
            connection: std::str::from_utf8(rest).ok()?.parse().ok()?,
        }),
        b'H' => {
            let ex_len = u16_at(rest)? as usize;
            let ex = rest.get(2..2 + ex_len)?;
            let exclude_user = if ex.is_empty() {
                None
            } else {
                Some(std::str::from_utf8(ex).ok()?)
            };
            let rest = &rest[2 + ex_len..];
            let id = u64_at(rest)?;
            let rest = &rest[8..];
            let nl = rest.iter().position(|&b| b == b'\n')?;
            let offset = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
            let rest = &rest[nl + 1..];
            let nl = rest.iter().position(|&b| b == b'\n')?;
            let epoch = std::str::from_utf8(&rest[..nl]).ok()?;
            Some(Wire::History {
                origin,
                exclude_user,
                id,
                offset,
                epoch,
                frame_at: p.len() - rest.len() + nl + 1,
            })
        }
        b'M' => Some(Wire::Marker {
            origin,
            id: u64_at(rest)?,
        }),
        b'P' => Some(Wire::Probe {
            origin,
            nonce: u64_at(rest)?,
        }),
        _ => None,
    }
}

/// For the fuzz target: everything a node does with a payload from Redis before it touches a
/// connection (parse, the request or answer body, the frame slice); returns its kind.
#[cfg(feature = "testing")]
pub fn inspect_for_testing(
    channels: &super::channels::Channels,
    channel: &[u8],
    payload: &[u8],
) -> Option<&'static str> {
    let _ = channels.parse(channel);
    Some(match parse(payload)? {
        Wire::Deliver { frame_at, .. } => {
            assert!(frame_at <= payload.len(), "the frame starts inside the payload");
            "deliver"
        }
        Wire::Request { body, .. } => {
            let _ = serde_json::from_slice::<crate::ask::RemoteAsk>(body).map(|r| r.into_ask());
            "request"
        }
        Wire::Answer { body, .. } => {
            let _ = serde_json::from_slice::<crate::ask::Answer>(body);
            "answer"
        }
        Wire::Probe { .. } => "probe",
        Wire::Evict { .. } => "evict",
        Wire::History { frame_at, .. } => {
            assert!(frame_at <= payload.len(), "the frame starts inside the payload");
            "history"
        }
        Wire::Marker { .. } => "marker",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let id = uuid::Uuid::new_v4();
        let p = deliver("n1", Some("alice"), Some(id), b"\x81\x02hi");
        let Some(Wire::Deliver {
            origin,
            exclude_user,
            connection,
            frame_at,
        }) = parse(&p)
        else {
            panic!("not a delivery")
        };
        assert_eq!(
            (origin, exclude_user, connection),
            (&b"n1"[..], Some("alice"), Some(id))
        );
        assert_eq!(&p[frame_at..], b"\x81\x02hi");
        let p = deliver("n1", None, None, b"F");
        assert!(matches!(parse(&p), Some(Wire::Deliver { frame_at, .. }) if &p[frame_at..] == b"F"));
        let p = request("n2", 3, 77, b"{}");
        assert_eq!(
            parse(&p),
            Some(Wire::Request {
                origin: b"n2",
                reactor: 3,
                ticket: 77,
                body: b"{}"
            })
        );
        assert!(matches!(
            parse(&answer("n2", 1, 5, b"[]")),
            Some(Wire::Answer { ticket: 5, .. })
        ));
        assert_eq!(parse(&probe("n", 9)), Some(Wire::Probe { origin: b"n", nonce: 9 }));
        let mut e = evict_head("n");
        e.extend_from_slice(id.to_string().as_bytes());
        assert_eq!(parse(&e), Some(Wire::Evict { connection: id }));
        // What the publish script appends to the head.
        let mut h = history_head("n3", Some("bob"), 41);
        h.extend_from_slice(b"12\nab34\n\x81\x01x");
        assert_eq!(
            parse(&h),
            Some(Wire::History {
                origin: b"n3",
                exclude_user: Some("bob"),
                id: 41,
                offset: 12,
                epoch: "ab34",
                frame_at: h.len() - 3,
            })
        );
        assert_eq!(parse(&marker("n", 6)), Some(Wire::Marker { origin: b"n", id: 6 }));
        let mut bad = history_head("n", None, 1);
        bad.extend_from_slice(b"x\ne\nF");
        assert_eq!(parse(&bad), None, "an offset that is not a number");
    }

    #[test]
    fn truncated_or_foreign_payloads_are_refused() {
        let p = deliver("node", Some("u"), Some(uuid::Uuid::nil()), b"x");
        for cut in 0..p.len() - 1 {
            // Every prefix short of the connection id is refused (the frame may be empty).
            assert_eq!(parse(&p[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"\x02D\x00\x00\x00\x00"), None, "another version");
        assert_eq!(parse(b"\x01Z\x00"), None, "unknown kind");
        assert_eq!(parse(b"\x01D\x05ab"), None, "origin longer than the payload");
        assert_eq!(parse(b"\x01D\x00\x00\x05ab"), None, "exclude longer than the payload");
        assert_eq!(parse(b"\x01D\x00\x00\x00\x01abc"), None, "connection id cut short");
    }
}
