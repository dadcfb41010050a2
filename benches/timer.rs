//! Timer wheel at 100,000 entries: scheduling them, and advancing through them with re-arm
//! (what heartbeat checks cost). Why: the wheel is touched for every connection every interval.
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wsedge::testing::TimerWheel;

const N: u64 = 100_000;

fn bench(c: &mut Criterion) {
    c.bench_function("timer/schedule_100k", |b| {
        b.iter_batched(
            || TimerWheel::new(1024, 0),
            |mut w| {
                for k in 0..N {
                    w.schedule(k, k % 300 + 1);
                }
                black_box(w.len())
            },
            BatchSize::LargeInput,
        )
    });
    c.bench_function("timer/expire_and_rearm_100k", |b| {
        b.iter_batched(
            || {
                let mut w = TimerWheel::new(1024, 0);
                for k in 0..N {
                    w.schedule(k, k % 300 + 1);
                }
                (w, Vec::with_capacity(N as usize))
            },
            |(mut w, mut fired)| {
                w.advance(300, &mut fired);
                for &k in &fired {
                    w.schedule(k, 600);
                }
                black_box(fired.len())
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
