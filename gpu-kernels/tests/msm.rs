//! The GPU MSM against arkworks' `msm_unchecked`, on every adapter the
//! machine has: sizes 0 to a few thousand, identity bases, cancelling
//! points, scalars 0, 1, r − 1 and high bits, all-equal scalars (one bucket
//! per window, split into many segments), forced windows from 1 to 12 bits
//! and inputs cut into several chunks. Unchunked inputs take the
//! device-resident path (every intermediate stays on the GPU); a forced
//! `chunk` takes the host path (segment sums read back and merged), so
//! both are checked.
//!
//! One test per curve and context, so each stays well under 30 s on
//! lavapipe (compiling the two G1 kernels is most of it).

mod common;

use common::{edge_scalars, rng, with_ctx};

use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{One, PrimeField, UniformRand, Zero};
use int_gpu::{GpuContext, GpuCurve, MsmConfig, msm_cpu};

fn random_bases<C: GpuCurve>(n: usize, seed: u64) -> Vec<Affine<C>> {
    let mut r = rng(seed);
    let p: Vec<Projective<C>> = (0..n).map(|_| Projective::rand(&mut r)).collect();
    Projective::normalize_batch(&p)
}

fn same<C: GpuCurve>(
    ctx: &GpuContext,
    what: &str,
    bases: &[Affine<C>],
    scalars: &[C::ScalarField],
    cfg: Option<MsmConfig>,
) {
    let got = match cfg {
        Some(cfg) => ctx.msm_with(bases, scalars, &cfg),
        None => ctx.msm(bases, scalars),
    }
    .unwrap_or_else(|e| panic!("{} {what}: {e}", C::PREFIX));
    let want = msm_cpu(bases, scalars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want, "{} {what} (n = {})", C::PREFIX, bases.len());
}

fn check<C: GpuCurve>(ctx: &GpuContext) {
    let bits = C::ScalarField::MODULUS_BIT_SIZE;
    // Small sizes, edge scalars first.
    for (i, n) in [0usize, 1, 2, 3, 9, 40].into_iter().enumerate() {
        let bases = random_bases::<C>(n, 10 + i as u64);
        same(ctx, "small", &bases, &edge_scalars(n, 20 + i as u64), None);
    }
    // Each edge scalar alone, on the generator.
    for k in edge_scalars::<C::ScalarField>(9, 0) {
        same::<C>(ctx, "one edge scalar", &[Affine::generator()], &[k], None);
    }
    // Identity bases, P + P, P + (−P), and a sum that cancels.
    let mut bases = random_bases::<C>(12, 30);
    bases[1] = Affine::identity();
    bases[4] = bases[3];
    bases[6] = -bases[5];
    bases[11] = Affine::identity();
    let mut ks = edge_scalars::<C::ScalarField>(12, 31);
    ks[5] = ks[6];
    same(ctx, "identity and ±P", &bases, &ks, None);
    let p = bases[0];
    same(ctx, "cancelling", &[p, -p], &[ks[7], ks[7]], None);
    same::<C>(
        ctx,
        "all identity",
        &[Affine::identity(); 3],
        &ks[..3],
        None,
    );
    let zeros = vec![C::ScalarField::zero(); 20];
    same(
        ctx,
        "all zero scalars",
        &random_bases::<C>(20, 32),
        &zeros,
        None,
    );
    // Equal scalars: every point in one bucket per window, split into
    // segments of 8 and merged over two levels.
    let bases = random_bases::<C>(600, 40);
    let k = C::ScalarField::rand(&mut rng(41));
    let mut cfg = MsmConfig::for_size(600, bits);
    cfg.segment = 8;
    same(ctx, "equal scalars", &bases, &[k; 600], Some(cfg));
    let r1 = vec![-C::ScalarField::one(); 600];
    same(ctx, "all r − 1", &bases, &r1, Some(cfg));
    same(ctx, "all r − 1, default", &bases, &r1, None);
    // The same on the chunked host path (each chunk's segment sums come
    // back to the host and meet in its merge).
    cfg.chunk = 250;
    same(ctx, "equal scalars in chunks", &bases, &[k; 600], Some(cfg));
    // Forced windows, narrow to wide, with small ranges.
    let ks = edge_scalars::<C::ScalarField>(300, 50);
    for (window, range) in [(1, 1), (2, 1), (5, 3), (8, 7), (12, 64)] {
        let cfg = MsmConfig {
            window,
            segment: 16,
            range,
            chunk: 0,
        };
        same(
            ctx,
            &format!("window {window}"),
            &bases[..300],
            &ks,
            Some(cfg),
        );
    }
    // A few thousand points, default configuration, then cut into chunks
    // whose segment sums meet in the merge.
    let n = 3000;
    let bases = random_bases::<C>(n, 60);
    let ks = edge_scalars::<C::ScalarField>(n, 61);
    same(ctx, "3000 points", &bases, &ks, None);
    let mut cfg = MsmConfig::for_size(n, bits);
    cfg.chunk = 700;
    same(ctx, "3000 points in chunks of 700", &bases, &ks, Some(cfg));
    // Lengths must match.
    assert!(ctx.msm(&bases[..2], &ks[..1]).is_err());
    assert!(msm_cpu(&bases[..2], &ks[..1]).is_err());
}

#[test]
fn bn254_msm_native() {
    with_ctx("native", |_, c| check::<ark_bn254::g1::Config>(c));
}

#[test]
fn bn254_msm_portable() {
    with_ctx("portable", |_, c| check::<ark_bn254::g1::Config>(c));
}

#[test]
fn bn254_msm_gl() {
    with_ctx("gl", |_, c| check::<ark_bn254::g1::Config>(c));
}

#[test]
fn bls12_381_msm_native() {
    with_ctx("native", |_, c| check::<ark_bls12_381::g1::Config>(c));
}

#[test]
fn bls12_381_msm_portable() {
    with_ctx("portable", |_, c| check::<ark_bls12_381::g1::Config>(c));
}

#[test]
fn bls12_381_msm_gl() {
    with_ctx("gl", |_, c| check::<ark_bls12_381::g1::Config>(c));
}

/// The device-resident path moves the inputs up once and reads back only
/// the windows' range sums (`2·R` points per window) in three launches;
/// the chunked host path reads every segment sum back and uploads the
/// dense buckets again. Byte counts are exact, so this cannot drift.
#[test]
fn bn254_msm_resident_transfers() {
    type C = ark_bn254::g1::Config;
    let Some(ctx) = common::own_context(0, int_gpu::BackendChoice::Native) else {
        return;
    };
    let n = 3000;
    let bases = random_bases::<C>(n, 80);
    let mut r = rng(81);
    let ks: Vec<ark_bn254::Fr> = (0..n).map(|_| ark_bn254::Fr::rand(&mut r)).collect();
    let cfg = MsmConfig::for_size(n, 254);
    let before = ctx.transfer_stats();
    same(&ctx, "resident", &bases, &ks, Some(cfg));
    let resident = ctx.transfer_stats() - before;
    let w = int_gpu::msm::windows(254, cfg.window) as u64;
    let r = (1u64 << (cfg.window - 1)).div_ceil(u64::from(cfg.range));
    let point_bytes = 3 * 8 * 4;
    assert_eq!(resident.read_bytes, 2 * w * r * point_bytes, "{resident:?}");
    assert_eq!(resident.dispatches, 3, "{resident:?}");
    let mut chunked = cfg;
    chunked.chunk = n / 2;
    let before = ctx.transfer_stats();
    same(&ctx, "chunked", &bases, &ks, Some(chunked));
    let host = ctx.transfer_stats() - before;
    eprintln!("MSM of {n} BN254 points: resident {resident:?}, chunked host path {host:?}");
    assert!(
        resident.read_bytes * 4 < host.read_bytes,
        "{resident:?} {host:?}"
    );
    assert!(
        resident.uploaded_bytes < host.uploaded_bytes,
        "{resident:?} {host:?}"
    );
}

/// 2¹⁸ points (the size the chunking is for); minutes on lavapipe, so
/// run by hand: `cargo test -p int-gpu --test msm -- --ignored`.
#[test]
#[ignore]
fn bn254_msm_2_pow_18() {
    with_ctx("native", |_, ctx| {
        let n = 1 << 18;
        let bases = random_bases::<ark_bn254::g1::Config>(n, 70);
        let ks = edge_scalars::<ark_bn254::Fr>(n, 71);
        same(ctx, "2^18", &bases, &ks, None);
    });
}
