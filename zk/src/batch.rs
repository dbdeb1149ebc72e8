//! Batch verification of Groth16 proofs over BN254 under one verifying key.
//!
//! A single Groth16 proof `(A, B, C)` for public inputs `x` verifies when
//!
//! ```text
//! e(A, B) = e(α, β) · e(vk_x, γ) · e(C, δ),   vk_x = IC₀ + Σⱼ xⱼ·ICⱼ
//! ```
//!
//! which costs three Miller loops and one final exponentiation per proof.
//! For `n` proofs, [`batch_verify`] draws random scalars `rᵢ` (`r₀ = 1`, the
//! others random non-zero 128-bit numbers) and checks the random linear
//! combination
//!
//! ```text
//! Πᵢ e(rᵢ·Aᵢ, Bᵢ) · e(−(Σrᵢ)·α, β) · e(−Σᵢ rᵢ·vk_xᵢ, γ) · e(−Σᵢ rᵢ·Cᵢ, δ) = 1
//! ```
//!
//! with one multi-Miller loop over `n + 3` pairs and one final
//! exponentiation. `Σᵢ rᵢ·vk_xᵢ` is computed as one MSM over the key's IC
//! points with aggregated scalars, `(Σrᵢ)·IC₀ + Σⱼ (Σᵢ rᵢ·xᵢⱼ)·ICⱼ`, and
//! `Σᵢ rᵢ·Cᵢ` as one MSM over the `Cᵢ`; the `rᵢ·Aᵢ` are `n` independent
//! scalar multiplications ([`G1Msm::scale_each`]). A batch with a bad proof
//! passes with probability at most about `2⁻¹²⁷` over the choice of the `rᵢ`
//! (which must therefore come from a source the prover cannot predict); a
//! batch of good proofs always passes.
//!
//! [`batch_verify_bisect`] names the bad proofs of a failing batch: it halves
//! failing ranges (a bounded recursion, depth `log₂ n`), checks ranges of at
//! most [`SINGLE_THRESHOLD`] proofs one by one with the ordinary verifier,
//! and reports only proofs that fail that ordinary check, so a good proof is
//! never reported.
//!
//! The MSMs go through the [`G1Msm`] trait so that another backend (the GPU
//! kernels) can take them; [`CpuMsm`] uses arkworks' multi-threaded Pippenger.
//!
//! # Points must be valid
//!
//! Like the ordinary verifier, this assumes every proof point is on the curve
//! and in the prime-order subgroup (`A`, `C` in G1, `B` in G2). Proofs that
//! come from outside must be deserialised with validation (arkworks'
//! `CanonicalDeserialize::deserialize_compressed` / `Validate::Yes`, which
//! checks both); proofs built in memory by the prover satisfy it. Points
//! outside the subgroup can make the random linear combination unsound.

use ark_bn254::{Bn254, Config as BnParams, Fq12, Fr, G1Affine, G1Projective};
use ark_ec::bn::{BnConfig, TwistType, g2::EllCoeff};
use ark_ec::pairing::{MillerLoopOutput, Pairing};
use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
use ark_ff::{CyclotomicMultSubgroup, Field, One, Zero};
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof};
use ark_std::rand::RngCore;
use rayon::prelude::*;

use crate::ZkError;
use crate::circuit::{NUM_PUBLIC_INPUTS, PublicInputs};

/// Ranges of at most this many proofs are checked one by one with the
/// ordinary verifier during bisection (a batch check of a range this small
/// saves little and would need splitting again if it fails).
pub const SINGLE_THRESHOLD: usize = 4;

/// One proof with its public inputs (without the leading constant 1), in the
/// order the circuit allocates them.
pub type BatchItem<'a> = (&'a [Fr], &'a Proof<Bn254>);

type G2Prepared = <Bn254 as Pairing>::G2Prepared;

/// The G1 multi-scalar multiplications the batch verifier needs, behind a
/// trait so that a GPU backend can take them.
pub trait G1Msm: Sync {
    /// `Σᵢ scalars[i]·bases[i]`. The batch verifier always passes slices of
    /// equal length.
    fn msm(&self, bases: &[G1Affine], scalars: &[Fr]) -> G1Projective;

    /// `[scalars[i]·bases[i]]` (affine), for equal-length slices. The
    /// default runs the scalar multiplications on rayon's pool and
    /// normalises them with one batch inversion.
    fn scale_each(&self, bases: &[G1Affine], scalars: &[Fr]) -> Vec<G1Affine> {
        let scaled: Vec<G1Projective> = bases
            .par_iter()
            .zip(scalars.par_iter())
            .map(|(b, s)| *b * s)
            .collect();
        G1Projective::normalize_batch(&scaled)
    }
}

/// The CPU backend: arkworks' `VariableBaseMSM` (Pippenger, on all cores
/// through ark's `parallel` feature).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMsm;

impl G1Msm for CpuMsm {
    fn msm(&self, bases: &[G1Affine], scalars: &[Fr]) -> G1Projective {
        let n = bases.len().min(scalars.len());
        G1Projective::msm_unchecked(&bases[..n], &scalars[..n])
    }
}

/// Checks that the key has an IC point for the constant and that every item
/// has exactly the key's number of public inputs.
fn check_shape(pvk: &PreparedVerifyingKey<Bn254>, items: &[BatchItem<'_>]) -> Result<(), ZkError> {
    let ic = &pvk.vk.gamma_abc_g1;
    if ic.is_empty() {
        return Err(ZkError::KeyMismatch("verifying key has no IC points"));
    }
    let expected = ic.len() - 1;
    match items.iter().position(|(x, _)| x.len() != expected) {
        Some(index) => Err(ZkError::BatchInputCount {
            index,
            expected,
            got: items[index].0.len(),
        }),
        None => Ok(()),
    }
}

/// A random non-zero scalar below 2^128.
fn random_scalar<R: RngCore + ?Sized>(rng: &mut R) -> Fr {
    loop {
        let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if r != 0 {
            return Fr::from(r);
        }
    }
}

/// The random-linear-combination check of `items`, whose shape has been
/// checked. `true` for an empty slice.
fn check_batch<M: G1Msm + ?Sized, R: RngCore + ?Sized>(
    pvk: &PreparedVerifyingKey<Bn254>,
    items: &[BatchItem<'_>],
    msm: &M,
    rng: &mut R,
) -> bool {
    let n = items.len();
    if n == 0 {
        return true;
    }
    let vk = &pvk.vk;
    let ic = &vk.gamma_abc_g1;

    let mut r = Vec::with_capacity(n);
    r.push(Fr::one());
    r.extend((1..n).map(|_| random_scalar(rng)));

    // Aggregated IC scalars: (Σrᵢ, Σᵢ rᵢ·xᵢ₁, ..., Σᵢ rᵢ·xᵢₘ).
    let mut ic_scalars = vec![Fr::zero(); ic.len()];
    for (ri, (x, _)) in r.iter().zip(items) {
        ic_scalars[0] += ri;
        for (s, xj) in ic_scalars[1..].iter_mut().zip(x.iter()) {
            *s += *ri * xj;
        }
    }
    let r_sum = ic_scalars[0];

    let a: Vec<G1Affine> = items.iter().map(|(_, p)| p.a).collect();
    let c: Vec<G1Affine> = items.iter().map(|(_, p)| p.c).collect();
    let ra = msm.scale_each(&a, &r);
    let rc = msm.msm(&c, &r);
    let vk_x = msm.msm(ic, &ic_scalars);
    let alpha = vk.alpha_g1 * r_sum;

    // G1 side: rᵢ·Aᵢ, then the right-hand side's points, α's negated; the
    // key's prepared G2 points are already −γ and −δ, and e(P, −Q) = e(−P, Q).
    let right = G1Projective::normalize_batch(&[-alpha, vk_x, rc]);
    let g1: Vec<G1Affine> = ra.into_iter().chain(right).collect();
    // G2 side: the Bᵢ (prepared in parallel; ark would prepare them one after
    // the other), β, −γ, −δ.
    let beta = G2Prepared::from(vk.beta_g2);
    let b: Vec<G2Prepared> = items.par_iter().map(|(_, p)| p.b.into()).collect();
    let g2: Vec<&G2Prepared> = b
        .iter()
        .chain([&beta, &pvk.gamma_g2_neg_pc, &pvk.delta_g2_neg_pc])
        .collect();

    let mml = multi_miller_loop(&g1, &g2);
    Bn254::final_exponentiation(mml).is_some_and(|out| out.0.is_one())
}

/// `Πᵢ f(pᵢ, qᵢ)`, the product of the Miller loops of the pairs, as ark's
/// `Bn254::multi_miller_loop` computes it (pairs with a zero point skipped),
/// but split into one chunk per rayon thread rather than chunks of 4 pairs.
///
/// A multi-Miller loop shares one squaring of the accumulator per step among
/// all the pairs of a chunk, and the loop's output is multiplicative over the
/// pairs, so each chunk runs the whole loop on its own accumulator and the
/// chunks' outputs are multiplied before the one final exponentiation. With
/// ark's chunks of 4, every 4 pairs pay for a whole loop's squarings (the
/// loop took about a quarter longer on a 2-core machine); with one chunk per
/// thread the squarings are a fixed cost per batch. The output is the same
/// field element as ark's (a unit test checks it).
fn multi_miller_loop(g1: &[G1Affine], g2: &[&G2Prepared]) -> MillerLoopOutput<Bn254> {
    let pairs: Vec<(&G1Affine, &[EllCoeff<BnParams>])> = g1
        .iter()
        .zip(g2)
        .filter(|(p, q)| !p.is_zero() && !q.is_zero())
        .map(|(p, q)| (p, q.ell_coeffs.as_slice()))
        .collect();
    let chunk = pairs
        .len()
        .div_ceil(rayon::current_num_threads().max(1))
        .max(1);
    let f = pairs
        .par_chunks(chunk)
        .map(miller_loop_chunk)
        .reduce(Fq12::one, |a, b| a * b);
    MillerLoopOutput(f)
}

/// The Miller loop of one chunk of pairs (a G1 point and its G2 point's line
/// coefficients, in the order `G2Prepared` stores them), step for step as
/// ark's `BnConfig::multi_miller_loop` runs it on one of its chunks.
fn miller_loop_chunk(pairs: &[(&G1Affine, &[EllCoeff<BnParams>])]) -> Fq12 {
    let ell = |f: &mut Fq12, coeffs: &EllCoeff<BnParams>, p: &G1Affine| {
        let (mut c0, mut c1, mut c2) = *coeffs;
        match <BnParams as BnConfig>::TWIST_TYPE {
            TwistType::M => {
                c2.mul_assign_by_fp(&p.y);
                c1.mul_assign_by_fp(&p.x);
                f.mul_by_014(&c0, &c1, &c2);
            }
            TwistType::D => {
                c0.mul_assign_by_fp(&p.y);
                c1.mul_assign_by_fp(&p.x);
                f.mul_by_034(&c0, &c1, &c2);
            }
        }
    };
    let ate = <BnParams as BnConfig>::ATE_LOOP_COUNT;
    let mut f = Fq12::one();
    // Index of the next coefficient, the same for every pair.
    let mut next = 0;
    for i in (1..ate.len()).rev() {
        if i != ate.len() - 1 {
            f.square_in_place();
        }
        for (p, coeffs) in pairs {
            ell(&mut f, &coeffs[next], p);
        }
        next += 1;
        if ate[i - 1] == 1 || ate[i - 1] == -1 {
            for (p, coeffs) in pairs {
                ell(&mut f, &coeffs[next], p);
            }
            next += 1;
        }
    }
    // ark conjugates the product of its chunks before the last two lines;
    // conjugation is multiplicative, so each chunk can do it on its own.
    if <BnParams as BnConfig>::X_IS_NEGATIVE {
        f.cyclotomic_inverse_in_place();
    }
    for (p, coeffs) in pairs {
        ell(&mut f, &coeffs[next], p);
        ell(&mut f, &coeffs[next + 1], p);
    }
    f
}

/// Verifies all `items` against `pvk` at once (see the module docs).
/// `Ok(true)` if every proof verifies (always so for an empty batch);
/// `Ok(false)` if at least one does not, except with probability about
/// `2⁻¹²⁷` over `rng`, which must be unpredictable to whoever made the
/// proofs. [`ZkError::BatchInputCount`] if an item does not have exactly the
/// key's number of public inputs, [`ZkError::KeyMismatch`] for a key with no
/// IC points. Proof points must be valid subgroup points (module docs).
pub fn batch_verify<M: G1Msm + ?Sized, R: RngCore + ?Sized>(
    pvk: &PreparedVerifyingKey<Bn254>,
    items: &[BatchItem<'_>],
    msm: &M,
    rng: &mut R,
) -> Result<bool, ZkError> {
    check_shape(pvk, items)?;
    Ok(check_batch(pvk, items, msm, rng))
}

/// The indices (sorted, ascending) of the proofs in `items` that do not
/// verify; empty if all do. Runs one batch check first; if it fails, halves
/// the failing ranges, checking ranges of at most [`SINGLE_THRESHOLD`] proofs
/// singly with the ordinary verifier. Only proofs that fail the ordinary
/// verifier are reported. Errors as [`batch_verify`].
pub fn batch_verify_bisect<M: G1Msm + ?Sized, R: RngCore + ?Sized>(
    pvk: &PreparedVerifyingKey<Bn254>,
    items: &[BatchItem<'_>],
    msm: &M,
    rng: &mut R,
) -> Result<Vec<usize>, ZkError> {
    check_shape(pvk, items)?;
    let mut bad = Vec::new();
    bisect(pvk, items, 0, false, msm, rng, &mut bad)?;
    Ok(bad)
}

/// Appends to `bad` the indices (offset by `base`) of the failing proofs of
/// `items`. `known_failing`: the range is already known to fail (its sibling
/// passed while their parent failed), so the batch check is skipped.
/// Recursion depth is at most `log₂(len)`; indices come out in order.
fn bisect<M: G1Msm + ?Sized, R: RngCore + ?Sized>(
    pvk: &PreparedVerifyingKey<Bn254>,
    items: &[BatchItem<'_>],
    base: usize,
    known_failing: bool,
    msm: &M,
    rng: &mut R,
    bad: &mut Vec<usize>,
) -> Result<(), ZkError> {
    if items.len() <= SINGLE_THRESHOLD {
        for (i, (x, proof)) in items.iter().enumerate() {
            if !Groth16::<Bn254>::verify_proof(pvk, proof, x)? {
                bad.push(base + i);
            }
        }
        return Ok(());
    }
    if !known_failing && check_batch(pvk, items, msm, rng) {
        return Ok(());
    }
    let mid = items.len() / 2;
    let before = bad.len();
    bisect(pvk, &items[..mid], base, false, msm, rng, bad)?;
    // If the left half is clean, the bad proof is on the right.
    let right_known = bad.len() == before;
    bisect(pvk, &items[mid..], base + mid, right_known, msm, rng, bad)
}

/// The BPK circuit's instances: checks that `pvk` is for the BPK circuit's
/// number of public inputs and converts each [`PublicInputs`] to field
/// elements, ready for [`batch_verify`] / [`batch_verify_bisect`].
pub fn bpk_inputs(
    pvk: &PreparedVerifyingKey<Bn254>,
    publics: &[PublicInputs],
) -> Result<Vec<Vec<Fr>>, ZkError> {
    if pvk.vk.gamma_abc_g1.len() != NUM_PUBLIC_INPUTS + 1 {
        return Err(ZkError::KeyMismatch("number of public inputs"));
    }
    Ok(publics
        .iter()
        .map(PublicInputs::to_field_elements)
        .collect())
}

#[cfg(test)]
mod tests {
    use ark_bn254::G2Projective;
    use ark_ff::UniformRand;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// The chunked multi-Miller loop gives exactly ark's output (before the
    /// final exponentiation), for any number of pairs and threads, zero
    /// points included.
    #[test]
    fn multi_miller_loop_matches_ark() {
        let mut rng = ChaCha20Rng::seed_from_u64(0x3111e4);
        for n in [0, 1, 2, 3, 4, 5, 7, 9, 16, 33] {
            let mut g1: Vec<G1Affine> = (0..n)
                .map(|_| G1Projective::rand(&mut rng).into_affine())
                .collect();
            let mut g2: Vec<G2Prepared> = (0..n)
                .map(|_| G2Prepared::from(G2Projective::rand(&mut rng).into_affine()))
                .collect();
            if n > 3 {
                g1[1] = G1Affine::zero();
                g2[3] = G2Prepared::from(ark_bn254::G2Affine::zero());
            }
            let ark = Bn254::multi_miller_loop(g1.clone(), g2.clone());
            let refs: Vec<&G2Prepared> = g2.iter().collect();
            for threads in [1, 2, 3, 8] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let ours = pool.install(|| multi_miller_loop(&g1, &refs));
                assert_eq!(ours, ark, "{n} pairs, {threads} threads");
            }
        }
    }
}
