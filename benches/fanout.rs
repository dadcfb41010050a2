//! Fan-out of one pre-encoded 200-byte frame into 10,000 outbound queues (a refcount and a
//! queue push per recipient, no copy), then draining them into a sink. Why: this is the
//! per-recipient cost of broadcast before the socket write.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tungstenite::Bytes;
use wsedge::testing::{OutQueue, Pool};

fn bench(c: &mut Criterion) {
    let frame = Bytes::from(vec![0x81u8; 200]);
    let mut pool = Pool::default();
    let mut queues: Vec<Option<Box<OutQueue>>> = (0..10_000).map(|_| None).collect();
    let mut sink = std::io::sink();
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("queue_10k_recipients", |b| {
        b.iter(|| {
            for q in queues.iter_mut() {
                q.get_or_insert_with(|| pool.queue()).push_shared(frame.clone());
            }
            for q in queues.iter_mut() {
                if let Some(mut out) = q.take() {
                    let _ = out.write_to(&mut sink, &mut pool);
                    pool.recycle(out);
                }
            }
            black_box(queues.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
