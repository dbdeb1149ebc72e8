//! Poseidon over BN254 exactly as circomlib defines it.
//!
//! Width `t = inputs + 1`, 8 full rounds, circomlib's partial-round count per
//! width (57 for `t = 3`), S-box `x^5`. The round constants and MDS matrices
//! are circomlib's, taken from `light-poseidon`; commitments made with
//! circom/snarkjs tools therefore match ours.
//!
//! The permutation (same order as circomlib and `light-poseidon`):
//!
//! ```text
//! state = [0, in_1, ..., in_n]                (state[0] is the capacity lane)
//! for each round r in 0 .. 8 + P:
//!     state[i] += ark[r * t + i]              (all lanes)
//!     full round (first 4, last 4): state[i] = state[i]^5 for all i
//!     partial round (the P between): state[0] = state[0]^5
//!     state = MDS · state
//! output state[0]
//! ```
//!
//! [`hash`] is the native version, [`hash_gadget`] the R1CS version; both read
//! the same cached parameters, and the tests check they agree.

use std::sync::OnceLock;

use ark_ff::{Field, One, Zero};
use ark_r1cs_std::fields::fp::{AllocatedFp, FpVar};
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSystemRef, SynthesisError, Variable};
use light_poseidon::PoseidonParameters;
use light_poseidon::parameters::bn254_x5::get_poseidon_parameters;

use crate::{Fr, ZkError};

/// Fewest inputs Poseidon takes (width 2).
pub const MIN_INPUTS: usize = 1;
/// Most inputs Poseidon takes (width 13, the largest circomlib table).
pub const MAX_INPUTS: usize = 12;

/// Parameters per input count, built once on first use (building them parses
/// thousands of constants).
static PARAMS: [OnceLock<PoseidonParameters<Fr>>; MAX_INPUTS] =
    [const { OnceLock::new() }; MAX_INPUTS];

/// circomlib's parameters for `n_inputs` inputs (width `n_inputs + 1`).
fn params(n_inputs: usize) -> Result<&'static PoseidonParameters<Fr>, ZkError> {
    if !(MIN_INPUTS..=MAX_INPUTS).contains(&n_inputs) {
        return Err(ZkError::PoseidonInputCount {
            got: n_inputs,
            min: MIN_INPUTS,
            max: MAX_INPUTS,
        });
    }
    Ok(PARAMS[n_inputs - 1].get_or_init(|| {
        // Width is 2..=13 here, which light-poseidon has tables for.
        let width = u8::try_from(n_inputs + 1).expect("width fits in u8");
        get_poseidon_parameters::<Fr>(width).expect("light-poseidon has widths 2..=13")
    }))
}

/// Whether round `round` is a full round (the first and last `full_rounds / 2`).
fn is_full_round(p: &PoseidonParameters<Fr>, round: usize) -> bool {
    let half = p.full_rounds / 2;
    round < half || round >= half + p.partial_rounds
}

/// Native circom Poseidon of 1..=12 field elements.
pub fn hash(inputs: &[Fr]) -> Result<Fr, ZkError> {
    let p = params(inputs.len())?;
    let t = p.width;
    let mut state = Vec::with_capacity(t);
    state.push(Fr::zero());
    state.extend_from_slice(inputs);
    let mut next = vec![Fr::zero(); t];
    for round in 0..p.full_rounds + p.partial_rounds {
        for (s, c) in state.iter_mut().zip(&p.ark[round * t..(round + 1) * t]) {
            *s += c;
        }
        if is_full_round(p, round) {
            state.iter_mut().for_each(|s| *s = sbox(*s));
        } else {
            state[0] = sbox(state[0]);
        }
        for (n, row) in next.iter_mut().zip(&p.mds) {
            *n = row.iter().zip(&state).map(|(m, s)| *m * s).sum();
        }
        std::mem::swap(&mut state, &mut next);
    }
    Ok(state[0])
}

/// Poseidon of two elements (width 3): the identity tree's node hash.
pub fn hash2(left: Fr, right: Fr) -> Fr {
    // Two inputs are always within 1..=12: the error arm cannot happen.
    hash(&[left, right]).expect("poseidon has parameters for two inputs")
}

fn sbox(x: Fr) -> Fr {
    let x2 = x.square();
    x2.square() * x
}

/// In-circuit circom Poseidon of 1..=12 field variables; same parameters and
/// round order as [`hash`], so its output equals the native hash.
///
/// Cost: 3 constraints per S-box applied to a non-constant lane (x², x⁴, x⁵);
/// round constants and the MDS mix are folded into linear combinations (one
/// per lane per round, no constraints). With witness inputs and `n` inputs
/// (`t = n + 1`, `P` partial rounds) that is `3 · (8t − 1 + P)` constraints:
/// the capacity lane is the constant `0 + ark[0]` in the first round, so its
/// first S-box is free. Constant inputs make their lanes free the same way.
///
/// `cs` is the system the hash is built in; it should be the inputs' own
/// (it is only used for the constant term of a lane's linear combination).
/// A wrong number of inputs gives [`SynthesisError::Unsatisfiable`].
pub fn hash_gadget(
    cs: ConstraintSystemRef<Fr>,
    inputs: &[FpVar<Fr>],
) -> Result<FpVar<Fr>, SynthesisError> {
    let p = params(inputs.len()).map_err(|_| SynthesisError::Unsatisfiable)?;
    let t = p.width;
    let rounds = p.full_rounds + p.partial_rounds;

    let mut state: Vec<FpVar<Fr>> = Vec::with_capacity(t);
    state.push(FpVar::Constant(Fr::zero()));
    state.extend(inputs.iter().cloned());
    // Round 0's constants; later rounds' constants are folded into the
    // previous round's MDS linear combination.
    for (s, c) in state.iter_mut().zip(&p.ark[..t]) {
        *s = add_constant(s, *c);
    }

    for round in 0..rounds {
        if is_full_round(p, round) {
            for s in state.iter_mut() {
                *s = sbox_gadget(s)?;
            }
        } else {
            state[0] = sbox_gadget(&state[0])?;
        }
        let next_ark = (round + 1 < rounds).then(|| &p.ark[(round + 1) * t..(round + 2) * t]);
        state = mds_affine(&cs, &state, &p.mds, next_ark);
    }
    Ok(state.swap_remove(0))
}

/// `x + c` without creating a linear combination when `c` is zero.
fn add_constant(x: &FpVar<Fr>, c: Fr) -> FpVar<Fr> {
    if c.is_zero() { x.clone() } else { x + c }
}

/// `x^5` in 3 constraints (`x²`, `x⁴`, `x⁵`); free for a constant.
fn sbox_gadget(x: &FpVar<Fr>) -> Result<FpVar<Fr>, SynthesisError> {
    let x2 = x.square()?;
    let x4 = x2.square()?;
    Ok(x4 * x)
}

/// `MDS · state + ark`, each output lane a single linear combination.
fn mds_affine(
    cs: &ConstraintSystemRef<Fr>,
    state: &[FpVar<Fr>],
    mds: &[Vec<Fr>],
    ark: Option<&[Fr]>,
) -> Vec<FpVar<Fr>> {
    mds.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut constant = ark.map_or(Fr::zero(), |a| a[i]);
            let mut coeffs = Vec::with_capacity(row.len() + 1);
            let mut vars: Vec<AllocatedFp<Fr>> = Vec::with_capacity(row.len() + 1);
            for (m, s) in row.iter().zip(state) {
                match s {
                    FpVar::Constant(c) => constant += *m * c,
                    FpVar::Var(v) => {
                        coeffs.push(*m);
                        vars.push(v.clone());
                    }
                }
            }
            let Some(first) = vars.first() else {
                return FpVar::Constant(constant);
            };
            if !constant.is_zero() {
                let cs = cs.clone().or(first.cs.clone());
                coeffs.push(constant);
                vars.push(AllocatedFp::new(Some(Fr::one()), Variable::One, cs));
            }
            let lc = AllocatedFp::linear_combination(coeffs, &vars)
                .expect("at least one variable in the combination");
            FpVar::Var(lc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::{PrimeField, UniformRand};
    use ark_relations::gr1cs::{ConstraintSystem, SynthesisMode};
    use light_poseidon::{Poseidon, PoseidonHasher};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(0x1d_2026)
    }

    fn random_inputs(rng: &mut ChaCha20Rng, n: usize) -> Vec<Fr> {
        (0..n).map(|_| Fr::rand(rng)).collect()
    }

    /// Partial rounds per width as circomlib's table has them (index `t - 2`).
    const CIRCOM_PARTIAL_ROUNDS: [usize; 12] = [56, 57, 56, 60, 60, 63, 64, 63, 60, 66, 60, 65];

    #[test]
    fn known_vector_circomlib() {
        let expected = Fr::from_be_bytes_mod_order(
            &hex::decode("115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a")
                .unwrap(),
        );
        assert_eq!(hash(&[Fr::from(1u64), Fr::from(2u64)]).unwrap(), expected);
        assert_eq!(hash2(Fr::from(1u64), Fr::from(2u64)), expected);
    }

    #[test]
    fn parameters_are_circoms() {
        for n in MIN_INPUTS..=MAX_INPUTS {
            let p = params(n).unwrap();
            assert_eq!(p.width, n + 1);
            assert_eq!(p.full_rounds, 8);
            assert_eq!(p.partial_rounds, CIRCOM_PARTIAL_ROUNDS[n - 1]);
            assert_eq!(p.alpha, 5);
            assert_eq!(p.ark.len(), (8 + p.partial_rounds) * p.width);
            assert_eq!(p.mds.len(), p.width);
        }
    }

    #[test]
    fn native_matches_light_poseidon_all_widths() {
        let mut rng = rng();
        for n in MIN_INPUTS..=MAX_INPUTS {
            for _ in 0..3 {
                let inputs = random_inputs(&mut rng, n);
                let theirs = Poseidon::<Fr>::new_circom(n)
                    .unwrap()
                    .hash(&inputs)
                    .unwrap();
                assert_eq!(hash(&inputs).unwrap(), theirs, "width {}", n + 1);
            }
        }
    }

    #[test]
    fn input_count_out_of_range_is_an_error() {
        assert_eq!(
            hash(&[]),
            Err(ZkError::PoseidonInputCount {
                got: 0,
                min: 1,
                max: 12
            })
        );
        assert!(hash(&[Fr::one(); 13]).is_err());
        let cs = ConstraintSystem::<Fr>::new_ref();
        assert_eq!(
            hash_gadget(cs.clone(), &[]).unwrap_err(),
            SynthesisError::Unsatisfiable
        );
    }

    fn alloc_inputs(cs: &ConstraintSystemRef<Fr>, inputs: &[Fr]) -> Vec<FpVar<Fr>> {
        inputs
            .iter()
            .map(|x| FpVar::new_witness(cs.clone(), || Ok(*x)).unwrap())
            .collect()
    }

    #[test]
    fn gadget_matches_native() {
        let mut rng = rng();
        for n in [1, 2, 3, 8] {
            for _ in 0..2 {
                let inputs = random_inputs(&mut rng, n);
                let native = hash(&inputs).unwrap();
                let cs = ConstraintSystem::<Fr>::new_ref();
                let vars = alloc_inputs(&cs, &inputs);
                let out = hash_gadget(cs.clone(), &vars).unwrap();
                assert_eq!(out.value().unwrap(), native, "{n} inputs");
                // Bind the output to a public input holding the native hash.
                let public = FpVar::new_input(cs.clone(), || Ok(native)).unwrap();
                out.enforce_equal(&public).unwrap();
                assert!(cs.is_satisfied().unwrap(), "{n} inputs");
            }
        }
    }

    #[test]
    fn gadget_known_vector() {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let vars = alloc_inputs(&cs, &[Fr::from(1u64), Fr::from(2u64)]);
        let out = hash_gadget(cs.clone(), &vars).unwrap();
        assert_eq!(out.value().unwrap(), hash2(Fr::from(1u64), Fr::from(2u64)));
        assert!(cs.is_satisfied().unwrap());
    }

    #[test]
    fn gadget_with_constant_inputs_is_constant() {
        let inputs = [Fr::from(7u64), Fr::from(9u64), Fr::from(11u64)];
        let cs = ConstraintSystem::<Fr>::new_ref();
        let vars: Vec<FpVar<Fr>> = inputs.iter().map(|x| FpVar::Constant(*x)).collect();
        let out = hash_gadget(cs.clone(), &vars).unwrap();
        assert!(matches!(out, FpVar::Constant(_)));
        assert_eq!(out.value().unwrap(), hash(&inputs).unwrap());
        assert_eq!(cs.num_constraints(), 0);
    }

    #[test]
    fn gadget_wrong_output_is_unsatisfied() {
        let mut rng = rng();
        let inputs = random_inputs(&mut rng, 2);
        let cs = ConstraintSystem::<Fr>::new_ref();
        let vars = alloc_inputs(&cs, &inputs);
        let out = hash_gadget(cs.clone(), &vars).unwrap();
        let wrong = hash(&inputs).unwrap() + Fr::one();
        let public = FpVar::new_input(cs.clone(), || Ok(wrong)).unwrap();
        out.enforce_equal(&public).unwrap();
        assert!(!cs.is_satisfied().unwrap());
    }

    #[test]
    fn gadget_tampered_witness_is_unsatisfied() {
        let mut rng = rng();
        let inputs = random_inputs(&mut rng, 3);
        let cs = ConstraintSystem::<Fr>::new_ref();
        let vars = alloc_inputs(&cs, &inputs);
        let _ = hash_gadget(cs.clone(), &vars).unwrap();
        assert!(cs.is_satisfied().unwrap());
        // Every witness after the inputs is an S-box product (x², x⁴ or x⁵);
        // change one in the middle of the permutation.
        {
            let mut inner = cs.borrow_mut().unwrap();
            let w = &mut inner.assignments.witness_assignment;
            let k = inputs.len() + (w.len() - inputs.len()) / 2;
            w[k] += Fr::one();
        }
        assert!(!cs.is_satisfied().unwrap());
    }

    /// Constraints of `hash_gadget` with `n` witness inputs:
    /// `3 · (8t − 1 + P)` with `t = n + 1` and `P` circomlib's partial rounds
    /// (3 per S-box; 8t full-round S-boxes less the capacity lane's first,
    /// which is constant; one S-box per partial round).
    #[test]
    fn gadget_constraint_counts() {
        let count = |n: usize| {
            let cs = ConstraintSystem::<Fr>::new_ref();
            let vars = alloc_inputs(&cs, &vec![Fr::from(3u64); n]);
            let _ = hash_gadget(cs.clone(), &vars).unwrap();
            cs.num_constraints()
        };
        assert_eq!(count(1), 213); // t = 2, P = 56: 3 · (16 − 1 + 56)
        assert_eq!(count(2), 240); // t = 3, P = 57: 3 · (24 − 1 + 57)
        assert_eq!(count(3), 261); // t = 4, P = 56: 3 · (32 − 1 + 56)
        assert_eq!(count(8), 402); // t = 9, P = 63: 3 · (72 − 1 + 63)
        for n in MIN_INPUTS..=MAX_INPUTS {
            let t = n + 1;
            assert_eq!(count(n), 3 * (8 * t - 1 + CIRCOM_PARTIAL_ROUNDS[n - 1]));
        }
    }

    /// In setup mode (no witness values, as Groth16 key generation runs) the
    /// gadget builds the same number of constraints.
    #[test]
    fn gadget_in_setup_mode() {
        let cs = ConstraintSystem::<Fr>::new_ref();
        cs.set_mode(SynthesisMode::Setup);
        let vars: Vec<FpVar<Fr>> = (0..2)
            .map(|_| FpVar::new_witness(cs.clone(), || Ok(Fr::zero())).unwrap())
            .collect();
        let out = hash_gadget(cs.clone(), &vars).unwrap();
        assert!(out.value().is_err());
        assert_eq!(cs.num_constraints(), 240);
    }
}
