//! Curve kernels (complete RCB formulas, scalar multiplication) against
//! arkworks, on every adapter the machine has.

mod common;

use common::{edge_scalars, rng, with_ctx};

use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ec::{AdditiveGroup, AffineRepr, CurveGroup, PrimeGroup};
use ark_ff::{BigInteger, One, PrimeField, UniformRand, Zero};
use int_gpu::{CurveOp, GpuContext, GpuCurve, scale_each_cpu};

/// Pairs `(a, b)`: the edge cases first (identity on either side and both,
/// `P + P`, `P + (−P)`, the generator with itself), then random points.
fn pairs<C: GpuCurve>(n: usize, seed: u64) -> (Vec<Projective<C>>, Vec<Projective<C>>) {
    let mut r = rng(seed);
    let o = Projective::<C>::zero();
    let g = Projective::<C>::generator();
    let p = Projective::<C>::rand(&mut r);
    // The same point in another Jacobian representative (Z ≠ 1).
    let p2 = (p.double() - p).into_affine().into();
    let mut a = vec![o, o, p, p, p, p, g, p, -p];
    let mut b = vec![o, p, o, p, -p, p2, g, p.double(), p];
    while a.len() < n {
        a.push(Projective::rand(&mut r));
        b.push(Projective::rand(&mut r));
    }
    (a, b)
}

/// A CPU reference of one element-wise op.
type CpuOp<C> = fn(&Projective<C>, &Projective<C>) -> Projective<C>;

fn check_ops<C: GpuCurve>(ctx: &GpuContext, label: &str) {
    let (a, b) = pairs::<C>(40, 7);
    let cpu: [(CurveOp, CpuOp<C>); 4] = [
        (CurveOp::Add, |x, y| *x + y),
        (CurveOp::MixedAdd, |x, y| *x + y),
        (CurveOp::Double, |x, _| x.double()),
        (CurveOp::Neg, |x, _| -*x),
    ];
    for (op, f) in cpu {
        let got = ctx
            .curve_op(op, &a, &b)
            .unwrap_or_else(|e| panic!("{label} {} {op:?}: {e}", C::PREFIX));
        assert_eq!(got.len(), a.len());
        for (i, g) in got.iter().enumerate() {
            let want = f(&a[i], &b[i]);
            assert_eq!(*g, want, "{label} {} {op:?} at {i}", C::PREFIX);
            assert!(g.into_affine().is_on_curve());
        }
    }
}

fn check_scale<C: GpuCurve>(ctx: &GpuContext, label: &str) {
    let n = 48;
    let mut r = rng(11);
    let mut pts: Vec<Affine<C>> = (0..n).map(|_| Affine::rand(&mut r)).collect();
    pts[3] = Affine::identity();
    pts[1] = Affine::generator();
    let mut ks = edge_scalars::<C::ScalarField>(n, 12);
    ks[5] = -C::ScalarField::one(); // r − 1 on a random point too
    let got = ctx
        .scale_each(&pts, &ks)
        .unwrap_or_else(|e| panic!("{label} {} scale_each: {e}", C::PREFIX));
    let want = scale_each_cpu(&pts, &ks).unwrap_or_default();
    assert_eq!(got.len(), n);
    for i in 0..n {
        assert_eq!(got[i], want[i], "{label} {} scale at {i}", C::PREFIX);
    }
    // Short scalars only (the 64-bit multipliers of a BLS batch): the
    // launch walks only their bits; 2^63 and 2^64 − 1 bound the length,
    // 1 and 0 are the shortest; then a launch of zeros alone.
    let mut r = rng(13);
    let mut short: Vec<C::ScalarField> = (0..n)
        .map(|_| C::ScalarField::from(u64::rand(&mut r)))
        .collect();
    short[0] = C::ScalarField::from(1u64 << 63);
    short[1] = C::ScalarField::from(u64::MAX);
    short[2] = C::ScalarField::one();
    short[3] = C::ScalarField::zero();
    let got = ctx
        .scale_each(&pts, &short)
        .unwrap_or_else(|e| panic!("{label} {} short scale_each: {e}", C::PREFIX));
    assert_eq!(got, scale_each_cpu(&pts, &short).unwrap_or_default());
    let zeros = vec![C::ScalarField::zero(); 4];
    let got = ctx
        .scale_each(&pts[..4], &zeros)
        .unwrap_or_else(|e| panic!("{label} {} zero scale_each: {e}", C::PREFIX));
    assert!(got.iter().all(|p| p.is_zero()), "{label} {}", C::PREFIX);
}

/// Element-wise ops and `scale_each` of `C` on one context.
fn check<C: GpuCurve>(label: &'static str, ctx: &'static GpuContext) {
    check_ops::<C>(ctx, label);
    check_scale::<C>(ctx, label);
}

// One test per curve and context, so each stays well under 30 s on
// lavapipe (compiling the two G1 kernels is most of it).

#[test]
fn bn254_native() {
    with_ctx("native", check::<ark_bn254::g1::Config>);
}

#[test]
fn bn254_portable() {
    with_ctx("portable", check::<ark_bn254::g1::Config>);
}

#[test]
fn bn254_gl() {
    with_ctx("gl", check::<ark_bn254::g1::Config>);
}

#[test]
fn bls12_381_native() {
    with_ctx("native", check::<ark_bls12_381::g1::Config>);
}

#[test]
fn bls12_381_portable() {
    with_ctx("portable", check::<ark_bls12_381::g1::Config>);
}

#[test]
fn bls12_381_gl() {
    with_ctx("gl", check::<ark_bls12_381::g1::Config>);
}

#[test]
fn empty_and_mismatched_inputs() {
    type C = ark_bn254::g1::Config;
    if let Some(ctx) = common::native() {
        let none = ctx.curve_op::<C>(CurveOp::Add, &[], &[]);
        assert!(none.is_ok_and(|v| v.is_empty()));
        let one = [Projective::<C>::generator()];
        assert!(ctx.curve_op(CurveOp::Add, &one, &[]).is_err());
        let none = ctx
            .scale_each::<C>(&[], &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(none.is_empty());
        let g = [Affine::<C>::generator()];
        assert!(ctx.scale_each::<C>(&g, &[]).is_err());
        assert!(scale_each_cpu::<C>(&g, &[]).is_err());
    }
}

#[test]
fn edge_scalars_are_what_they_say() {
    let v = edge_scalars::<ark_bn254::Fr>(12, 1);
    assert_eq!(v.len(), 12);
    assert!(v[3].into_bigint().num_bits() == ark_bn254::Fr::MODULUS_BIT_SIZE);
    assert!(v[5].into_bigint().get_bit(253));
}
