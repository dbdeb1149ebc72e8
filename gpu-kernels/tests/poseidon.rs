//! The Poseidon kernel against light-poseidon (circom parameters), on every
//! adapter the machine has, for each arity 1..=12.

mod common;

use ark_bn254::Fr;
use ark_ff::{One, UniformRand, Zero};
use int_gpu::poseidon::{POSEIDON_MAX_ARITY, POSEIDON_MIN_ARITY, poseidon_cpu};
use light_poseidon::{Poseidon, PoseidonHasher};

/// `hashes` hashes of `arity` inputs: the edge cases first (all 0, all
/// r − 1, all 1, 0 and r − 1 alternating), then random elements.
fn inputs(arity: usize, hashes: usize, seed: u64) -> Vec<Fr> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(arity * hashes);
    v.extend(std::iter::repeat_n(Fr::zero(), arity));
    v.extend(std::iter::repeat_n(-Fr::one(), arity));
    v.extend(std::iter::repeat_n(Fr::one(), arity));
    v.extend((0..arity).map(|k| if k % 2 == 0 { Fr::zero() } else { -Fr::one() }));
    while v.len() < arity * hashes {
        v.push(Fr::rand(&mut rng));
    }
    v
}

#[test]
fn cpu_reference_is_light_poseidon() {
    for arity in POSEIDON_MIN_ARITY..=POSEIDON_MAX_ARITY {
        let x = inputs(arity, 6, arity as u64);
        let got = poseidon_cpu(arity, &x).unwrap_or_default();
        let mut h = match Poseidon::<Fr>::new_circom(arity) {
            Ok(h) => h,
            Err(e) => panic!("light-poseidon has no width {}: {e}", arity + 1),
        };
        let want: Vec<Fr> = x
            .chunks(arity)
            .map(|c| h.hash(c).unwrap_or_default())
            .collect();
        assert_eq!(got, want, "arity {arity}");
    }
}

#[test]
fn poseidon_matches_light_poseidon() {
    for (label, ctx) in common::all() {
        for arity in POSEIDON_MIN_ARITY..=POSEIDON_MAX_ARITY {
            // More hashes for the tree's arity, a few for the rest.
            let hashes = if arity == 2 { 70 } else { 8 };
            let x = inputs(arity, hashes, 100 + arity as u64);
            let got = match ctx.poseidon_batch(arity, &x) {
                Ok(g) => g,
                Err(e) => panic!("{label} arity {arity}: {e}"),
            };
            let want = poseidon_cpu(arity, &x).unwrap_or_default();
            assert_eq!(got.len(), hashes, "{label} arity {arity}");
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{label} arity {arity} hash {j}");
            }
        }
    }
}

#[test]
fn pairs_hash_a_tree_level() {
    let Some(ctx) = common::native() else { return };
    let level = inputs(2, 9, 7);
    let got = ctx.poseidon_pairs(&level).unwrap_or_default();
    let mut h = match Poseidon::<Fr>::new_circom(2) {
        Ok(h) => h,
        Err(e) => panic!("light-poseidon width 3: {e}"),
    };
    let want: Vec<Fr> = level
        .chunks(2)
        .map(|c| h.hash(c).unwrap_or_default())
        .collect();
    assert_eq!(got, want);
    // Hashing 1 and 2 gives circomlib's published value.
    let one_two = ctx
        .poseidon_pairs(&[Fr::from(1u64), Fr::from(2u64)])
        .unwrap_or_default();
    let want: Fr =
        match "7853200120776062878684798364095072458815029376092732009249414926327459813530".parse()
        {
            Ok(v) => v,
            Err(()) => panic!("constant does not parse"),
        };
    assert_eq!(one_two, vec![want]);
}

#[test]
fn empty_batch_is_empty() {
    let Some(ctx) = common::native() else { return };
    for arity in [1, 2, 12] {
        match ctx.poseidon_batch(arity, &[]) {
            Ok(v) => assert!(v.is_empty()),
            Err(e) => panic!("arity {arity}: {e}"),
        }
    }
    assert_eq!(poseidon_cpu(2, &[]).map(|v| v.len()).ok(), Some(0));
}

#[test]
fn bad_lengths_and_arities_are_errors() {
    let x = inputs(2, 3, 1);
    // Not a whole number of hashes, or an arity without parameters: an error
    // before anything is launched, on the CPU path too.
    assert!(poseidon_cpu(2, &x[..5]).is_err());
    assert!(poseidon_cpu(0, &x).is_err());
    assert!(poseidon_cpu(13, &x[..0]).is_err());
    let Some(ctx) = common::native() else { return };
    assert!(ctx.poseidon_batch(2, &x[..5]).is_err());
    assert!(ctx.poseidon_pairs(&x[..3]).is_err());
    assert!(ctx.poseidon_batch(0, &[]).is_err());
    assert!(ctx.poseidon_batch(13, &x[..0]).is_err());
    assert!(ctx.poseidon_batch(5, &x).is_err());
}
