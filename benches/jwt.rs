//! JWT HS256 verification of a typical token. Why: it is the largest CPU cost of a handshake.
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wsedge::auth::{Verifier, mint_hs256};
use wsedge::config::JwtConfig;

fn bench(c: &mut Criterion) {
    let verifier = Verifier::new(&JwtConfig::hs256("bench-secret")).unwrap();
    let token = mint_hs256(b"bench-secret", "user-12345", None, 3600).unwrap();
    c.bench_function("jwt/hs256_verify", |b| {
        b.iter(|| black_box(verifier.verify(Some(black_box(&token))).is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
