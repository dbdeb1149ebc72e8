//! A small Groth16 circuit with cheap proofs, for exercising and measuring
//! the batch verifier without the cost of BPK proofs: public `a`, `z`,
//! witness `y`, and `z = a·y^N` by `N` chained multiplications. Verification
//! cost depends on the number of public inputs, not on `N`.

use ark_bn254::Bn254;
use ark_ff::{Field, UniformRand};
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey};
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use ark_snark::SNARK;
use ark_std::rand::{CryptoRng, RngCore};

use crate::{Fr, ZkError};

/// Multiplications in the circuit.
pub const POW_N: u64 = 300;

/// `z = a·y^POW_N` with public `a`, `z` and witness `y`; `None`s for setup.
#[derive(Clone, Copy, Debug, Default)]
pub struct PowCircuit {
    /// Public base.
    pub a: Option<Fr>,
    /// Witness.
    pub y: Option<Fr>,
    /// Public result.
    pub z: Option<Fr>,
}

impl ConstraintSynthesizer<Fr> for PowCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let missing = || SynthesisError::AssignmentMissing;
        let a = FpVar::new_input(cs.clone(), || self.a.ok_or_else(missing))?;
        let z = FpVar::new_input(cs.clone(), || self.z.ok_or_else(missing))?;
        let y = FpVar::new_witness(cs, || self.y.ok_or_else(missing))?;
        let mut v = a;
        for _ in 0..POW_N {
            v = &v * &y;
        }
        v.enforce_equal(&z)
    }
}

/// Keys of the [`PowCircuit`].
pub struct PowKeys {
    /// Proving key.
    pub pk: ProvingKey<Bn254>,
    /// Prepared verifying key.
    pub pvk: PreparedVerifyingKey<Bn254>,
}

impl PowKeys {
    /// Circuit-specific setup (for tests and benches: the randomness is the
    /// caller's, there is no ceremony).
    pub fn setup<R: RngCore + CryptoRng>(rng: &mut R) -> Result<Self, ZkError> {
        let (pk, vk) = Groth16::<Bn254>::circuit_specific_setup(PowCircuit::default(), rng)
            .map_err(ZkError::Synthesis)?;
        Ok(Self {
            pvk: crate::groth::prepare_verifying_key(&vk),
            pk,
        })
    }

    /// A proof of a random true statement, with its public inputs `[a, z]`.
    pub fn prove<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<(Vec<Fr>, Proof<Bn254>), ZkError> {
        let (a, y) = (Fr::rand(rng), Fr::rand(rng));
        let z = a * y.pow([POW_N]);
        let circuit = PowCircuit {
            a: Some(a),
            y: Some(y),
            z: Some(z),
        };
        let proof = Groth16::<Bn254>::prove(&self.pk, circuit, rng).map_err(ZkError::Synthesis)?;
        Ok((vec![a, z], proof))
    }
}
