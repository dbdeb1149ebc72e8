//! Groth16 over BN254 for the BPK circuit ([`crate::circuit`]).
//!
//! * [`setup`]: circuit-specific setup for parameters D, K (a trusted setup:
//!   whoever knows the randomness drawn from `rng` can forge proofs; a real
//!   deployment runs a ceremony and loads the keys).
//! * [`prove`]: checks that the witness satisfies the circuit for the given
//!   public inputs and that the key fits its shape, then proves.
//! * [`verify`] / [`verify_prepared`]: the pairing check against the public
//!   inputs in the order of [`PublicInputs::to_field_elements`].
//!
//! Errors come back as [`ZkError`]; nothing here panics on bad inputs.

use ark_bn254::Bn254;
use ark_ff::UniformRand;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, R1CS_PREDICATE_LABEL,
    SynthesisError, SynthesisMode, mat_vec_mul,
};
use ark_snark::SNARK;
use ark_std::rand::{CryptoRng, RngCore};

use crate::circuit::{BpkCircuit, BpkParams, BpkWitness, NUM_PUBLIC_INPUTS, PublicInputs};
use crate::{Fr, ZkError};

pub use ark_groth16::prepare_verifying_key;

/// Circuit-specific Groth16 setup of the BPK circuit with `dim` (D) and
/// `clusters` (K) coordinates/centroids.
pub fn setup<R: RngCore + CryptoRng>(
    dim: usize,
    clusters: usize,
    rng: &mut R,
) -> Result<(ProvingKey<Bn254>, VerifyingKey<Bn254>), ZkError> {
    let params = BpkParams::new(dim, clusters)?;
    Ok(Groth16::<Bn254>::circuit_specific_setup(
        BpkCircuit::for_setup(params),
        rng,
    )?)
}

/// A Groth16 proof that `witness` satisfies the BPK circuit for `public`.
///
/// D and K come from the witness; [`ZkError::KeyMismatch`] if `pk` was made
/// for a different shape, [`ZkError::Unsatisfied`] if the witness does not
/// satisfy the circuit (wrong secret or path, not the nearest cluster, a
/// coordinate out of range, wrong nullifier or commitment, ...).
///
/// The circuit is synthesized once, as ark-groth16's own prover does it; the
/// R1CS is checked (`A·z ∘ B·z = C·z`) on the same matrices the proof is
/// built from, before any group arithmetic. (ark-groth16's prover would
/// otherwise build a proof that does not verify, or panic under debug
/// assertions.)
pub fn prove<R: RngCore + CryptoRng>(
    pk: &ProvingKey<Bn254>,
    public: &PublicInputs,
    witness: &BpkWitness,
    rng: &mut R,
) -> Result<Proof<Bn254>, ZkError> {
    let circuit = BpkCircuit::new(*public, witness.clone())?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    // The same goal and mode as ark-groth16's setup and prover, so the
    // variable counts compare with the key's.
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove {
        construct_matrices: true,
        generate_lc_assignments: false,
    });
    circuit.generate_constraints(cs.clone())?;
    cs.finalize();

    let num_inputs = cs.num_instance_variables();
    let num_variables = num_inputs + cs.num_witness_variables();
    if pk.vk.gamma_abc_g1.len() != num_inputs {
        return Err(ZkError::KeyMismatch("number of public inputs"));
    }
    if pk.a_query.len() != num_variables || pk.b_g2_query.len() != num_variables {
        return Err(ZkError::KeyMismatch("number of variables"));
    }

    let matrices = cs.to_matrices()?;
    let r1cs = matrices
        .get(R1CS_PREDICATE_LABEL)
        .filter(|m| m.len() == 3)
        .ok_or(ZkError::Synthesis(SynthesisError::PredicateNotFound))?;
    let z = [cs.instance_assignment()?, cs.witness_assignment()?].concat();
    let (a, b, c) = (
        mat_vec_mul(&r1cs[0], &z),
        mat_vec_mul(&r1cs[1], &z),
        mat_vec_mul(&r1cs[2], &z),
    );
    if !a.iter().zip(&b).zip(&c).all(|((a, b), c)| *a * b == *c) {
        return Err(ZkError::Unsatisfied);
    }

    let r = Fr::rand(rng);
    let s = Fr::rand(rng);
    Ok(Groth16::<Bn254>::create_proof_with_reduction_and_matrices(
        pk,
        r,
        s,
        r1cs,
        num_inputs,
        cs.num_constraints(),
        &z,
    )?)
}

/// Verifies `proof` for `public` against `vk` (prepares the key first; to
/// verify many proofs, prepare once and use [`verify_prepared`]).
pub fn verify(
    vk: &VerifyingKey<Bn254>,
    public: &PublicInputs,
    proof: &Proof<Bn254>,
) -> Result<bool, ZkError> {
    verify_prepared(&prepare_verifying_key(vk), public, proof)
}

/// Verifies `proof` for `public` against a prepared key. `Ok(false)` for a
/// proof that does not verify; [`ZkError::KeyMismatch`] if the key is not
/// for this circuit's number of public inputs (ark-groth16 would silently
/// ignore extra inputs).
pub fn verify_prepared(
    pvk: &PreparedVerifyingKey<Bn254>,
    public: &PublicInputs,
    proof: &Proof<Bn254>,
) -> Result<bool, ZkError> {
    if pvk.vk.gamma_abc_g1.len() != NUM_PUBLIC_INPUTS + 1 {
        return Err(ZkError::KeyMismatch("number of public inputs"));
    }
    Ok(Groth16::<Bn254>::verify_with_processed_vk(
        pvk,
        &public.to_field_elements(),
        proof,
    )?)
}
