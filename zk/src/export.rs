//! Keys and proofs on disk and in snarkjs's JSON format.
//!
//! * **Binary** (ours): proving key, verifying key and proof in arkworks'
//!   compressed [`CanonicalSerialize`] encoding. Reading one back
//!   ([`proving_key_from_bytes`], [`verifying_key_from_bytes`],
//!   [`proof_from_bytes`]) validates every point (on the curve, in the
//!   prime-order subgroup) and rejects trailing bytes.
//! * **snarkjs JSON**, exactly as `snarkjs groth16 prove` and
//!   `snarkjs zkey export verificationkey` write it, so that circuit
//!   developers can check our proofs with
//!   `snarkjs groth16 verify verification_key.json public.json proof.json`:
//!   - every number is a decimal string;
//!   - a G1 point is projective `["x", "y", "1"]` (the point at infinity
//!     `["0", "1", "0"]`);
//!   - a G2 point is `[[x.c0, x.c1], [y.c0, y.c1], ["1", "0"]]`: an Fq2
//!     element `c0 + c1·u` is written `["c0", "c1"]` (ffjavascript's
//!     `F2.toObject`, real part first);
//!   - the verification key ([`SnarkjsVerifyingKey`]) has `protocol:
//!     "groth16"`, `curve: "bn128"`, `nPublic`, `vk_alpha_1`, `vk_beta_2`,
//!     `vk_gamma_2`, `vk_delta_2`, `vk_alphabeta_12` (`e(α, β)` in Fq12 as
//!     `[[a, b, c], [d, e, f]]` of Fq2 pairs; written for completeness,
//!     `snarkjs groth16 verify` does not read it, and it is ignored on
//!     input) and `IC` (our `gamma_abc_g1`);
//!   - the proof ([`SnarkjsProof`]) has `pi_a`, `pi_b`, `pi_c`, `protocol`,
//!     `curve`;
//!   - the public signals are an array of decimal strings in the order of
//!     [`PublicInputs::to_field_elements`].
//!
//! Files are hostile input: every parser here returns
//! [`ZkError::Malformed`] on anything it does not accept (non-canonical
//! numbers, points off the curve or outside the subgroup, projective
//! coordinates other than `z = 1` or the point at infinity, wrong lengths);
//! none of them panics.

use ark_bn254::{Bn254, Fq, Fq2, Fq12, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ec::pairing::Pairing;
use ark_ff::{BigInt, BigInteger, PrimeField, Zero};
use ark_groth16::{Proof, ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use serde::{Deserialize, Serialize};

use crate::circuit::{NUM_PUBLIC_INPUTS, PublicInputs};
use crate::{Fr, ZkError};

/// The BPK proving key (Groth16 over BN254).
pub type BpkProvingKey = ProvingKey<Bn254>;
/// The BPK verifying key (Groth16 over BN254).
pub type BpkVerifyingKey = VerifyingKey<Bn254>;
/// A BPK proof (Groth16 over BN254).
pub type BpkProof = Proof<Bn254>;

/// File name of the binary proving key written by setup.
pub const PROVING_KEY_FILE: &str = "proving.key";
/// File name of the binary verifying key written by setup.
pub const VERIFYING_KEY_FILE: &str = "verifying.key";
/// File name of the snarkjs verification key written by setup.
pub const SNARKJS_VK_FILE: &str = "verification_key.json";
/// File name of the snarkjs proof written by the prover.
pub const SNARKJS_PROOF_FILE: &str = "proof.json";
/// File name of the snarkjs public signals written by the prover.
pub const SNARKJS_PUBLIC_FILE: &str = "public.json";
/// File name of the binary proof written by the prover.
pub const PROOF_FILE: &str = "proof.bin";

fn malformed(what: &'static str, reason: impl ToString) -> ZkError {
    ZkError::Malformed {
        what,
        reason: reason.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Binary (arkworks compressed).
// ---------------------------------------------------------------------------

fn to_bytes<T: CanonicalSerialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.compressed_size());
    value
        .serialize_compressed(&mut out)
        .expect("serialising into a Vec cannot fail");
    out
}

fn from_bytes<T: CanonicalDeserialize>(what: &'static str, bytes: &[u8]) -> Result<T, ZkError> {
    let mut reader = bytes;
    // Validates: points on the curve and in the prime-order subgroup.
    let value = T::deserialize_compressed(&mut reader).map_err(|e| malformed(what, e))?;
    if !reader.is_empty() {
        return Err(malformed(what, format!("{} trailing bytes", reader.len())));
    }
    Ok(value)
}

/// The proving key in arkworks' compressed encoding.
pub fn proving_key_to_bytes(pk: &ProvingKey<Bn254>) -> Vec<u8> {
    to_bytes(pk)
}

/// A proving key from [`proving_key_to_bytes`]'s encoding (every point
/// validated).
pub fn proving_key_from_bytes(bytes: &[u8]) -> Result<ProvingKey<Bn254>, ZkError> {
    from_bytes("proving key", bytes)
}

/// The verifying key in arkworks' compressed encoding.
pub fn verifying_key_to_bytes(vk: &VerifyingKey<Bn254>) -> Vec<u8> {
    to_bytes(vk)
}

/// A verifying key from [`verifying_key_to_bytes`]'s encoding (every point
/// validated).
pub fn verifying_key_from_bytes(bytes: &[u8]) -> Result<VerifyingKey<Bn254>, ZkError> {
    from_bytes("verifying key", bytes)
}

/// The proof in arkworks' compressed encoding (128 bytes).
pub fn proof_to_bytes(proof: &Proof<Bn254>) -> Vec<u8> {
    to_bytes(proof)
}

/// A proof from [`proof_to_bytes`]'s encoding (every point validated).
pub fn proof_from_bytes(bytes: &[u8]) -> Result<Proof<Bn254>, ZkError> {
    from_bytes("proof", bytes)
}

// ---------------------------------------------------------------------------
// Numbers.
// ---------------------------------------------------------------------------

/// A field element from a canonical decimal string (digits only, value below
/// the modulus; no sign, no reduction).
fn field_from_decimal<F: PrimeField<BigInt = BigInt<4>>>(s: &str) -> Option<F> {
    if s.is_empty() || s.len() > 80 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut limbs = [0u64; 4];
    for digit in s.bytes().map(|b| u64::from(b - b'0')) {
        let mut carry = u128::from(digit);
        for limb in &mut limbs {
            let v = u128::from(*limb) * 10 + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        if carry != 0 {
            return None;
        }
    }
    F::from_bigint(BigInt::new(limbs))
}

/// A field element from `0x`-prefixed hex (at most 64 digits, value below the
/// modulus).
fn field_from_hex<F: PrimeField<BigInt = BigInt<4>>>(hex: &str) -> Option<F> {
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut limbs = [0u64; 4];
    for (i, digit) in hex.bytes().rev().enumerate() {
        let nibble = u64::from((digit as char).to_digit(16)?);
        limbs[i / 16] |= nibble << (4 * (i % 16));
    }
    F::from_bigint(BigInt::new(limbs))
}

/// A field element as 32 bytes, big-endian: its form on the wire and in
/// the chain's state.
pub fn fr_to_be_bytes(x: &Fr) -> [u8; 32] {
    let v = x.into_bigint().to_bytes_be();
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(&v);
    out
}

/// The field element of 32 big-endian bytes, or `None` if they are not
/// below the modulus (every element has exactly one encoding).
pub fn fr_from_be_bytes(b: &[u8; 32]) -> Option<Fr> {
    let x = Fr::from_be_bytes_mod_order(b);
    (fr_to_be_bytes(&x) == *b).then_some(x)
}

/// A field element as `0x` and 64 lower-case hex digits, big-endian (what
/// [`parse_fr`] reads back).
pub fn fr_to_hex(x: Fr) -> String {
    let mut s = String::with_capacity(66);
    s.push_str("0x");
    for b in fr_to_be_bytes(&x) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An element of [`Fr`] from a decimal string or `0x`-prefixed hex, canonical
/// (below the modulus, never reduced). Used for secrets and scopes in input
/// files and for public signals.
pub fn parse_fr(s: &str) -> Result<Fr, ZkError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => field_from_hex(hex),
        None => field_from_decimal(s),
    };
    parsed.ok_or_else(|| {
        malformed(
            "field element",
            format!("{s:?} is not a decimal or 0x-hex number below the BN254 scalar modulus"),
        )
    })
}

fn parse_fq(what: &'static str, s: &str) -> Result<Fq, ZkError> {
    field_from_decimal(s).ok_or_else(|| {
        malformed(
            what,
            format!("coordinate {s:?} is not a decimal number below the BN254 base modulus"),
        )
    })
}

// ---------------------------------------------------------------------------
// Points.
// ---------------------------------------------------------------------------

/// A G1 point as snarkjs writes it: `["x", "y", "z"]`.
pub type SnarkjsG1 = [String; 3];
/// An Fq2 element as snarkjs writes it: `["c0", "c1"]`.
pub type SnarkjsFq2 = [String; 2];
/// A G2 point as snarkjs writes it: `[x, y, z]` of Fq2 pairs.
pub type SnarkjsG2 = [SnarkjsFq2; 3];
/// An Fq12 element as snarkjs writes it: two Fq6 of three Fq2 each.
pub type SnarkjsFq12 = [[SnarkjsFq2; 3]; 2];

fn fq2_to_json(v: &Fq2) -> SnarkjsFq2 {
    [v.c0.to_string(), v.c1.to_string()]
}

fn fq12_to_json(v: &Fq12) -> SnarkjsFq12 {
    [
        [
            fq2_to_json(&v.c0.c0),
            fq2_to_json(&v.c0.c1),
            fq2_to_json(&v.c0.c2),
        ],
        [
            fq2_to_json(&v.c1.c0),
            fq2_to_json(&v.c1.c1),
            fq2_to_json(&v.c1.c2),
        ],
    ]
}

/// `[x, y, "1"]`, or `["0", "1", "0"]` for the point at infinity.
pub fn g1_to_json(p: &G1Affine) -> SnarkjsG1 {
    match p.xy() {
        Some((x, y)) => [x.to_string(), y.to_string(), "1".into()],
        None => ["0".into(), "1".into(), "0".into()],
    }
}

/// `[[x.c0, x.c1], [y.c0, y.c1], ["1", "0"]]`, or `[["0", "0"], ["1", "0"],
/// ["0", "0"]]` for the point at infinity.
pub fn g2_to_json(p: &G2Affine) -> SnarkjsG2 {
    match p.xy() {
        Some((x, y)) => [fq2_to_json(&x), fq2_to_json(&y), ["1".into(), "0".into()]],
        None => [
            ["0".into(), "0".into()],
            ["1".into(), "0".into()],
            ["0".into(), "0".into()],
        ],
    }
}

/// A G1 point from `[x, y, z]` with `z = 1` (affine) or `z = 0` (infinity),
/// checked to be on the curve (BN254's G1 has cofactor 1).
pub fn g1_from_json(what: &'static str, p: &SnarkjsG1) -> Result<G1Affine, ZkError> {
    let [x, y, z] = [
        parse_fq(what, &p[0])?,
        parse_fq(what, &p[1])?,
        parse_fq(what, &p[2])?,
    ];
    if z.is_zero() {
        return Ok(G1Affine::identity());
    }
    if z != Fq::from(1u64) {
        return Err(malformed(what, "G1 point with z other than 0 or 1"));
    }
    let point = G1Affine::new_unchecked(x, y);
    if !point.is_on_curve() || !point.is_in_correct_subgroup_assuming_on_curve() {
        return Err(malformed(what, "G1 point not on the curve"));
    }
    Ok(point)
}

/// A G2 point from `[x, y, z]` of Fq2 pairs with `z = 1` or `z = 0`, checked
/// to be on the curve and in the prime-order subgroup.
pub fn g2_from_json(what: &'static str, p: &SnarkjsG2) -> Result<G2Affine, ZkError> {
    let fq2 = |c: &SnarkjsFq2| -> Result<Fq2, ZkError> {
        Ok(Fq2::new(parse_fq(what, &c[0])?, parse_fq(what, &c[1])?))
    };
    let [x, y, z] = [fq2(&p[0])?, fq2(&p[1])?, fq2(&p[2])?];
    if z.is_zero() {
        return Ok(G2Affine::identity());
    }
    if z != Fq2::from(1u64) {
        return Err(malformed(what, "G2 point with z other than 0 or 1"));
    }
    let point = G2Affine::new_unchecked(x, y);
    if !point.is_on_curve() {
        return Err(malformed(what, "G2 point not on the curve"));
    }
    if !point.is_in_correct_subgroup_assuming_on_curve() {
        return Err(malformed(what, "G2 point not in the prime-order subgroup"));
    }
    Ok(point)
}

// ---------------------------------------------------------------------------
// Verification key, proof, public signals.
// ---------------------------------------------------------------------------

/// The protocol name snarkjs writes and checks.
pub const SNARKJS_PROTOCOL: &str = "groth16";
/// snarkjs's name for BN254.
pub const SNARKJS_CURVE: &str = "bn128";

/// Curve names that ffjavascript resolves to BN254.
fn check_header(what: &'static str, protocol: &str, curve: &str) -> Result<(), ZkError> {
    if protocol != SNARKJS_PROTOCOL {
        return Err(malformed(
            what,
            format!("protocol {protocol:?}, expected \"groth16\""),
        ));
    }
    if !matches!(
        curve.to_ascii_lowercase().as_str(),
        "bn128" | "bn254" | "altbn128"
    ) {
        return Err(malformed(
            what,
            format!("curve {curve:?}, expected \"bn128\""),
        ));
    }
    Ok(())
}

/// A Groth16 verification key as snarkjs writes it (`verification_key.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnarkjsVerifyingKey {
    pub protocol: String,
    pub curve: String,
    #[serde(rename = "nPublic")]
    pub n_public: usize,
    pub vk_alpha_1: SnarkjsG1,
    pub vk_beta_2: SnarkjsG2,
    pub vk_gamma_2: SnarkjsG2,
    pub vk_delta_2: SnarkjsG2,
    /// `e(α, β)`; optional on input and not checked (verification does not
    /// use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vk_alphabeta_12: Option<SnarkjsFq12>,
    #[serde(rename = "IC")]
    pub ic: Vec<SnarkjsG1>,
}

/// A Groth16 proof as snarkjs writes it (`proof.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnarkjsProof {
    pub pi_a: SnarkjsG1,
    pub pi_b: SnarkjsG2,
    pub pi_c: SnarkjsG1,
    pub protocol: String,
    pub curve: String,
}

/// The snarkjs form of a verifying key, `vk_alphabeta_12` included.
pub fn vk_to_snarkjs(vk: &VerifyingKey<Bn254>) -> SnarkjsVerifyingKey {
    let alphabeta = Bn254::pairing(vk.alpha_g1, vk.beta_g2).0;
    SnarkjsVerifyingKey {
        protocol: SNARKJS_PROTOCOL.into(),
        curve: SNARKJS_CURVE.into(),
        n_public: vk.gamma_abc_g1.len().saturating_sub(1),
        vk_alpha_1: g1_to_json(&vk.alpha_g1),
        vk_beta_2: g2_to_json(&vk.beta_g2),
        vk_gamma_2: g2_to_json(&vk.gamma_g2),
        vk_delta_2: g2_to_json(&vk.delta_g2),
        vk_alphabeta_12: Some(fq12_to_json(&alphabeta)),
        ic: vk.gamma_abc_g1.iter().map(g1_to_json).collect(),
    }
}

/// A verifying key from its snarkjs form: header checked, `IC` must hold
/// `nPublic + 1` points, every point validated.
pub fn vk_from_snarkjs(vk: &SnarkjsVerifyingKey) -> Result<VerifyingKey<Bn254>, ZkError> {
    const WHAT: &str = "snarkjs verification key";
    check_header(WHAT, &vk.protocol, &vk.curve)?;
    if vk.ic.len() != vk.n_public.saturating_add(1) {
        return Err(malformed(
            WHAT,
            format!("IC has {} points, nPublic is {}", vk.ic.len(), vk.n_public),
        ));
    }
    Ok(VerifyingKey {
        alpha_g1: g1_from_json(WHAT, &vk.vk_alpha_1)?,
        beta_g2: g2_from_json(WHAT, &vk.vk_beta_2)?,
        gamma_g2: g2_from_json(WHAT, &vk.vk_gamma_2)?,
        delta_g2: g2_from_json(WHAT, &vk.vk_delta_2)?,
        gamma_abc_g1: vk
            .ic
            .iter()
            .map(|p| g1_from_json(WHAT, p))
            .collect::<Result<_, _>>()?,
    })
}

/// The snarkjs form of a proof.
pub fn proof_to_snarkjs(proof: &Proof<Bn254>) -> SnarkjsProof {
    SnarkjsProof {
        pi_a: g1_to_json(&proof.a),
        pi_b: g2_to_json(&proof.b),
        pi_c: g1_to_json(&proof.c),
        protocol: SNARKJS_PROTOCOL.into(),
        curve: SNARKJS_CURVE.into(),
    }
}

/// A proof from its snarkjs form (header checked, points validated).
pub fn proof_from_snarkjs(proof: &SnarkjsProof) -> Result<Proof<Bn254>, ZkError> {
    const WHAT: &str = "snarkjs proof";
    check_header(WHAT, &proof.protocol, &proof.curve)?;
    Ok(Proof {
        a: g1_from_json(WHAT, &proof.pi_a)?,
        b: g2_from_json(WHAT, &proof.pi_b)?,
        c: g1_from_json(WHAT, &proof.pi_c)?,
    })
}

/// The public signals as snarkjs writes them: decimal strings in the order
/// of [`PublicInputs::to_field_elements`].
pub fn public_to_snarkjs(public: &PublicInputs) -> Vec<String> {
    public
        .to_field_elements()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Public inputs from snarkjs public signals: exactly
/// [`NUM_PUBLIC_INPUTS`] canonical decimals (hex accepted too), `epoch`
/// fitting a `u64` and `cluster` a `u32`.
pub fn public_from_snarkjs<S: AsRef<str>>(signals: &[S]) -> Result<PublicInputs, ZkError> {
    const WHAT: &str = "public signals";
    if signals.len() != NUM_PUBLIC_INPUTS {
        return Err(malformed(
            WHAT,
            format!(
                "expected {NUM_PUBLIC_INPUTS} signals, got {}",
                signals.len()
            ),
        ));
    }
    let v = signals
        .iter()
        .map(|s| parse_fr(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let small = |x: &Fr, name: &str, bits: u32| -> Result<u64, ZkError> {
        let big = x.into_bigint();
        let limbs = big.as_ref();
        if limbs[1..].iter().any(|l| *l != 0) || (bits < 64 && limbs[0] >> bits != 0) {
            return Err(malformed(WHAT, format!("{name} does not fit {bits} bits")));
        }
        Ok(limbs[0])
    };
    Ok(PublicInputs {
        root: v[0],
        epoch: small(&v[1], "epoch", 64)?,
        scope: v[2],
        nullifier: v[3],
        cluster: small(&v[4], "cluster", 32)? as u32,
        centroid_commitment: v[5],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::{BpkWitness, identity_leaf};
    use crate::groth;
    use crate::tree::IdentityTree;
    use ark_ec::CurveGroup;
    use ark_ff::UniformRand;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// One small (D = K = 2) setup and proof, shared by the tests.
    fn fixture() -> (
        ProvingKey<Bn254>,
        VerifyingKey<Bn254>,
        PublicInputs,
        Proof<Bn254>,
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(0xe8_9071);
        let (pk, vk) = groth::setup(2, 2, &mut rng).unwrap();
        let secret = Fr::rand(&mut rng);
        let b = [100u16, 200];
        let centroids = [[0u16, 0], [120, 210]];
        let mut tree = IdentityTree::new(4).unwrap();
        tree.append(Fr::from(7u64)).unwrap();
        let i = tree.append(identity_leaf(secret, &b).unwrap()).unwrap();
        let witness = BpkWitness::new(secret, &b, &centroids, tree.path(i).unwrap());
        let public = witness.public_inputs(3, Fr::from(0xabcu64)).unwrap();
        let proof = groth::prove(&pk, &public, &witness, &mut rng).unwrap();
        (pk, vk, public, proof)
    }

    #[test]
    fn snarkjs_json_round_trips_and_verifies() {
        let (_, vk, public, proof) = fixture();
        assert!(groth::verify(&vk, &public, &proof).unwrap());

        // Through JSON text, as the files hold it.
        let vk_json = serde_json::to_string(&vk_to_snarkjs(&vk)).unwrap();
        let proof_json = serde_json::to_string(&proof_to_snarkjs(&proof)).unwrap();
        let public_json = serde_json::to_string(&public_to_snarkjs(&public)).unwrap();

        let vk2 = vk_from_snarkjs(&serde_json::from_str(&vk_json).unwrap()).unwrap();
        let proof2 = proof_from_snarkjs(&serde_json::from_str(&proof_json).unwrap()).unwrap();
        let signals: Vec<String> = serde_json::from_str(&public_json).unwrap();
        let public2 = public_from_snarkjs(&signals).unwrap();
        assert_eq!(vk2, vk);
        assert_eq!(proof2, proof);
        assert_eq!(public2, public);
        assert!(groth::verify(&vk2, &public2, &proof2).unwrap());

        // The shape snarkjs expects.
        let v: serde_json::Value = serde_json::from_str(&vk_json).unwrap();
        assert_eq!(v["protocol"], "groth16");
        assert_eq!(v["curve"], "bn128");
        assert_eq!(v["nPublic"], NUM_PUBLIC_INPUTS);
        assert_eq!(v["IC"].as_array().unwrap().len(), NUM_PUBLIC_INPUTS + 1);
        assert_eq!(v["vk_alpha_1"][2], "1");
        assert_eq!(v["vk_beta_2"][2], serde_json::json!(["1", "0"]));
        assert_eq!(v["vk_alphabeta_12"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["vk_beta_2"][0][0],
            vk.beta_g2.xy().unwrap().0.c0.to_string()
        );
        let p: serde_json::Value = serde_json::from_str(&proof_json).unwrap();
        assert_eq!(p["pi_b"][1][1], proof.b.xy().unwrap().1.c1.to_string());

        // A changed signal no longer verifies.
        let mut tampered = signals.clone();
        tampered[2] = "2749".into();
        let public3 = public_from_snarkjs(&tampered).unwrap();
        assert!(!groth::verify(&vk2, &public3, &proof2).unwrap());
    }

    #[test]
    fn binary_round_trip_and_hostile_bytes() {
        let (pk, vk, public, proof) = fixture();
        let pk2 = proving_key_from_bytes(&proving_key_to_bytes(&pk)).unwrap();
        assert_eq!(pk2, pk);
        let vk_bytes = verifying_key_to_bytes(&vk);
        assert_eq!(verifying_key_from_bytes(&vk_bytes).unwrap(), vk);
        let proof_bytes = proof_to_bytes(&proof);
        assert_eq!(proof_bytes.len(), 128);
        let proof2 = proof_from_bytes(&proof_bytes).unwrap();
        assert!(groth::verify(&vk, &public, &proof2).unwrap());

        // Truncated, extended, flipped: errors, never panics.
        for n in [0, 1, 31, vk_bytes.len() - 1] {
            assert!(verifying_key_from_bytes(&vk_bytes[..n]).is_err(), "{n}");
        }
        // A huge length prefix for IC (after α, β, γ, δ: 32 + 3 · 64 bytes)
        // runs out of input; nothing is allocated up front.
        let mut huge = vk_bytes.clone();
        huge[224..232].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(verifying_key_from_bytes(&huge).is_err());
        let mut long = vk_bytes.clone();
        long.push(0);
        assert!(verifying_key_from_bytes(&long).is_err());
        for i in 0..proof_bytes.len() {
            let mut bad = proof_bytes.clone();
            bad[i] ^= 0x5a;
            // Either rejected or a different (non-verifying) proof.
            if let Ok(p) = proof_from_bytes(&bad) {
                assert!(!groth::verify(&vk, &public, &p).unwrap(), "byte {i}");
            }
        }
    }

    #[test]
    fn hostile_json_is_rejected() {
        let (_, vk, _, proof) = fixture();
        let good = proof_to_snarkjs(&proof);

        let mut off_curve = good.clone();
        off_curve.pi_a[1] = "5".into();
        assert!(proof_from_snarkjs(&off_curve).is_err());

        let mut not_number = good.clone();
        not_number.pi_c[0] = "-1".into();
        assert!(proof_from_snarkjs(&not_number).is_err());

        let mut above_modulus = good.clone();
        // The base field modulus itself is not canonical.
        above_modulus.pi_a[0] = Fq::MODULUS.to_string();
        assert!(proof_from_snarkjs(&above_modulus).is_err());

        let mut projective = good.clone();
        projective.pi_a[2] = "2".into();
        assert!(proof_from_snarkjs(&projective).is_err());

        let mut wrong_protocol = good.clone();
        wrong_protocol.protocol = "plonk".into();
        assert!(proof_from_snarkjs(&wrong_protocol).is_err());

        // A point on the twist but outside the prime-order subgroup: a
        // random curve point times nothing (unchecked), found by trying x.
        let mut bad_b = good.clone();
        let outside = (1u64..)
            .find_map(|x| {
                G2Affine::get_point_from_x_unchecked(Fq2::new(Fq::from(x), Fq::from(1u64)), false)
                    .filter(|p| !p.is_in_correct_subgroup_assuming_on_curve())
            })
            .unwrap();
        bad_b.pi_b = g2_to_json(&outside);
        let err = proof_from_snarkjs(&bad_b).unwrap_err();
        assert!(err.to_string().contains("subgroup"), "{err}");

        let mut vk_json = vk_to_snarkjs(&vk);
        vk_json.n_public = 5;
        assert!(vk_from_snarkjs(&vk_json).is_err());

        assert!(public_from_snarkjs(&["1"; 5]).is_err());
        let too_big_epoch = ["0", "18446744073709551616", "0", "0", "0", "0"];
        assert!(public_from_snarkjs(&too_big_epoch).is_err());
        let big_cluster = ["0", "1", "0", "0", "4294967296", "0"];
        assert!(public_from_snarkjs(&big_cluster).is_err());

        // Identity round-trips as snarkjs writes it.
        let inf = G2Affine::identity();
        assert_eq!(g2_from_json("t", &g2_to_json(&inf)).unwrap(), inf);
        let g = (G1Affine::generator() * Fr::from(3u64)).into_affine();
        assert_eq!(g1_from_json("t", &g1_to_json(&g)).unwrap(), g);
    }

    #[test]
    fn field_bytes_are_canonical_and_round_trip() {
        for x in [Fr::from(0u64), Fr::from(1u64), -Fr::from(1u64)] {
            assert_eq!(fr_from_be_bytes(&fr_to_be_bytes(&x)), Some(x));
        }
        // r - 1 is the largest element; r itself and above have no element.
        let mut r_minus_1 = fr_to_be_bytes(&-Fr::from(1u64));
        assert!(fr_from_be_bytes(&r_minus_1).is_some());
        r_minus_1[31] += 1;
        assert_eq!(fr_from_be_bytes(&r_minus_1), None);
        assert_eq!(fr_from_be_bytes(&[0xff; 32]), None);
    }

    #[test]
    fn parse_fr_forms() {
        assert_eq!(parse_fr("0").unwrap(), Fr::zero());
        assert_eq!(parse_fr("255").unwrap(), Fr::from(255u64));
        assert_eq!(parse_fr("0xff").unwrap(), Fr::from(255u64));
        assert_eq!(parse_fr("0XFF").unwrap(), Fr::from(255u64));
        let max = Fr::from(-1i64);
        assert_eq!(parse_fr(&max.to_string()).unwrap(), max);
        for bad in [
            "",
            "0x",
            "-1",
            " 1",
            "1.5",
            "0xg",
            &Fr::MODULUS.to_string(),
            &"9".repeat(100),
            &format!("0x{}", "f".repeat(64)),
            &format!("0x{}", "0".repeat(65)),
        ] {
            assert!(parse_fr(bad).is_err(), "{bad:?}");
        }
    }
}
