//! Similar-event search at 100,000 stored embeddings of 384 dimensions: the HNSW graph's
//! build time, query latency (p50, p99) for k = 10 against an exact scan, recall@10 of the
//! graph against the exact answer, and resident memory per stored embedding.
//!
//! The vectors: 2,000 random centres in 384 dimensions, 50 points around each with noise of
//! about a third of a centre's length (neighbours within a cluster are not trivially ordered),
//! so recall is measured on structure like real embeddings' rather than on uniform noise,
//! where nearest neighbours carry no meaning.
//!
//! With `PER` = 1 every point is its own centre: Gaussian noise without structure, the hardest
//! case for a graph index (and one where the "nearest" neighbours mean nothing).
//!
//! `cargo bench -p colloquium-ai --bench similar -- [N] [DIMS] [PER]` (defaults 100000 384 50).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use colloquium_ai::similar::{Index, Method};
use colloquium_event::{EventId, Timestamp};

fn resident_bytes() -> u64 {
    colloquium_telemetry::process::resident_bytes().unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let dims = args.get(1).copied().unwrap_or(384);
    let per = args.get(2).copied().unwrap_or(50).max(1);
    let mut rng = fastrand::Rng::with_seed(1);
    let gauss = |rng: &mut fastrand::Rng| {
        // Irwin-Hall: close enough to normal for test data.
        (0..6).map(|_| rng.f32()).sum::<f32>() - 3.0
    };
    let mut vectors = Vec::with_capacity(n);
    let mut centre = vec![0.0f32; dims];
    for i in 0..n {
        if i % per == 0 {
            centre.iter_mut().for_each(|x| *x = gauss(&mut rng));
        }
        let v: Vec<f32> = centre.iter().map(|c| c + 0.35 * gauss(&mut rng)).collect();
        vectors.push((EventId::min_at(Timestamp::from_millis(i as u64 + 1)), v));
    }
    let before = resident_bytes();
    let index = Arc::new(Index::with_exact_below(1_000));
    let exact = Arc::new(Index::with_exact_below(usize::MAX));
    for (id, v) in &vectors {
        // `insert` would not rebuild; `add` through the public API rebuilds in the background
        // without a runtime on this thread, so build once below instead.
        exact.add(*id, v).unwrap();
    }
    let exact_bytes = resident_bytes().saturating_sub(before);
    let started = Instant::now();
    for (id, v) in &vectors {
        index.add_without_rebuild(*id, v).unwrap();
    }
    index.build_now();
    let built = started.elapsed();
    let graph_bytes = resident_bytes().saturating_sub(before + exact_bytes);
    let queries: Vec<Vec<f32>> = (0..500)
        .map(|q| {
            let (_, v) = &vectors[(q * 7919) % n];
            v.iter().map(|x| x + 0.1 * gauss(&mut rng)).collect()
        })
        .collect();
    let (mut approximate, mut scanned) = (Vec::new(), Vec::new());
    let (mut hits, mut total) = (0usize, 0usize);
    for query in &queries {
        let t = Instant::now();
        let (got, method) = index.nearest(query, 10, None);
        approximate.push(t.elapsed());
        assert_eq!(method, Method::Approximate);
        let t = Instant::now();
        let (want, _) = exact.nearest(query, 10, None);
        scanned.push(t.elapsed());
        total += want.len();
        hits += got
            .iter()
            .filter(|g| want.iter().any(|w| w.0 == g.0))
            .count();
    }
    approximate.sort();
    scanned.sort();
    println!("{n} vectors of {dims} dimensions in clusters of {per}, 500 queries, k = 10");
    println!(
        "graph build: {:.1} s (one thread's view; instant-distance uses every core)",
        built.as_secs_f64()
    );
    println!(
        "approximate: p50 {:?} p99 {:?}; recall@10 {:.4}",
        percentile(&approximate, 0.5),
        percentile(&approximate, 0.99),
        hits as f64 / total as f64
    );
    println!(
        "exact scan:  p50 {:?} p99 {:?}",
        percentile(&scanned, 0.5),
        percentile(&scanned, 0.99)
    );
    println!(
        "resident memory per embedding: {} B in an exact index, {} B in an index with its graph",
        exact_bytes / n as u64,
        graph_bytes / n as u64
    );
}
