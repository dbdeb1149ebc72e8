//! The node's wiring of the GPU kernels into the verifiers: the engine's
//! [`BlsG1Backend`] (BLS batch verification) and the zk crate's [`G1Msm`]
//! (Groth16 batch verification), both backed by an [`Accelerator`]: the
//! GPU takes hashing to G1, the independent scalar multiplications
//! (`rᵢ·H(mᵢ)`, `rᵢ·Aᵢ`) and the MSMs (`Σ rᵢ·σᵢ`, `Σ rᵢ·Cᵢ`, `Σ rᵢ·vk_xᵢ`).
//!
//! The identity tree's batched Poseidon ([`PairHasher`], one call per tree
//! level when a block registers identities) goes to the GPU's circom
//! Poseidon kernel through [`GpuPoseidon`].
//!
//! Each call goes through [`Accelerator::run`], which decides whether this
//! batch goes to the GPU (`--accel`, `INT_ACCEL`, the batch size); when it
//! does not, or when the device fails, the work runs on the CPU exactly as
//! without a GPU. A failure is counted as a fallback (`gpu_fallbacks` in
//! `/metrics` and the devnet summary, beside `gpu_batches`) and logged; it
//! is fatal only under `INT_REQUIRE_GPU=1`, which tests and CI set so that
//! a verdict computed on the CPU cannot pass for the GPU's. The pairings
//! stay on the CPU.
//!
//! blst and arkworks keep BLS12-381 base-field elements in the same
//! Montgomery form (six 64-bit limbs, `R = 2³⁸⁴`), so points cross between
//! them by copying limbs.

use ark_bls12_381::{Fq, G1Affine as BlsAffine};
use ark_bn254::{Fr as BnFr, G1Affine as BnAffine, G1Projective as BnProjective};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::BigInt;
use int_engine::crypto::bls::{BatchItem, BlsG1Backend};
use int_gpu::{Accelerator, Work};
use int_zk::batch::{CpuMsm, G1Msm};
use int_zk::tree::{CpuPairHasher, PairHasher};

/// A blst affine point as arkworks' (the identity is blst's all-zero
/// encoding).
pub fn bls_from_blst(p: &blst::blst_p1_affine) -> BlsAffine {
    let zero = blst::blst_fp::default();
    if p.x == zero && p.y == zero {
        return BlsAffine::identity();
    }
    BlsAffine::new_unchecked(
        Fq::new_unchecked(BigInt(p.x.l)),
        Fq::new_unchecked(BigInt(p.y.l)),
    )
}

/// An arkworks affine point as blst's.
pub fn bls_to_blst(p: &BlsAffine) -> blst::blst_p1_affine {
    match p.xy() {
        None => blst::blst_p1_affine::default(),
        Some((x, y)) => blst::blst_p1_affine {
            x: blst::blst_fp { l: x.0.0 },
            y: blst::blst_fp { l: y.0.0 },
        },
    }
}

/// The GPU side of BLS batch verification.
#[derive(Clone, Debug)]
pub struct GpuBls {
    acc: Accelerator,
}

impl GpuBls {
    /// Backed by `acc`.
    pub fn new(acc: Accelerator) -> Self {
        Self { acc }
    }
}

impl BlsG1Backend for GpuBls {
    fn hash_scaled(
        &self,
        items: &[BatchItem<'_>],
        dst: &[u8],
        scalars: &[u64],
    ) -> Option<Vec<blst::blst_p1_affine>> {
        self.acc.run(Work::HashToG1, items.len(), |ctx| {
            let msgs: Vec<&[u8]> = items.iter().map(|it| it.msg).collect();
            let hashed = ctx.hash_to_g1(&msgs, dst)?;
            let scaled =
                ctx.scale_each::<ark_bls12_381::g1::Config>(&hashed, &bls_scalars(scalars))?;
            // The engine would drop a short answer and hash on the CPU
            // without a word: count it as the fallback it is.
            if scaled.len() != items.len() {
                return Err(int_gpu::GpuError::LengthMismatch(scaled.len(), items.len()));
            }
            Ok(ark_bls12_381::G1Projective::normalize_batch(&scaled)
                .iter()
                .map(bls_to_blst)
                .collect())
        })
    }

    fn sig_sum(&self, items: &[BatchItem<'_>], scalars: &[u64]) -> Option<blst::blst_p1_affine> {
        self.acc.run(Work::Msm, items.len(), |ctx| {
            let pts: Vec<BlsAffine> = items
                .iter()
                .map(|it| bls_from_blst(&it.sig.to_affine()))
                .collect();
            ctx.msm::<ark_bls12_381::g1::Config>(&pts, &bls_scalars(scalars))
                .map(|p| bls_to_blst(&p.into_affine()))
        })
    }
}

/// The 64-bit batch scalars as BLS12-381 scalar-field elements.
fn bls_scalars(scalars: &[u64]) -> Vec<ark_bls12_381::Fr> {
    scalars
        .iter()
        .map(|r| ark_bls12_381::Fr::from(*r))
        .collect()
}

/// The GPU side of Groth16 batch verification (BN254 G1).
#[derive(Clone, Debug)]
pub struct GpuGroth {
    acc: Accelerator,
}

impl GpuGroth {
    /// Backed by `acc`.
    pub fn new(acc: Accelerator) -> Self {
        Self { acc }
    }
}

impl G1Msm for GpuGroth {
    fn msm(&self, bases: &[BnAffine], scalars: &[BnFr]) -> BnProjective {
        self.acc
            .run(Work::Msm, bases.len(), |ctx| {
                ctx.msm::<ark_bn254::g1::Config>(bases, scalars)
            })
            .unwrap_or_else(|| CpuMsm.msm(bases, scalars))
    }

    fn scale_each(&self, bases: &[BnAffine], scalars: &[BnFr]) -> Vec<BnAffine> {
        self.acc
            .run(Work::ScaleEach, bases.len(), |ctx| {
                ctx.scale_each::<ark_bn254::g1::Config>(bases, scalars)
                    .map(|p| BnProjective::normalize_batch(&p))
            })
            .unwrap_or_else(|| CpuMsm.scale_each(bases, scalars))
    }
}

/// The GPU side of the identity tree's batched hashing: circom Poseidon of
/// two inputs (width 3, `int_zk::poseidon::hash2`) on the GPU's batched
/// Poseidon kernel, one thread per pair; on the CPU ([`CpuPairHasher`]) for
/// batches the accelerator keeps there and when the device fails.
#[derive(Clone, Debug)]
pub struct GpuPoseidon {
    acc: Accelerator,
}

impl GpuPoseidon {
    /// Backed by `acc`.
    pub fn new(acc: Accelerator) -> Self {
        Self { acc }
    }
}

impl PairHasher for GpuPoseidon {
    fn hash_pairs(&self, pairs: &[(BnFr, BnFr)]) -> Vec<BnFr> {
        self.acc
            .run(Work::Poseidon, pairs.len(), |ctx| {
                let flat: Vec<BnFr> = pairs.iter().flat_map(|(l, r)| [*l, *r]).collect();
                let h = ctx.poseidon_batch(2, &flat)?;
                if h.len() != pairs.len() {
                    return Err(int_gpu::GpuError::LengthMismatch(h.len(), pairs.len()));
                }
                Ok(h)
            })
            .unwrap_or_else(|| CpuPairHasher.hash_pairs(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ark_serialize::CanonicalSerialize;

    /// blst and arkworks agree on the point after a limb copy: the same
    /// compressed bytes, both ways, for random points and the identity.
    #[test]
    fn blst_and_arkworks_points_convert_by_limbs() {
        for i in 0..16u8 {
            let sk =
                blst::min_sig::SecretKey::key_gen(&[i; 32], &[]).expect("32 bytes of key material");
            let sig = sk.sign(b"convert", b"INT-TEST", &[]);
            let aff: blst::blst_p1_affine = sig.into();
            let ark = bls_from_blst(&aff);
            let mut bytes = Vec::new();
            ark.serialize_compressed(&mut bytes)
                .expect("serialise to a Vec");
            assert_eq!(bytes.as_slice(), sig.compress().as_slice());
            assert_eq!(bls_to_blst(&ark), aff);
        }
        let id = bls_from_blst(&blst::blst_p1_affine::default());
        assert!(id.is_zero());
        assert_eq!(bls_to_blst(&id), blst::blst_p1_affine::default());
    }

    /// The GPU (any adapter, `Accel::Gpu`), or `None` with a loud skip —
    /// unless `INT_REQUIRE_GPU=1`, where a missing adapter fails.
    fn gpu() -> Option<Accelerator> {
        match Accelerator::open(int_gpu::Accel::Gpu, int_gpu::Thresholds::default()) {
            Ok(a) => Some(a),
            Err(e) => {
                assert!(
                    !int_gpu::accel::require_gpu_from_env(),
                    "INT_REQUIRE_GPU=1 but no adapter: {e}"
                );
                eprintln!("\n*** SKIPPED: no GPU adapter ({e}) ***\n");
                None
            }
        }
    }

    /// BLS batches verified with the GPU's hashes and scalings give the
    /// CPU's verdicts and culprits: every good batch passes (so the GPU's
    /// `rᵢ·H(mᵢ)` are right: one wrong point fails the batch) and bad items
    /// are named.
    #[test]
    fn bls_batches_on_the_gpu_match_the_cpu() {
        use int_engine::crypto::bls::{
            BatchItem, DST_SIG, SecretKey, batch_verify_bisect_with, batch_verify_with, tx_message,
        };
        let Some(acc) = gpu() else { return };
        let g1 = GpuBls::new(acc.clone());
        let n = 24;
        let keys: Vec<SecretKey> = (0..n as u8)
            .map(|i| SecretKey::from_seed(&[i; 32]))
            .collect();
        let pks: Vec<_> = keys.iter().map(SecretKey::public_key).collect();
        let mut msgs: Vec<Vec<u8>> = (0..n)
            .map(|i| tx_message(1, format!("gpu #{i}").as_bytes()))
            .collect();
        let sigs: Vec<_> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        // Checks the batch of all items over `msgs`: its verdict, and the
        // items bisection names.
        let check = |msgs: &[Vec<u8>]| {
            let batch: Vec<BatchItem<'_>> = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| BatchItem {
                    pk: &pks[i],
                    msg: m,
                    sig: &sigs[i],
                })
                .collect();
            (
                batch_verify_with(&batch, DST_SIG, &g1),
                batch_verify_bisect_with(&batch, DST_SIG, &g1),
            )
        };
        assert_eq!(check(&msgs), (true, vec![]));
        // Two tampered messages: the batch fails and bisection names them.
        msgs[3].push(1);
        msgs[17][0] ^= 1;
        assert_eq!(check(&msgs), (false, vec![3, 17]));
        // The verdicts came from the GPU, not from a CPU fallback.
        let c = acc.counts();
        assert!(c.gpu_batches > 0 && c.gpu_fallbacks == 0, "{c:?}");
    }

    /// The seeded batch the market checks receipts with gives the same
    /// verdicts on the GPU as on the CPU (the block's seed fixes the
    /// scalars): a good batch passes on both, one tampered receipt fails it
    /// on both.
    #[test]
    fn seeded_batches_on_the_gpu_match_the_cpu() {
        use int_engine::crypto::bls::{
            BatchItem, CpuG1, DST_SIG, SecretKey, batch_verify_seeded_on, tx_message,
        };
        let Some(acc) = gpu() else { return };
        let g1 = GpuBls::new(acc.clone());
        let keys: Vec<SecretKey> = (0..16u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let pks: Vec<_> = keys.iter().map(SecretKey::public_key).collect();
        let mut msgs: Vec<Vec<u8>> = (0..keys.len())
            .map(|i| tx_message(1, format!("receipt #{i}").as_bytes()))
            .collect();
        let sigs: Vec<_> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let verdicts = |msgs: &[Vec<u8>]| {
            let batch: Vec<BatchItem<'_>> = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| BatchItem {
                    pk: &pks[i],
                    msg: m,
                    sig: &sigs[i],
                })
                .collect();
            let seed = [5; 32];
            (
                batch_verify_seeded_on(&batch, DST_SIG, seed, &g1),
                batch_verify_seeded_on(&batch, DST_SIG, seed, &CpuG1),
            )
        };
        assert_eq!(verdicts(&msgs), (true, true));
        msgs[9][0] ^= 1;
        assert_eq!(verdicts(&msgs), (false, false));
        let c = acc.counts();
        assert!(c.gpu_batches > 0 && c.gpu_fallbacks == 0, "{c:?}");
    }

    /// Groth16 batches with the GPU's `rᵢ·Aᵢ` pass when good and fail when
    /// one proof is for other inputs, exactly as with the CPU backend.
    #[test]
    fn groth16_batches_on_the_gpu_match_the_cpu() {
        use int_zk::batch::{BatchItem, batch_verify, batch_verify_bisect};
        use rand::SeedableRng;
        let Some(acc) = gpu() else { return };
        let msm = GpuGroth::new(acc.clone());
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let keys = int_zk::fixture::PowKeys::setup(&mut rng).expect("setup");
        let mut proofs: Vec<(Vec<BnFr>, ark_groth16::Proof<ark_bn254::Bn254>)> = (0..6)
            .map(|_| keys.prove(&mut rng).expect("prove"))
            .collect();
        let items: Vec<BatchItem<'_>> = proofs.iter().map(|(x, p)| (x.as_slice(), p)).collect();
        assert_eq!(
            batch_verify(&keys.pvk, &items, &msm, &mut rng).ok(),
            Some(true)
        );
        assert_eq!(
            batch_verify(&keys.pvk, &items, &CpuMsm, &mut rng).ok(),
            Some(true)
        );
        proofs[4].0[0] += BnFr::from(1u64);
        let items: Vec<BatchItem<'_>> = proofs.iter().map(|(x, p)| (x.as_slice(), p)).collect();
        assert_eq!(
            batch_verify(&keys.pvk, &items, &msm, &mut rng).ok(),
            Some(false)
        );
        assert_eq!(
            batch_verify_bisect(&keys.pvk, &items, &msm, &mut rng).ok(),
            Some(vec![4])
        );
        let c = acc.counts();
        assert!(c.gpu_batches > 0 && c.gpu_fallbacks == 0, "{c:?}");
    }

    /// The GPU's arity-2 circom Poseidon is the zk crate's `hash2`, bit for
    /// bit, on random pairs and edge values (0, 1, −1), and `GpuPoseidon`
    /// hashes pairs as the CPU does.
    #[test]
    fn gpu_poseidon_pairs_equal_hash2() {
        use ark_ff::UniformRand;
        use rand::SeedableRng;
        let Some(acc) = gpu() else { return };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let edge = [BnFr::from(0u64), BnFr::from(1u64), -BnFr::from(1u64)];
        let mut pairs: Vec<(BnFr, BnFr)> = edge
            .iter()
            .flat_map(|a| edge.iter().map(move |b| (*a, *b)))
            .collect();
        pairs.extend((0..300).map(|_| (BnFr::rand(&mut rng), BnFr::rand(&mut rng))));
        let want: Vec<BnFr> = pairs
            .iter()
            .map(|(l, r)| int_zk::poseidon::hash2(*l, *r))
            .collect();
        let ctx = acc
            .gpu_for(Work::Poseidon, pairs.len())
            .expect("Accel::Gpu");
        let flat: Vec<BnFr> = pairs.iter().flat_map(|(l, r)| [*l, *r]).collect();
        assert_eq!(ctx.poseidon_batch(2, &flat).expect("GPU Poseidon"), want);
        assert_eq!(GpuPoseidon::new(acc).hash_pairs(&pairs), want);
        assert_eq!(CpuPairHasher.hash_pairs(&pairs), want);
    }

    /// The identity tree appended in batches with the GPU's hashes ends in
    /// the state of sequential CPU appends: the same roots, history and
    /// paths.
    #[test]
    fn identity_tree_batches_on_the_gpu_match_the_cpu() {
        use ark_ff::UniformRand;
        use int_zk::tree::IdentityTree;
        use rand::SeedableRng;
        let Some(acc) = gpu() else { return };
        let gpu = GpuPoseidon::new(acc);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(12);
        let mut seq = IdentityTree::new(8).expect("tree");
        let mut bat = IdentityTree::new(8).expect("tree");
        // An odd start, then batches crossing 2^5 and 2^7.
        for n in [3usize, 40, 0, 1, 100] {
            let leaves: Vec<BnFr> = (0..n).map(|_| BnFr::rand(&mut rng)).collect();
            for l in &leaves {
                seq.append(*l).expect("append");
            }
            let got = bat.append_batch(&leaves, &gpu).expect("append_batch");
            assert_eq!(got.appended.end, seq.len());
            assert_eq!(got.refused, 0);
            assert_eq!(bat.root(), seq.root());
            assert!(bat.root_history().eq(seq.root_history()));
        }
        for i in [0, 2, 3, 42, 143] {
            assert_eq!(bat.path(i).expect("path"), seq.path(i).expect("path"));
        }
        assert_eq!(bat.store().len(), seq.store().len());
    }
}
