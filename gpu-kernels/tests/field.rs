//! Field kernels against arkworks, on every adapter the machine has.

mod common;

use ark_ff::One;
use int_gpu::{FieldOp, GpuContext, GpuField};

/// Random elements plus the edge cases: 0, 1, −1, 2, and −2.
fn inputs<F: GpuField>(n: usize, seed: u64) -> Vec<F> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![
        F::zero(),
        F::one(),
        -F::one(),
        F::from(2u64),
        -F::from(2u64),
    ];
    while v.len() < n {
        v.push(F::rand(&mut rng));
    }
    v
}

/// A CPU reference of one element-wise op.
type CpuOp<F> = fn(&F, &F) -> F;

fn check<F: GpuField>(ctx: &GpuContext, label: &str) {
    let n = 300;
    let a = inputs::<F>(n, 1);
    let mut b = inputs::<F>(n, 2);
    b.rotate_left(3); // pairs of edge cases with each other too
    let ops: [(FieldOp, CpuOp<F>); 6] = [
        (FieldOp::Add, |x, y| *x + y),
        (FieldOp::Sub, |x, y| *x - y),
        (FieldOp::Mul, |x, y| *x * y),
        (FieldOp::Neg, |x, _| -*x),
        (FieldOp::Sqr, |x, _| x.square()),
        (FieldOp::Inv, |x, _| x.inverse().unwrap_or_else(F::zero)),
    ];
    for (op, cpu) in ops {
        let got = match ctx.field_op(op, &a, &b) {
            Ok(g) => g,
            Err(e) => panic!("{label} {} {op:?}: {e}", F::spec().prefix),
        };
        let want: Vec<F> = a.iter().zip(&b).map(|(x, y)| cpu(x, y)).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "{label} {} {op:?} at {i}: {} ∘ {}",
                F::spec().prefix,
                a[i],
                b[i]
            );
        }
        assert_eq!(got.len(), want.len());
    }
}

#[test]
fn field_kernels_match_arkworks() {
    for (label, ctx) in common::all() {
        check::<ark_bn254::Fq>(ctx, label);
        check::<ark_bn254::Fr>(ctx, label);
        check::<ark_bls12_381::Fq>(ctx, label);
    }
}

#[test]
fn empty_batch_is_empty() {
    if let Some(ctx) = common::native() {
        let v = ctx.field_op::<ark_bn254::Fr>(FieldOp::Mul, &[], &[]);
        assert!(v.is_ok_and(|v| v.is_empty()));
    }
}

#[test]
fn length_mismatch_is_an_error() {
    if let Some(ctx) = common::native() {
        let a = [ark_bn254::Fr::one()];
        assert!(ctx.field_op(FieldOp::Mul, &a, &[]).is_err());
    }
}
