//! A frame header alone reserves nothing: memory grows with the bytes that arrive, not with the
//! length a client declares. (Alone in its test binary: it reads the process's address space.)
mod common;
use std::io::Write;

use common::*;

fn vm_size_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn declared_lengths_reserve_nothing() {
    let server = start(wsedge::Config {
        max_message_size: 16 << 20,
        max_outbound_bytes: 64 << 20,
        ..config()
    });
    let addr = server.local_addr();
    let mut socks: Vec<_> = (0..40).map(|i| raw_ws(addr, &token(&format!("m{i}")))).collect();
    for s in &mut socks {
        read_frame(s);
    }
    let before = vm_size_kib();
    let handle = server.handle();
    let bytes_before = handle.stats().bytes_in;
    for s in &mut socks {
        // A binary frame header declaring 16 MiB - 1, then 10 bytes of it.
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&((16u64 << 20) - 1).to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        head.extend_from_slice(&[0u8; 10]);
        s.write_all(&head).unwrap();
    }
    wait_until("the server read every header", || {
        handle.stats().bytes_in >= bytes_before + 40 * 24
    });
    let grown_mib = vm_size_kib().saturating_sub(before) / 1024;
    // Reserving the declared lengths would take 640 MiB of address space.
    assert!(grown_mib < 128, "address space grew by {grown_mib} MiB");
}
