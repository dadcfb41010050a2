//! TLS records after the handshake: application data, records of any type, padding and raw
//! bytes, sealed with a real rustls client's keys for every suite and cut at arbitrary
//! points. Valid data must arrive exactly; nothing may panic.
#![no_main]
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use wsedge::testing::tls;

struct Setup {
    server: Arc<tls::ServerConfigs>,
    clients: Vec<Arc<rustls::ClientConfig>>,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    Setup {
        server: tls::server_config(ck.cert.pem().as_bytes(), ck.signing_key.serialize_pem().as_bytes()),
        clients: tls::suites().iter().map(|s| tls::client_config(*s, true)).collect(),
    }
});

fuzz_target!(|data: &[u8]| {
    tls::records(&SETUP.server, &SETUP.clients, data);
});
