//! Batch verification of Groth16 proofs (`int_zk::batch`).
//!
//! The batch mechanics are tested with a small circuit of our own (public
//! `a`, `z`; witness `y`; `z = a·y^N` by `N` chained multiplications), whose
//! proofs take milliseconds, so batches of 64 are cheap. One test batches a
//! few real BPK proofs (D = 8, K = 8). Setups are seeded and shared through
//! `OnceLock`s.

use std::sync::OnceLock;

use ark_bn254::Bn254;
use ark_ff::UniformRand;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof};
use ark_snark::SNARK;
use int_zk::batch::{BatchItem, CpuMsm, G1Msm, batch_verify, batch_verify_bisect, bpk_inputs};
use int_zk::circuit::{BpkWitness, identity_leaf};
use int_zk::fixture::PowKeys;
use int_zk::groth::{prepare_verifying_key, prove, setup, verify_prepared};
use int_zk::tree::IdentityTree;
use int_zk::{Fr, ZkError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Proofs in the small fixture.
const PROOFS: usize = 64;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

struct Small {
    pvk: PreparedVerifyingKey<Bn254>,
    /// `[a, z]` of each proof.
    inputs: Vec<Vec<Fr>>,
    proofs: Vec<Proof<Bn254>>,
}

fn small() -> &'static Small {
    static SMALL: OnceLock<Small> = OnceLock::new();
    SMALL.get_or_init(|| {
        let mut rng = rng(0xba7c4);
        let keys = PowKeys::setup(&mut rng).unwrap();
        let (inputs, proofs) = (0..PROOFS).map(|_| keys.prove(&mut rng).unwrap()).unzip();
        Small {
            pvk: keys.pvk,
            inputs,
            proofs,
        }
    })
}

fn items<'a>(inputs: &'a [Vec<Fr>], proofs: &'a [Proof<Bn254>]) -> Vec<BatchItem<'a>> {
    inputs.iter().map(Vec::as_slice).zip(proofs).collect()
}

fn single(pvk: &PreparedVerifyingKey<Bn254>, x: &[Fr], proof: &Proof<Bn254>) -> bool {
    Groth16::<Bn254>::verify_with_processed_vk(pvk, x, proof).unwrap()
}

#[test]
fn small_proofs_verify_singly() {
    let s = small();
    for (x, p) in s.inputs.iter().zip(&s.proofs) {
        assert!(single(&s.pvk, x, p));
    }
}

#[test]
fn batch_of_64_good() {
    let s = small();
    let items = items(&s.inputs, &s.proofs);
    assert!(batch_verify(&s.pvk, &items, &CpuMsm, &mut rng(1)).unwrap());
    assert_eq!(
        batch_verify_bisect(&s.pvk, &items, &CpuMsm, &mut rng(2)).unwrap(),
        Vec::<usize>::new()
    );
    // Every prefix, including one proof.
    for n in [1, 2, 3, 5, 17] {
        assert!(batch_verify(&s.pvk, &items[..n], &CpuMsm, &mut rng(n as u64)).unwrap());
    }
}

#[test]
fn empty_batch() {
    let s = small();
    assert!(batch_verify(&s.pvk, &[], &CpuMsm, &mut rng(3)).unwrap());
    assert!(
        batch_verify_bisect(&s.pvk, &[], &CpuMsm, &mut rng(3))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn one_tampered_input_among_64() {
    let s = small();
    for bad in [0, 1, 31, 32, 63] {
        let mut inputs = s.inputs.clone();
        inputs[bad][1] += Fr::from(1u64);
        let items = items(&inputs, &s.proofs);
        assert!(!batch_verify(&s.pvk, &items, &CpuMsm, &mut rng(4)).unwrap());
        assert_eq!(
            batch_verify_bisect(&s.pvk, &items, &CpuMsm, &mut rng(5)).unwrap(),
            vec![bad]
        );
    }
}

#[test]
fn proof_of_another_statement() {
    // Item 10 carries proof 11 (a valid proof, of another statement) with
    // item 10's inputs; then proofs 40 and 41 swap their A and C.
    let s = small();
    let mut proofs = s.proofs.clone();
    proofs[10] = s.proofs[11].clone();
    let items_a = items(&s.inputs, &proofs);
    assert_eq!(
        batch_verify_bisect(&s.pvk, &items_a, &CpuMsm, &mut rng(6)).unwrap(),
        vec![10]
    );

    let mut proofs = s.proofs.clone();
    let (a40, c40) = (proofs[40].a, proofs[40].c);
    proofs[40].a = proofs[41].a;
    proofs[40].c = proofs[41].c;
    proofs[41].a = a40;
    proofs[41].c = c40;
    let items_b = items(&s.inputs, &proofs);
    assert!(!batch_verify(&s.pvk, &items_b, &CpuMsm, &mut rng(7)).unwrap());
    assert_eq!(
        batch_verify_bisect(&s.pvk, &items_b, &CpuMsm, &mut rng(8)).unwrap(),
        vec![40, 41]
    );
}

#[test]
fn two_bad_far_apart_and_adjacent() {
    let s = small();
    for (i, j) in [(3, 60), (20, 21), (0, 63)] {
        let mut inputs = s.inputs.clone();
        inputs[i][0] += Fr::from(7u64);
        inputs[j][1] = Fr::from(0u64);
        let items = items(&inputs, &s.proofs);
        assert_eq!(
            batch_verify_bisect(&s.pvk, &items, &CpuMsm, &mut rng(9)).unwrap(),
            vec![i, j]
        );
    }
}

#[test]
fn all_bad() {
    let s = small();
    let inputs: Vec<Vec<Fr>> = s
        .inputs
        .iter()
        .map(|x| vec![x[0], x[1] + Fr::from(1u64)])
        .collect();
    let items = items(&inputs[..20], &s.proofs[..20]);
    assert_eq!(
        batch_verify_bisect(&s.pvk, &items, &CpuMsm, &mut rng(10)).unwrap(),
        (0..20).collect::<Vec<_>>()
    );
}

/// Batch and bisection agree with single verification on random mixes.
#[test]
fn agrees_with_single_verification() {
    let s = small();
    let mut r = rng(11);
    for round in 0..12 {
        let n = r.gen_range(0..=PROOFS);
        let mut inputs = s.inputs[..n].to_vec();
        let mut proofs = s.proofs[..n].to_vec();
        // Each item bad with probability 1/8, in one of three ways.
        for i in 0..n {
            if r.gen_ratio(1, 8) {
                match r.gen_range(0..3) {
                    0 => inputs[i][r.gen_range(0..2)] = Fr::rand(&mut r),
                    1 => proofs[i].a = s.proofs[(i + 1) % PROOFS].a,
                    _ => proofs[i].b = s.proofs[(i + 1) % PROOFS].b,
                }
            }
        }
        let expected: Vec<usize> = (0..n)
            .filter(|&i| !single(&s.pvk, &inputs[i], &proofs[i]))
            .collect();
        let items = items(&inputs, &proofs);
        assert_eq!(
            batch_verify(&s.pvk, &items, &CpuMsm, &mut r).unwrap(),
            expected.is_empty(),
            "round {round}"
        );
        assert_eq!(
            batch_verify_bisect(&s.pvk, &items, &CpuMsm, &mut r).unwrap(),
            expected,
            "round {round}"
        );
    }
}

#[test]
fn wrong_input_count_is_an_error() {
    let s = small();
    let mut inputs = s.inputs[..8].to_vec();
    inputs[5].push(Fr::from(1u64));
    inputs[6].pop();
    let items = items(&inputs, &s.proofs[..8]);
    let err = ZkError::BatchInputCount {
        index: 5,
        expected: 2,
        got: 3,
    };
    assert_eq!(
        batch_verify(&s.pvk, &items, &CpuMsm, &mut rng(12)).unwrap_err(),
        err
    );
    assert_eq!(
        batch_verify_bisect(&s.pvk, &items, &CpuMsm, &mut rng(12)).unwrap_err(),
        err
    );
    let no_inputs: Vec<BatchItem<'_>> = vec![(&[], &s.proofs[0])];
    assert_eq!(
        batch_verify(&s.pvk, &no_inputs, &CpuMsm, &mut rng(13)).unwrap_err(),
        ZkError::BatchInputCount {
            index: 0,
            expected: 2,
            got: 0
        }
    );
}

/// A backend that counts calls, to check the MSMs go through the trait.
struct Counting(std::sync::atomic::AtomicUsize);

impl G1Msm for Counting {
    fn msm(&self, bases: &[ark_bn254::G1Affine], scalars: &[Fr]) -> ark_bn254::G1Projective {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CpuMsm.msm(bases, scalars)
    }
}

#[test]
fn msm_goes_through_the_trait() {
    let s = small();
    let items = items(&s.inputs, &s.proofs);
    let m = Counting(Default::default());
    assert!(batch_verify(&s.pvk, &items, &m, &mut rng(14)).unwrap());
    assert_eq!(m.0.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn bpk_proofs_in_a_batch() {
    const D: usize = 8;
    const K: usize = 8;
    let mut rng = rng(0xb9c_ba7c);
    let centroids: [[u16; D]; K] =
        std::array::from_fn(|j| std::array::from_fn(|i| (4000 + 8000 * j + 13 * i) as u16));
    let mut tree = IdentityTree::new(8).unwrap();
    let users: Vec<(Fr, [u16; D], u64)> = [0usize, 3, 5, 7]
        .iter()
        .map(|&j| {
            let secret = Fr::rand(&mut rng);
            let b: [u16; D] = std::array::from_fn(|i| centroids[j][i] + 100 + 7 * i as u16);
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
        let public = w.public_inputs(42, Fr::from(n as u64 + 1)).unwrap();
        proofs.push(prove(&pk, &public, &w, &mut rng).unwrap());
        publics.push(public);
    }
    for (p, proof) in publics.iter().zip(&proofs) {
        assert!(verify_prepared(&pvk, p, proof).unwrap());
    }
    let inputs = bpk_inputs(&pvk, &publics).unwrap();
    let batch = items(&inputs, &proofs);
    assert!(batch_verify(&pvk, &batch, &CpuMsm, &mut rng).unwrap());

    // A tampered nullifier (a double-spend attempt under another tag) is
    // named alone. Four items are checked singly; repeat them to 12 so that
    // bisection runs batch checks too.
    let mut bad = publics.clone();
    bad[2].nullifier += Fr::from(1u64);
    let inputs = bpk_inputs(&pvk, &bad).unwrap();
    assert!(!batch_verify(&pvk, &items(&inputs, &proofs), &CpuMsm, &mut rng).unwrap());
    let inputs12: Vec<Vec<Fr>> = inputs.iter().cycle().take(12).cloned().collect();
    let proofs12: Vec<Proof<Bn254>> = proofs.iter().cycle().take(12).cloned().collect();
    assert_eq!(
        batch_verify_bisect(&pvk, &items(&inputs12, &proofs12), &CpuMsm, &mut rng).unwrap(),
        vec![2, 6, 10]
    );
}
