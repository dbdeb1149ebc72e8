//! Inputs that span several launches: every batch kernel on a context
//! capped at [`ITEMS`] items per launch, against its CPU reference, with
//! sizes that end exactly on a chunk boundary, one past it and one short
//! of it, so the items at the end of a chunk and the start of the next
//! are checked. The launches are pipelined (two in flight,
//! `GpuContext::pipelined`), so this also checks that outputs come back
//! in order; the launch counts are exact.

mod common;

use ark_ec::CurveGroup;
use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ff::{Field, UniformRand};
use common::{edge_scalars, rng};
use int_gpu::hash_to_g1::hash_to_g1_cpu;
use int_gpu::poseidon::poseidon_cpu;
use int_gpu::{BackendChoice, CurveOp, FieldOp, GpuContext, GpuCurve, scale_each_cpu};

/// Items per launch.
const ITEMS: usize = 5;

/// Sizes around the chunk boundaries: 1, one chunk, one chunk + 1, three
/// chunks − 1, four chunks.
const SIZES: [usize; 5] = [1, ITEMS, ITEMS + 1, 3 * ITEMS - 1, 4 * ITEMS];

/// Launches `f` made on `ctx`.
fn launches(ctx: &GpuContext, f: impl FnOnce()) -> u64 {
    let before = ctx.transfer_stats();
    f();
    (ctx.transfer_stats() - before).dispatches
}

fn points<C: GpuCurve>(n: usize, seed: u64) -> Vec<Projective<C>> {
    let mut r = rng(seed);
    (0..n).map(|_| Projective::rand(&mut r)).collect()
}

fn curve<C: GpuCurve>(ctx: &GpuContext) {
    for n in SIZES {
        let want_launches = n.div_ceil(ITEMS) as u64;
        let a = points::<C>(n, 1);
        let b = points::<C>(n, 2);
        let got = launches(ctx, || {
            let sum = ctx.curve_op(CurveOp::MixedAdd, &a, &b);
            let want: Vec<_> = a.iter().zip(&b).map(|(x, y)| *x + y).collect();
            assert_eq!(sum.unwrap_or_else(|e| panic!("{e}")), want, "madd n={n}");
        });
        assert_eq!(got, want_launches, "madd launches, n = {n}");
        let pts: Vec<Affine<C>> = Projective::normalize_batch(&a);
        let ks = edge_scalars::<C::ScalarField>(n, 3);
        let got = launches(ctx, || {
            let r = ctx.scale_each(&pts, &ks).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                r,
                scale_each_cpu(&pts, &ks).unwrap_or_default(),
                "scale n={n}"
            );
        });
        assert_eq!(got, want_launches, "scale launches, n = {n}");
    }
}

#[test]
fn batch_kernels_across_launches() {
    let Some(ctx) = common::own_context(ITEMS, BackendChoice::Native) else {
        return;
    };
    field_and_poseidon(&ctx);
    curve::<ark_bn254::g1::Config>(&ctx);
    curve::<ark_bls12_381::g1::Config>(&ctx);
    // Hash to G1 (the node's signature DST).
    let dst = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
    for n in SIZES {
        let msgs: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("chunk message {i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let got = launches(&ctx, || {
            let h = ctx.hash_to_g1(&refs, dst).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                h,
                hash_to_g1_cpu(&refs, dst).unwrap_or_default(),
                "hash n={n}"
            );
        });
        assert_eq!(got, n.div_ceil(ITEMS) as u64, "hash launches, n = {n}");
    }
}

/// The same on GL (its own context lock, waits by submission index), for
/// the kernels that compile quickly there.
#[test]
fn field_and_poseidon_across_launches_gl() {
    let Some(ctx) = common::own_context(ITEMS, BackendChoice::Gl) else {
        return;
    };
    field_and_poseidon(&ctx);
}

fn field_and_poseidon(ctx: &GpuContext) {
    // Field ops (BN254 Fq).
    for n in SIZES {
        let mut r = rng(n as u64);
        let a: Vec<ark_bn254::Fq> = (0..n).map(|_| ark_bn254::Fq::rand(&mut r)).collect();
        let b: Vec<ark_bn254::Fq> = (0..n).map(|_| ark_bn254::Fq::rand(&mut r)).collect();
        let got = launches(ctx, || {
            let inv = ctx.field_op(FieldOp::Inv, &a, &b);
            let want: Vec<_> = a.iter().map(|x| x.inverse().unwrap_or_default()).collect();
            assert_eq!(inv.unwrap_or_else(|e| panic!("{e}")), want, "inv n={n}");
        });
        assert_eq!(got, n.div_ceil(ITEMS) as u64, "field launches, n = {n}");
    }
    // Poseidon, arities 2 and 3: a chunk is ITEMS hashes.
    for arity in [2, 3] {
        for n in SIZES {
            let mut r = rng(100 + n as u64);
            let inputs: Vec<ark_bn254::Fr> = (0..n * arity)
                .map(|_| ark_bn254::Fr::rand(&mut r))
                .collect();
            let got = launches(ctx, || {
                let h = ctx.poseidon_batch(arity, &inputs);
                let want = poseidon_cpu(arity, &inputs).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(h.unwrap_or_else(|e| panic!("{e}")), want, "t={arity} n={n}");
            });
            assert_eq!(got, n.div_ceil(ITEMS) as u64, "poseidon launches, n = {n}");
        }
    }
}
