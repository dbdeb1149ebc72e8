//! BLS (min_sig) verification benches: single verify, random-scalar batch
//! verification, aggregate verification of a block, and bisection with one
//! bad signature.
//!
//! Run with `cargo bench -p int-bench --bench bls`; `-- --test` runs each
//! bench once as a smoke test.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use int_engine::crypto::bls::{
    BatchItem, DST_SIG, PublicKey, SecretKey, Signature, aggregate, aggregate_verify, batch_verify,
    batch_verify_bisect, tx_message,
};

/// `n` signed transactions-like messages from 64 distinct keys.
struct Set {
    pks: Vec<PublicKey>,
    msgs: Vec<Vec<u8>>,
    sigs: Vec<Signature>,
}

impl Set {
    fn new(n: usize) -> Self {
        let sks: Vec<SecretKey> = (0..64u8)
            .map(|i| {
                let mut ikm = [0x5a; 32];
                ikm[0] = i;
                SecretKey::from_seed(&ikm)
            })
            .collect();
        let mut set = Set {
            pks: Vec::with_capacity(n),
            msgs: Vec::with_capacity(n),
            sigs: Vec::with_capacity(n),
        };
        for i in 0..n {
            let sk = &sks[i % sks.len()];
            let msg = tx_message(1, format!("bench transfer #{i:08}").as_bytes());
            set.sigs.push(sk.sign(&msg));
            set.pks.push(sk.public_key());
            set.msgs.push(msg);
        }
        set
    }

    fn items(&self) -> Vec<BatchItem<'_>> {
        self.pks
            .iter()
            .zip(&self.msgs)
            .zip(&self.sigs)
            .map(|((pk, msg), sig)| BatchItem { pk, msg, sig })
            .collect()
    }
}

fn single_verify(c: &mut Criterion) {
    let set = Set::new(1);
    let mut g = c.benchmark_group("bls");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_single", |b| {
        b.iter(|| black_box(set.sigs[0].verify(&set.pks[0], black_box(&set.msgs[0]))))
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("bls_batch_verify");
    for n in [64usize, 256, 1024] {
        let set = Set::new(n);
        let items = set.items();
        assert!(batch_verify(&items, DST_SIG));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &items, |b, items| {
            b.iter(|| black_box(batch_verify(black_box(items), DST_SIG)))
        });
    }
    g.finish();
}

fn aggregate_1024(c: &mut Criterion) {
    let n = 1024;
    let set = Set::new(n);
    let agg = aggregate(&set.sigs).expect("valid signatures aggregate");
    let msgs: Vec<&[u8]> = set.msgs.iter().map(|m| m.as_slice()).collect();
    let pks: Vec<&PublicKey> = set.pks.iter().collect();
    assert!(aggregate_verify(&agg, &msgs, &pks));
    let mut g = c.benchmark_group("bls_aggregate_verify");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| black_box(aggregate_verify(&agg, black_box(&msgs), &pks)))
    });
    g.finish();
}

fn bisect_one_bad_1024(c: &mut Criterion) {
    let n = 1024;
    let mut set = Set::new(n);
    let bad = 677;
    set.sigs[bad] = set.sigs[bad + 1];
    let items = set.items();
    assert_eq!(batch_verify_bisect(&items, DST_SIG), vec![bad]);
    let mut g = c.benchmark_group("bls_bisect_one_bad");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::from_parameter(n), &items, |b, items| {
        b.iter(|| black_box(batch_verify_bisect(black_box(items), DST_SIG)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = single_verify, batch, aggregate_1024, bisect_one_bad_1024
}
criterion_main!(benches);
