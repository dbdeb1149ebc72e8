//! The BPK circuit and Groth16 over BN254: completeness and soundness.
//!
//! One setup (D = 8, K = 8, seeded ChaCha) is shared by all tests through a
//! `OnceLock`. Witness-level cheats are checked twice: the constraint system
//! is unsatisfied, and `prove` refuses with `ZkError::Unsatisfied`.
//! Public-input and proof tampering is checked with `verify`.

use std::sync::OnceLock;
use std::time::Instant;

use ark_bn254::Bn254;
use ark_ff::{One, UniformRand};
use ark_groth16::{PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem, SynthesisMode};
use int_zk::circuit::{
    BpkCircuit, BpkParams, BpkWitness, PublicInputs, behaviour_hash, centroid_commitment,
    identity_leaf, nearest_centroid, nullifier, secret_commitment,
};
use int_zk::groth::{prepare_verifying_key, prove, setup, verify, verify_prepared};
use int_zk::poseidon;
use int_zk::tree::IdentityTree;
use int_zk::{Fr, ZkError};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const D: usize = 8;
const K: usize = 8;
const EPOCH: u64 = 42;

/// Constraints of the BPK circuit for D = 8, K = 8 (breakdown in the docs of
/// `BpkCircuit`): 1,224 coordinate range checks + 32 path bits + 213
/// Poseidon(secret) + 402 Poseidon(b) + 240 leaf + 7,713 path and root
/// + 262 nullifier + 1 scope² + 3,619 centroid commitment + 64 squares
/// + 10 selector + 8 dist_k + 304 distance comparisons.
const CONSTRAINTS_D8_K8: usize = 14_092;

type Centroids = [[u16; D]; K];

/// Well separated centroids: centroid j has coordinates ≈ 4000 + 8000·j.
fn centroids() -> Centroids {
    std::array::from_fn(|j| std::array::from_fn(|i| (4000 + 8000 * j + 13 * i) as u16))
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

struct User {
    secret: Fr,
    b: [u16; D],
    index: u64,
}

struct Fixture {
    centroids: Centroids,
    tree: IdentityTree,
    users: Vec<User>,
    pk: ProvingKey<Bn254>,
    vk: VerifyingKey<Bn254>,
    pvk: PreparedVerifyingKey<Bn254>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = rng(0xb9c_2026);
        let centroids = centroids();
        let mut tree = IdentityTree::new(8).unwrap();
        // A filler leaf, then users near centroids 0, 3 and 7, then one
        // exactly between centroids 2 and 3 (a tie).
        tree.append(Fr::rand(&mut rng)).unwrap();
        let mut users = Vec::new();
        let mut behaviours: Vec<[u16; D]> = [0usize, 3, 7]
            .iter()
            .map(|&j| std::array::from_fn(|i| centroids[j][i] + 100 + 7 * i as u16))
            .collect();
        behaviours.push(std::array::from_fn(|i| {
            (centroids[2][i] + centroids[3][i]) / 2
        }));
        for b in behaviours {
            let secret = Fr::rand(&mut rng);
            let index = tree.append(identity_leaf(secret, &b).unwrap()).unwrap();
            users.push(User { secret, b, index });
            tree.append(Fr::rand(&mut rng)).unwrap();
        }
        let start = Instant::now();
        let (pk, vk) = setup(D, K, &mut rng).unwrap();
        eprintln!("setup (D = {D}, K = {K}): {:?}", start.elapsed());
        let pvk = prepare_verifying_key(&vk);
        Fixture {
            centroids,
            tree,
            users,
            pk,
            vk,
            pvk,
        }
    })
}

fn witness(f: &Fixture, user: &User) -> BpkWitness {
    BpkWitness::new(
        user.secret,
        &user.b,
        &f.centroids,
        f.tree.path(user.index).unwrap(),
    )
}

fn scope() -> Fr {
    Fr::from(0x5c09e_u64)
}

/// Whether the circuit with these values is satisfied (no Groth16 involved).
fn satisfied(public: &PublicInputs, witness: &BpkWitness) -> bool {
    let circuit = BpkCircuit {
        params: BpkParams::default(),
        witness: Some(witness.clone()),
        public: Some(*public),
    };
    let cs = ConstraintSystem::<Fr>::new_ref();
    circuit.generate_constraints(cs.clone()).unwrap();
    cs.is_satisfied().unwrap()
}

/// A witness-level cheat: the system is unsatisfied and `prove` refuses.
fn assert_rejected(public: &PublicInputs, witness: &BpkWitness) {
    assert!(!satisfied(public, witness));
    let f = fixture();
    assert_eq!(
        prove(&f.pk, public, witness, &mut rng(1)).unwrap_err(),
        ZkError::Unsatisfied
    );
}

#[test]
fn native_helpers_agree() {
    let secret = Fr::from(7u64);
    let b = [1u16, 2, 3, 4, 5, 6, 7, 8];
    let sc = poseidon::hash(&[secret]).unwrap();
    assert_eq!(secret_commitment(secret), sc);
    let hb = poseidon::hash(&b.map(Fr::from)).unwrap();
    assert_eq!(behaviour_hash(&b).unwrap(), hb);
    assert_eq!(identity_leaf(secret, &b).unwrap(), poseidon::hash2(sc, hb));
    assert_eq!(
        nullifier(secret, EPOCH, scope()),
        poseidon::hash(&[secret, Fr::from(EPOCH), scope()]).unwrap()
    );
    let c = centroids();
    let hashes: Vec<Fr> = c.iter().map(|x| behaviour_hash(x).unwrap()).collect();
    assert_eq!(
        centroid_commitment(&c).unwrap(),
        poseidon::hash(&hashes).unwrap()
    );
    assert_eq!(nearest_centroid(&c[5], &c).unwrap(), 5);
}

#[test]
fn constraint_count_d8_k8() {
    // Setup mode (no values), as the key generation runs it.
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(SynthesisMode::Setup);
    BpkCircuit::for_setup(BpkParams::default())
        .generate_constraints(cs.clone())
        .unwrap();
    assert_eq!(cs.num_constraints(), CONSTRAINTS_D8_K8);
    assert_eq!(cs.num_instance_variables(), 1 + 6);

    // Prove mode with an honest witness: same count, satisfied.
    let f = fixture();
    let w = witness(f, &f.users[0]);
    let public = w.public_inputs(EPOCH, scope()).unwrap();
    let cs = ConstraintSystem::<Fr>::new_ref();
    BpkCircuit::new(public, w)
        .unwrap()
        .generate_constraints(cs.clone())
        .unwrap();
    assert_eq!(cs.num_constraints(), CONSTRAINTS_D8_K8);
    assert!(cs.is_satisfied().unwrap());
}

#[test]
fn honest_proofs_verify() {
    let f = fixture();
    for (n, (user, expected)) in f.users.iter().zip([0u32, 3, 7, 2]).enumerate() {
        let w = witness(f, user);
        let public = w.public_inputs(EPOCH, scope()).unwrap();
        assert_eq!(public.root, f.tree.root());
        assert_eq!(public.cluster, expected);
        assert_eq!(public.nullifier, nullifier(user.secret, EPOCH, scope()));
        assert!(satisfied(&public, &w));
        let start = Instant::now();
        let proof = prove(&f.pk, &public, &w, &mut rng(10 + n as u64)).unwrap();
        let proved = start.elapsed();
        let start = Instant::now();
        assert!(verify(&f.vk, &public, &proof).unwrap());
        let verified = start.elapsed();
        assert!(verify_prepared(&f.pvk, &public, &proof).unwrap());
        eprintln!("user {n}: prove {proved:?}, verify {verified:?}");
    }
}

#[test]
fn proof_against_older_root_verifies() {
    // The root a path was taken against stays a valid public input.
    let f = fixture();
    let user = &f.users[0];
    let mut tree = f.tree.clone();
    let w_old = witness(f, user);
    tree.append(Fr::from(5u64)).unwrap();
    let public = w_old.public_inputs(EPOCH, scope()).unwrap();
    assert!(tree.is_known_root(&public.root));
    assert_ne!(public.root, tree.root());
    assert!(satisfied(&public, &w_old));
}

#[test]
fn wrong_secret_rejected() {
    let f = fixture();
    let user = &f.users[0];
    let mut w = witness(f, user);
    let honest = w.public_inputs(EPOCH, scope()).unwrap();
    w.secret += Fr::one();
    // Consistent nullifier for the wrong secret: only membership fails.
    let public = PublicInputs {
        nullifier: nullifier(w.secret, EPOCH, scope()),
        ..honest
    };
    assert_rejected(&public, &w);
}

#[test]
fn path_of_another_tree_rejected() {
    let f = fixture();
    let user = &f.users[1];
    // The same identity in another tree, at another position.
    let mut other = IdentityTree::new(1).unwrap();
    other.append(Fr::from(3u64)).unwrap();
    let index = other
        .append(identity_leaf(user.secret, &user.b).unwrap())
        .unwrap();
    let w = BpkWitness::new(
        user.secret,
        &user.b,
        &f.centroids,
        other.path(index).unwrap(),
    );
    let mut public = w.public_inputs(EPOCH, scope()).unwrap();
    assert_eq!(public.root, other.root());
    assert!(satisfied(&public, &w));
    public.root = f.tree.root();
    assert_rejected(&public, &w);
}

#[test]
fn not_the_nearest_cluster_rejected() {
    let f = fixture();
    let w = witness(f, &f.users[1]);
    let honest = w.public_inputs(EPOCH, scope()).unwrap();
    assert_eq!(honest.cluster, 3);
    // b is closer to centroid 3 than to any other: every other claim fails.
    for k in (0..K as u32).filter(|k| *k != 3) {
        let public = PublicInputs {
            cluster: k,
            ..honest
        };
        assert!(!satisfied(&public, &w), "cluster {k}");
    }
    assert_rejected(
        &PublicInputs {
            cluster: 4,
            ..honest
        },
        &w,
    );
}

#[test]
fn tie_accepts_only_the_lowest_index() {
    let f = fixture();
    let user = &f.users[3];
    let d2 = int_zk::circuit::squared_distance(&user.b, &f.centroids[2]);
    let d3 = int_zk::circuit::squared_distance(&user.b, &f.centroids[3]);
    assert_eq!(d2, d3, "the fixture's tie user is equidistant");
    let w = witness(f, user);
    let honest = w.public_inputs(EPOCH, scope()).unwrap();
    assert_eq!(honest.cluster, 2);
    assert!(satisfied(&honest, &w));
    assert_rejected(
        &PublicInputs {
            cluster: 3,
            ..honest
        },
        &w,
    );
}

#[test]
fn cluster_out_of_range_rejected() {
    let f = fixture();
    let w = witness(f, &f.users[2]);
    let honest = w.public_inputs(EPOCH, scope()).unwrap();
    for k in [K as u32, K as u32 + 1, u32::MAX] {
        assert!(
            !satisfied(
                &PublicInputs {
                    cluster: k,
                    ..honest
                },
                &w
            ),
            "cluster {k}"
        );
    }
}

/// Builds a witness whose leaf is in a (local) tree and whose public inputs
/// are consistent, with field coordinates of any size: only the range checks
/// can fail.
fn raw_witness(
    secret: Fr,
    b: Vec<Fr>,
    centroids: Vec<Vec<Fr>>,
    cluster: u32,
) -> (PublicInputs, BpkWitness) {
    let leaf = poseidon::hash2(secret_commitment(secret), poseidon::hash(&b).unwrap());
    let mut tree = IdentityTree::new(1).unwrap();
    let index = tree.append(leaf).unwrap();
    let hashes: Vec<Fr> = centroids
        .iter()
        .map(|c| poseidon::hash(c).unwrap())
        .collect();
    let public = PublicInputs {
        root: tree.root(),
        epoch: EPOCH,
        scope: scope(),
        nullifier: nullifier(secret, EPOCH, scope()),
        cluster,
        centroid_commitment: poseidon::hash(&hashes).unwrap(),
    };
    let w = BpkWitness {
        secret,
        behaviour: b,
        centroids,
        path: tree.path(index).unwrap(),
    };
    (public, w)
}

fn fr_vec(v: &[u16]) -> Vec<Fr> {
    v.iter().map(|x| Fr::from(*x)).collect()
}

#[test]
fn coordinate_out_of_range_rejected() {
    let c = centroids();
    let cs: Vec<Vec<Fr>> = c.iter().map(|x| fr_vec(x)).collect();
    let secret = Fr::from(99u64);

    // Control: in-range coordinates near centroid 7 pass.
    let b = fr_vec(&c[7]);
    let (public, w) = raw_witness(secret, b.clone(), cs.clone(), 7);
    assert!(satisfied(&public, &w));

    // b_0 = 2^16 (still nearest to centroid 7).
    let mut big = b.clone();
    big[0] = Fr::from(1u64 << 16);
    let (public, w) = raw_witness(secret, big, cs.clone(), 7);
    assert_rejected(&public, &w);

    // b_0 = −1 (a "negative" coordinate; still nearest to centroid 0).
    let mut neg = fr_vec(&c[0]);
    neg[0] = -Fr::one();
    let (public, w) = raw_witness(secret, neg, cs.clone(), 0);
    assert_rejected(&public, &w);

    // A centroid coordinate of 2^16 + 5 (centroid 7 stays nearest).
    let mut bad = cs.clone();
    bad[7][3] = Fr::from((1u64 << 16) + 5);
    let (public, w) = raw_witness(secret, b, bad, 7);
    assert_rejected(&public, &w);
}

#[test]
fn wrong_nullifier_rejected() {
    let f = fixture();
    let user = &f.users[0];
    let w = witness(f, user);
    let honest = w.public_inputs(EPOCH, scope()).unwrap();
    for wrong in [
        honest.nullifier + Fr::one(),
        nullifier(user.secret, EPOCH + 1, scope()),
        nullifier(user.secret, EPOCH, scope() + Fr::one()),
        nullifier(f.users[1].secret, EPOCH, scope()),
    ] {
        let public = PublicInputs {
            nullifier: wrong,
            ..honest
        };
        assert!(!satisfied(&public, &w));
    }
    assert_rejected(
        &PublicInputs {
            nullifier: honest.nullifier + Fr::one(),
            ..honest
        },
        &w,
    );
}

#[test]
fn wrong_centroid_commitment_rejected() {
    let f = fixture();
    let user = &f.users[1];
    let w = witness(f, user);
    let honest = w.public_inputs(EPOCH, scope()).unwrap();
    // The public commitment is to other centroids.
    let mut other = f.centroids;
    other[5][0] += 1;
    let public = PublicInputs {
        centroid_commitment: centroid_commitment(&other).unwrap(),
        ..honest
    };
    assert_rejected(&public, &w);
    // The prover uses other centroids than the committed ones (here ones
    // that would make a different cluster nearest).
    let mut moved = f.centroids;
    moved[6] = user.b;
    let w_moved = BpkWitness::new(user.secret, &user.b, &moved, w.path.clone());
    assert_rejected(
        &PublicInputs {
            cluster: 6,
            ..honest
        },
        &w_moved,
    );
}

#[test]
fn tampered_public_inputs_fail_verification() {
    let f = fixture();
    let w = witness(f, &f.users[2]);
    let public = w.public_inputs(EPOCH, scope()).unwrap();
    let proof = prove(&f.pk, &public, &w, &mut rng(2)).unwrap();
    assert!(verify(&f.vk, &public, &proof).unwrap());
    let tampered: [(&str, PublicInputs); 6] = [
        (
            "root",
            PublicInputs {
                root: public.root + Fr::one(),
                ..public
            },
        ),
        (
            "epoch",
            PublicInputs {
                epoch: public.epoch + 1,
                ..public
            },
        ),
        (
            "scope",
            PublicInputs {
                scope: public.scope + Fr::one(),
                ..public
            },
        ),
        (
            "nullifier",
            PublicInputs {
                nullifier: public.nullifier + Fr::one(),
                ..public
            },
        ),
        (
            "cluster",
            PublicInputs {
                cluster: public.cluster ^ 1,
                ..public
            },
        ),
        (
            "centroid_commitment",
            PublicInputs {
                centroid_commitment: public.centroid_commitment + Fr::one(),
                ..public
            },
        ),
    ];
    for (name, t) in &tampered {
        assert!(!verify_prepared(&f.pvk, t, &proof).unwrap(), "{name}");
    }
}

#[test]
fn tampered_proof_fails_verification() {
    let f = fixture();
    let w = witness(f, &f.users[0]);
    let public = w.public_inputs(EPOCH, scope()).unwrap();
    let proof = prove(&f.pk, &public, &w, &mut rng(3)).unwrap();
    assert!(verify_prepared(&f.pvk, &public, &proof).unwrap());
    let neg_a = Proof {
        a: -proof.a,
        ..proof.clone()
    };
    assert!(!verify_prepared(&f.pvk, &public, &neg_a).unwrap());
    let neg_c = Proof {
        c: -proof.c,
        ..proof.clone()
    };
    assert!(!verify_prepared(&f.pvk, &public, &neg_c).unwrap());
    let neg_b = Proof {
        b: -proof.b,
        ..proof.clone()
    };
    assert!(!verify_prepared(&f.pvk, &public, &neg_b).unwrap());
    // A valid proof for another user's statement does not verify this one.
    let w1 = witness(f, &f.users[1]);
    let public1 = w1.public_inputs(EPOCH, scope()).unwrap();
    assert!(!verify_prepared(&f.pvk, &public1, &proof).unwrap());
}

#[test]
fn key_and_shape_mismatches_are_errors() {
    let f = fixture();
    // A witness for D = 4 against the D = 8 key.
    let user = &f.users[0];
    let small: Vec<[u16; 4]> = f
        .centroids
        .iter()
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let b4 = [user.b[0], user.b[1], user.b[2], user.b[3]];
    let mut tree = IdentityTree::new(1).unwrap();
    let index = tree
        .append(identity_leaf(user.secret, &b4).unwrap())
        .unwrap();
    let w = BpkWitness::new(user.secret, &b4, &small, tree.path(index).unwrap());
    let public = w.public_inputs(EPOCH, scope()).unwrap();
    assert!(matches!(
        prove(&f.pk, &public, &w, &mut rng(4)).unwrap_err(),
        ZkError::KeyMismatch(_)
    ));

    // A ragged witness.
    let mut ragged = witness(f, user);
    ragged.centroids[2].pop();
    assert!(matches!(
        prove(&f.pk, &public, &ragged, &mut rng(4)).unwrap_err(),
        ZkError::DimensionMismatch { .. }
    ));

    // A verifying key with the wrong number of inputs.
    let mut vk = f.vk.clone();
    vk.gamma_abc_g1.pop();
    let proof = Proof::<Bn254>::default();
    assert!(matches!(
        verify(&vk, &public, &proof).unwrap_err(),
        ZkError::KeyMismatch(_)
    ));

    // Parameters outside 1..=12.
    assert_eq!(
        setup(13, 8, &mut rng(5)).unwrap_err(),
        ZkError::InvalidParams {
            dim: 13,
            clusters: 8
        }
    );
}
