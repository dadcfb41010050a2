//! The HTTP/1.1 the bridge speaks to its backend, without I/O: the request it writes and a
//! parser for the response bytes read so far, bounded in every dimension a bad or hostile
//! backend could stretch (head size, header count, body size, chunk framing).
//!
//! Owns: request heads and response parsing. Does not touch: sockets, timeouts (the link
//! counts time) or what the body means (`bridge::wire`).

/// Largest response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted (decoded).
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// A complete response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// The connection may carry the next request (HTTP/1.1 without `Connection: close`).
    pub(crate) keep_alive: bool,
    pub(crate) body: Vec<u8>,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("response body over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("malformed chunked body")]
    BadChunk,
    #[error("response framing not supported (no Content-Length, not chunked)")]
    Unframed,
}

/// Appends a `POST` of `body` (JSON) to `path` on `host`, with the batch id as a header.
pub(crate) fn write_request(out: &mut Vec<u8>, host: &str, path: &str, batch_id: &str, body: &[u8]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nUser-Agent: wsedge\r\nX-Wsedge-Batch: ");
    out.extend_from_slice(batch_id.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Parses `buf` (everything read since the request was written): `Ok(None)` until the
/// response is complete; `Ok(Some(response))` once it is (bytes after it are ignored: the
/// bridge never pipelines, so the backend sent them unasked).
pub(crate) fn parse_response(mut buf: &[u8]) -> Result<Option<Response>, HttpError> {
    loop {
        match parse_one(buf)? {
            Parsed::Interim(n) => buf = &buf[n..],
            Parsed::Partial => return Ok(None),
            Parsed::Final(r) => return Ok(Some(r)),
        }
    }
}

enum Parsed {
    Partial,
    /// An interim response (100 Continue) of this many bytes: we never ask for one; skipped.
    Interim(usize),
    Final(Response),
}

fn parse_one(buf: &[u8]) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(HttpError::Malformed),
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let status = res.code.ok_or(HttpError::Malformed)?;
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim(head_len));
    }
    let mut keep_alive = res.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| HttpError::Malformed)?;
            let n: usize = v.trim().parse().map_err(|_| HttpError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") && h.value.trim_ascii().eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        }
    }
    let rest = &buf[head_len..];
    if status == 204 || status == 304 {
        return Ok(Parsed::Final(Response {
            status,
            keep_alive,
            body: Vec::new(),
        }));
    }
    if chunked {
        return Ok(match dechunk(rest)? {
            Some(body) => Parsed::Final(Response {
                status,
                keep_alive,
                body,
            }),
            None => Parsed::Partial,
        });
    }
    let Some(len) = length else {
        return Err(HttpError::Unframed);
    };
    if len > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    if rest.len() < len {
        return Ok(Parsed::Partial);
    }
    Ok(Parsed::Final(Response {
        status,
        keep_alive,
        body: rest[..len].to_vec(),
    }))
}

/// A chunked body, once complete (trailers skipped).
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > 1024 {
                Err(HttpError::BadChunk)
            } else {
                Ok(None)
            };
        };
        let line = &rest[..eol];
        let size_text = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
        if size_text.is_empty() || size_text.len() > 8 {
            return Err(HttpError::BadChunk);
        }
        let size_text = std::str::from_utf8(size_text).map_err(|_| HttpError::BadChunk)?;
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::BadChunk)?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers end at an empty line.
            return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
                _ if rest.starts_with(b"\r\n") => Ok(Some(body)),
                Some(_) => Ok(Some(body)),
                None if rest.len() > MAX_HEAD => Err(HttpError::BadChunk),
                None => Ok(None),
            };
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(HttpError::BadChunk);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_responses_complete_only_when_whole() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let r = parse_response(full).unwrap().unwrap();
        assert_eq!((r.status, r.keep_alive, &r.body[..]), (200, true, &b"hello"[..]));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.unwrap().unwrap().keep_alive);
        let r = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        for cut in 0..full.len() - 1 {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_response(full).unwrap().unwrap().body, b"abcde");
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse_response(bad), Err(HttpError::BadChunk));
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n";
        assert_eq!(parse_response(huge), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn hostile_responses_fail_bounded() {
        assert_eq!(parse_response(b"garbage\r\n\r\n"), Err(HttpError::Malformed));
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n";
        assert_eq!(parse_response(big), Err(HttpError::BodyTooLarge));
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse_response(two), Err(HttpError::Malformed));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n"), Err(HttpError::Unframed));
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_response(&endless), Err(HttpError::HeadTooLarge));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(interim).unwrap().unwrap().status, 204);
    }
}
