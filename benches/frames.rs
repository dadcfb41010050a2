//! Frame layer: parse+unmask of client frames and formatting of server frames, per message.
//! Why: every message in and out pays these; they bound echo throughput per core.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use wsedge::encode_client_frame;
use wsedge::testing::{Decoder, encode_frame};

fn masked(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_client_frame(&mut out, 0x81, payload, [1, 2, 3, 4]);
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    for size in [32usize, 4096] {
        let frame = masked(&vec![b'a'; size]);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("decode_text_{size}B"), |b| {
            let mut d = Decoder::default();
            let mut buf = frame.clone();
            b.iter(|| {
                buf.copy_from_slice(&frame);
                let r = d.decode(black_box(&mut buf), 1 << 20);
                black_box(matches!(r, Ok(Some(_))))
            })
        });
        let payload = vec![b'a'; size];
        g.bench_function(format!("encode_text_{size}B"), |b| {
            let mut out = Vec::with_capacity(size + 16);
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, OpCode::Data(Data::Text), black_box(&payload));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
