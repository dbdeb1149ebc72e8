//! Groth16 (BN254) verification benches: one proof with the ordinary
//! verifier against a batch of 64 with `int_zk::batch` (one multi-Miller loop
//! and one final exponentiation), and bisection of a batch with one bad
//! proof. Criterion's throughput line gives the per-proof figure.
//!
//! Two circuits: a small one (`z = a·y^300`, 2 public inputs) with 64
//! distinct proofs, and the BPK circuit (D = 8, K = 8, 6 public inputs) with
//! 8 distinct proofs repeated to 64 (verification cost does not depend on
//! which proofs are repeated; it depends on the number of public inputs, not
//! on the circuit's size). Proofs are made once, before measuring.
//!
//! Run with `cargo bench -p int-bench --bench groth`; `-- --test` runs each
//! bench once as a smoke test.

use std::hint::black_box;

use ark_bn254::Bn254;
use ark_ff::UniformRand;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof};
use ark_snark::SNARK;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use int_zk::Fr;
use int_zk::batch::{BatchItem, CpuMsm, batch_verify, batch_verify_bisect, bpk_inputs};
use int_zk::circuit::{BpkWitness, identity_leaf};
use int_zk::fixture::PowKeys;
use int_zk::groth::{prepare_verifying_key, prove, setup};
use int_zk::tree::IdentityTree;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Proofs in a batch.
const BATCH: usize = 64;

/// A prepared key and `BATCH` proofs with their public inputs.
struct Set {
    pvk: PreparedVerifyingKey<Bn254>,
    inputs: Vec<Vec<Fr>>,
    proofs: Vec<Proof<Bn254>>,
}

impl Set {
    fn items(&self) -> Vec<BatchItem<'_>> {
        self.inputs
            .iter()
            .map(Vec::as_slice)
            .zip(&self.proofs)
            .collect()
    }
}

fn small_set() -> Set {
    let mut rng = ChaCha20Rng::seed_from_u64(0x6207);
    let keys = PowKeys::setup(&mut rng).unwrap();
    let (inputs, proofs) = (0..BATCH).map(|_| keys.prove(&mut rng).unwrap()).unzip();
    Set {
        pvk: keys.pvk,
        inputs,
        proofs,
    }
}

fn bpk_set() -> Set {
    const D: usize = 8;
    const K: usize = 8;
    const DISTINCT: usize = 8;
    let mut rng = ChaCha20Rng::seed_from_u64(0xb9c_6207);
    let centroids: [[u16; D]; K] =
        std::array::from_fn(|j| std::array::from_fn(|i| (4000 + 8000 * j + 13 * i) as u16));
    let mut tree = IdentityTree::new(8).unwrap();
    let users: Vec<(Fr, [u16; D], u64)> = (0..DISTINCT)
        .map(|u| {
            let secret = Fr::rand(&mut rng);
            let b: [u16; D] = std::array::from_fn(|i| centroids[u % K][i] + 50 + 3 * i as u16);
            let index = tree.append(identity_leaf(secret, &b).unwrap()).unwrap();
            (secret, b, index)
        })
        .collect();
    let (pk, vk) = setup(D, K, &mut rng).unwrap();
    let pvk = prepare_verifying_key(&vk);
    let mut publics = Vec::new();
    let mut proofs = Vec::new();
    for (n, (secret, b, index)) in users.iter().enumerate() {
        let w = BpkWitness::new(*secret, b, &centroids, tree.path(*index).unwrap());
        let public = w.public_inputs(7, Fr::from(n as u64 + 1)).unwrap();
        proofs.push(prove(&pk, &public, &w, &mut rng).unwrap());
        publics.push(public);
    }
    let inputs = bpk_inputs(&pvk, &publics).unwrap();
    Set {
        inputs: inputs.iter().cycle().take(BATCH).cloned().collect(),
        proofs: proofs.iter().cycle().take(BATCH).cloned().collect(),
        pvk,
    }
}

fn bench_set(c: &mut Criterion, name: &str, set: &Set) {
    let mut group = c.benchmark_group(format!("groth16_{name}"));
    let mut rng = ChaCha20Rng::seed_from_u64(1);

    group.throughput(Throughput::Elements(1));
    group.bench_function("single_verify", |b| {
        b.iter(|| {
            Groth16::<Bn254>::verify_with_processed_vk(
                &set.pvk,
                black_box(&set.inputs[0]),
                black_box(&set.proofs[0]),
            )
            .unwrap()
        })
    });

    let items = set.items();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_with_input(
        BenchmarkId::new("batch_verify", BATCH),
        &items,
        |b, items| {
            b.iter(|| assert!(batch_verify(&set.pvk, black_box(items), &CpuMsm, &mut rng).unwrap()))
        },
    );

    let mut inputs = set.inputs.clone();
    inputs[BATCH / 3][0] += Fr::from(1u64);
    let bad: Vec<BatchItem<'_>> = inputs.iter().map(Vec::as_slice).zip(&set.proofs).collect();
    group.bench_with_input(
        BenchmarkId::new("bisect_one_bad", BATCH),
        &bad,
        |b, items| {
            b.iter(|| {
                let found =
                    batch_verify_bisect(&set.pvk, black_box(items), &CpuMsm, &mut rng).unwrap();
                assert_eq!(found.len(), 1);
            })
        },
    );
    group.finish();
}

fn groth(c: &mut Criterion) {
    bench_set(c, "small", &small_set());
    bench_set(c, "bpk_d8_k8", &bpk_set());
}

criterion_group!(benches, groth);
criterion_main!(benches);
