//! The 13-bit limb layout: host conversion round trips, and the chain
//! kernels (`x ← x·y`, `k` times) of both layouts against arkworks on
//! every adapter the machine has.

mod common;

use ark_ff::BigInteger;
use int_gpu::{GpuContext, GpuError, GpuField, Layout13, MulPath, mul_chain_cpu};
use proptest::prelude::*;

/// The element whose 13-bit Montgomery limbs hold the integer `m < p`.
fn with_mont<F: GpuField>(l: &Layout13<F>, m: F::BigInt) -> F {
    F::from_bigint(m).unwrap() * l.r().inverse().unwrap()
}

/// Edge cases: 0, 1, 2, p − 1, p − 2; R, R ± 1, R⁻¹ (limbs 1), the elements
/// whose limbs are p − 1 and p − 2, and 2^(b−1) − 1 (every limb full but
/// the top one); then random elements up to `n`.
fn inputs<F: GpuField>(n: usize, seed: u64) -> Vec<F> {
    let l = Layout13::<F>::new().unwrap();
    let r = l.r();
    let mut p1 = F::MODULUS;
    p1.sub_with_borrow(&F::BigInt::from(1u64));
    let mut p2 = p1;
    p2.sub_with_borrow(&F::BigInt::from(1u64));
    let mut top = F::BigInt::from(1u64);
    top <<= F::MODULUS_BIT_SIZE - 1;
    top.sub_with_borrow(&F::BigInt::from(1u64));
    let mut v = vec![
        F::zero(),
        F::one(),
        F::from(2u64),
        -F::one(),
        -F::from(2u64),
        r,
        r - F::one(),
        r + F::one(),
        r.inverse().unwrap(),
        with_mont(&l, p1),
        with_mont(&l, p2),
        with_mont(&l, top),
    ];
    let mut rng = common::rng(seed);
    while v.len() < n {
        v.push(F::rand(&mut rng));
    }
    v
}

/// Which chain to run.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Limb13,
    Limb32(MulPath),
}

fn run<F: GpuField>(
    ctx: &GpuContext,
    layout: Layout,
    x: &[F],
    y: &[F],
    k: u32,
) -> Result<Vec<F>, GpuError> {
    match layout {
        Layout::Limb13 => ctx.mul_chain_13(x, y, k),
        Layout::Limb32(path) => ctx.mul_chain_32(path, x, y, k),
    }
}

fn check<F: GpuField>(ctx: &GpuContext, label: &str, layout: Layout) {
    let n = 96;
    let x = inputs::<F>(n, 11);
    let mut y = inputs::<F>(n, 12);
    // Every edge case against every other one, and against random ones.
    y.rotate_left(5);
    let mut xs = x.clone();
    let mut ys = y.clone();
    let edges = 12;
    for a in &x[..edges] {
        for b in &x[..edges] {
            xs.push(*a);
            ys.push(*b);
        }
    }
    for k in [0u32, 1, 2, 9] {
        let got = match run(ctx, layout, &xs, &ys, k) {
            Ok(g) => g,
            Err(e) => panic!("{label} {} {layout:?} k = {k}: {e}", F::spec().prefix),
        };
        let want = mul_chain_cpu(&xs, &ys, k).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "{label} {} {layout:?} k = {k} at {i}: {} · {}^k",
                F::spec().prefix,
                xs[i],
                ys[i]
            );
        }
    }
}

/// Both layouts on every path `ctx` offers; `Int64` without
/// `SHADER_INT64` must be refused, not run.
fn check_ctx(label: &'static str, ctx: &'static GpuContext) {
    let mut layouts = vec![Layout::Limb13, Layout::Limb32(MulPath::Portable)];
    if ctx.int64() {
        layouts.push(Layout::Limb32(MulPath::Int64));
    } else {
        let one = [ark_bn254::Fq::from(3u64)];
        assert!(matches!(
            ctx.mul_chain_32(MulPath::Int64, &one, &one, 1),
            Err(GpuError::BadInput(_))
        ));
    }
    for layout in layouts {
        check::<ark_bn254::Fq>(ctx, label, layout);
        check::<ark_bn254::Fr>(ctx, label, layout);
        check::<ark_bls12_381::Fq>(ctx, label, layout);
    }
}

#[test]
fn chains_match_arkworks_native() {
    common::with_ctx("native", check_ctx);
}

#[test]
fn chains_match_arkworks_portable() {
    common::with_ctx("portable", check_ctx);
}

#[test]
fn chains_match_arkworks_gl() {
    common::with_ctx("gl", check_ctx);
}

#[test]
fn chain_inputs_of_different_lengths_are_an_error() {
    if let Some(ctx) = common::native() {
        let a = [ark_bn254::Fr::from(5u64)];
        assert!(matches!(
            ctx.mul_chain_13(&a, &[], 1),
            Err(GpuError::LengthMismatch(1, 0))
        ));
        assert!(
            ctx.mul_chain_13::<ark_bn254::Fr>(&[], &[], 3)
                .is_ok_and(|v| v.is_empty())
        );
    }
    assert!(mul_chain_cpu(&[ark_bn254::Fr::from(5u64)], &[], 1).is_err());
}

fn round_trip<F: GpuField>(bytes: &[u8]) {
    let l = Layout13::<F>::new().unwrap();
    let x = F::from_le_bytes_mod_order(bytes);
    let mut w = Vec::new();
    l.push_limbs(&x, &mut w).unwrap();
    assert_eq!(w.len(), l.limbs());
    assert!(w.iter().all(|v| *v < 1 << 13));
    assert_eq!(l.from_limbs(&w), Some(x));
    // The limbs are x·R mod p: joined, they are (x·R) as an integer.
    let mut joined = F::BigInt::default();
    for v in w.iter().rev() {
        joined <<= 13u32;
        joined.add_with_carry(&F::BigInt::from(*v));
    }
    assert_eq!(joined, (x * l.r()).into_bigint());
}

proptest! {
    #[test]
    fn limbs_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        round_trip::<ark_bn254::Fq>(&bytes);
        round_trip::<ark_bn254::Fr>(&bytes);
        round_trip::<ark_bls12_381::Fq>(&bytes);
    }
}

fn edges_convert<F: GpuField>(n: usize) {
    let l = Layout13::<F>::new().unwrap();
    assert_eq!(l.limbs(), n);
    for x in inputs::<F>(16, 3) {
        let mut w = Vec::new();
        l.push_limbs(&x, &mut w).unwrap();
        assert_eq!(l.from_limbs(&w), Some(x));
    }
    // One is R: its limbs are R mod p; R⁻¹'s limbs are 1.
    let mut w = Vec::new();
    l.push_limbs(&l.r().inverse().unwrap(), &mut w).unwrap();
    assert_eq!(w[0], 1);
    assert!(w[1..].iter().all(|v| *v == 0));
    // p itself, a limb over 13 bits, and a wrong length are refused.
    assert_eq!(l.from_limbs(l.modulus()), None);
    let mut big = w.clone();
    big[0] = 1 << 13;
    assert_eq!(l.from_limbs(&big), None);
    assert_eq!(l.from_limbs(&w[1..]), None);
    // All-ones limbs are above p.
    assert_eq!(l.from_limbs(&vec![(1 << 13) - 1; n]), None);
}

#[test]
fn edge_elements_convert() {
    edges_convert::<ark_bn254::Fq>(20);
    edges_convert::<ark_bn254::Fr>(20);
    edges_convert::<ark_bls12_381::Fq>(30);
}
