//! G1 point arithmetic in WGSL for the `a = 0` short-Weierstrass curves
//! (BN254 G1, BLS12-381 G1), and the host side of points (words in, words
//! out).
//!
//! Points live in homogeneous projective coordinates `(X : Y : Z)` with
//! `x = X/Z`, `y = Y/Z`; the identity is `(0 : 1 : 0)`. Addition, mixed
//! addition and doubling are the complete formulas of Renes, Costello and
//! Batina, "Complete addition formulas for prime order elliptic curves"
//! (EUROCRYPT 2016, ePrint 2015/1060), algorithms 7, 8 and 9 for `a = 0`
//! with `b3 = 3·b`: they are correct for every pair of inputs (identity,
//! `P + P`, `P + (−P)`) on any curve whose group of rational points has odd
//! order, which holds for both curves here (BN254 has prime order,
//! BLS12-381's `E(Fp)` has odd cofactor). So a kernel never branches on
//! point values, and threads of a warp stay in step. The one exception is
//! mixed addition, whose affine operand cannot be the identity (affine
//! coordinates have no identity): callers filter or select around it.
//!
//! [`curve_wgsl`] writes, for a curve with prefix `G` over a field with
//! prefix `F` (both from [`GpuCurve`]): `G_pt` (struct of three `F_el`),
//! `G_identity`, `G_is_identity`, `G_add` (12M), `G_madd` (11M), `G_dbl`
//! (6M + 2S), `G_neg`, `G_from_affine`, and `G_begin` (see [`Loops`]).
//! Multiplication by the small constant `b3` is an addition chain (9 for
//! BN254, 12 for BLS12-381: four field additions instead of a
//! multiplication).
//!
//! The host functions here ([`GpuContext::curve_op`],
//! [`GpuContext::scale_each`]) and the MSM (`crate::msm`) run two kernels
//! per curve, one holding algorithm 7 and one holding algorithms 8 and 9,
//! each formula inlined once inside a loop of steps whose mode comes from
//! the launch; compile time on software adapters and GL grows faster than
//! the number of formulas a kernel inlines.
//!
//! Host encodings, `u32` words in the field's Montgomery form (see
//! [`crate::field`]): an affine point is `x ‖ y` (`2·L` words), the
//! identity `0 ‖ 0` (not on the curve since `b ≠ 0`); a projective point is
//! `X ‖ Y ‖ Z` (`3·L` words), `Z = 0` meaning the identity. Arkworks'
//! `Projective` is Jacobian (`x = X/Z²`, `y = Y/Z³`), so conversion costs
//! three multiplications each way and no inversion.

use ark_ec::short_weierstrass::{Affine, Projective, SWCurveConfig};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{AdditiveGroup, BigInteger, Field, PrimeField, Zero};

use crate::field::{self, FieldSpec, GpuField, MulPath};
use crate::{Arg, DeviceWords, GpuContext, GpuError, Pending};

/// A G1 group the kernels support: a short-Weierstrass curve with `a = 0`
/// over a [`GpuField`], with a small integer `b`.
///
/// The provided methods are the host encodings of the module doc; an
/// implementation only names its WGSL prefix and `b`.
pub trait GpuCurve: SWCurveConfig<BaseField: GpuField> {
    /// WGSL identifier prefix of the curve's functions (`bn_g1`, `bls_g1`).
    const PREFIX: &'static str;
    /// The curve constant `b` of `y² = x³ + b`, as a small integer
    /// (checked against `COEFF_B` by a unit test).
    const B: u64;

    /// `3·b`, the constant of the RCB formulas.
    fn b3() -> u64 {
        3 * Self::B
    }

    /// The base field's WGSL constants.
    fn base_spec() -> FieldSpec {
        <Self::BaseField as GpuField>::spec()
    }

    /// `u32` words of a scalar (canonical, not Montgomery, little-endian).
    fn scalar_words() -> usize {
        <<Self::ScalarField as PrimeField>::BigInt as BigInteger>::NUM_LIMBS * 2
    }

    /// Appends `k`'s canonical little-endian `u32` limbs
    /// ([`GpuCurve::scalar_words`] of them).
    fn push_scalar(k: &Self::ScalarField, out: &mut Vec<u32>) {
        for w in k.into_bigint().as_ref() {
            out.push(*w as u32);
            out.push((*w >> 32) as u32);
        }
    }

    /// Appends the affine encoding of `p`: `x ‖ y`, the identity as zeros.
    fn push_affine(p: &Affine<Self>, out: &mut Vec<u32>) {
        if p.is_zero() {
            out.extend(std::iter::repeat_n(0u32, 2 * Self::BaseField::LIMBS));
        } else {
            p.x.push_words(out);
            p.y.push_words(out);
        }
    }

    /// Appends the homogeneous projective encoding of `p` (arkworks'
    /// Jacobian `(X, Y, Z)` becomes `(X·Z : Y : Z³)`), the identity as
    /// `(0 : 1 : 0)`.
    fn push_projective(p: &Projective<Self>, out: &mut Vec<u32>) {
        if p.z.is_zero() {
            Self::BaseField::ZERO.push_words(out);
            Self::BaseField::ONE.push_words(out);
            Self::BaseField::ZERO.push_words(out);
        } else {
            (p.x * p.z).push_words(out);
            p.y.push_words(out);
            (p.z.square() * p.z).push_words(out);
        }
    }

    /// The point whose homogeneous projective words are `w` (`3·L` words):
    /// `(X : Y : Z)` becomes arkworks' Jacobian `(X·Z, Y·Z², Z)`; `Z = 0` is
    /// the identity. `None` when a coordinate is not a field element (a
    /// kernel bug, never input). The point is not checked to be on the
    /// curve.
    fn projective_from_words(w: &[u32]) -> Option<Projective<Self>> {
        let l = Self::BaseField::LIMBS;
        if w.len() != 3 * l {
            return None;
        }
        let x = Self::BaseField::from_words(&w[..l])?;
        let y = Self::BaseField::from_words(&w[l..2 * l])?;
        let z = Self::BaseField::from_words(&w[2 * l..])?;
        if z.is_zero() {
            return Some(Projective::zero());
        }
        let zz = z.square();
        Some(Projective::new_unchecked(x * z, y * zz, z))
    }

    /// Many points from consecutive projective words, normalised to affine
    /// with one batch inversion.
    fn affine_from_words(w: &[u32]) -> Option<Vec<Affine<Self>>> {
        let l = 3 * Self::BaseField::LIMBS;
        if !w.len().is_multiple_of(l) {
            return None;
        }
        let proj = w
            .chunks_exact(l)
            .map(Self::projective_from_words)
            .collect::<Option<Vec<_>>>()?;
        Some(Projective::normalize_batch(&proj))
    }
}

impl GpuCurve for ark_bn254::g1::Config {
    const PREFIX: &'static str = "bn_g1";
    const B: u64 = 3;
}

impl GpuCurve for ark_bls12_381::g1::Config {
    const PREFIX: &'static str = "bls_g1";
    const B: u64 = 4;
}

/// WGSL of `F_mulk(a)`: `k·a` by an addition chain (binary, from the top
/// bit), for a small public constant `k ≥ 1`.
fn mul_small_wgsl(f: &str, name: &str, k: u64) -> String {
    let mut body = String::from("    var r = a;\n");
    let top = 63 - k.leading_zeros();
    for bit in (0..top).rev() {
        body.push_str(&format!("    r = {f}_add(r, r);\n"));
        if (k >> bit) & 1 == 1 {
            body.push_str(&format!("    r = {f}_add(r, a);\n"));
        }
    }
    format!("fn {name}(a: {f}_el) -> {f}_el {{\n{body}    return r;\n}}\n")
}

/// How the formulas' small loops (two rounds of four to six independent
/// multiplications) reach the driver's compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loops {
    /// Constant trip counts: drivers unroll them and keep the operands in
    /// registers. For hardware GPUs.
    Unrolled,
    /// Trip counts plus a zero that only the running kernel knows (set by
    /// `G_begin(x)` from a buffer word), so no compiler unrolls them and
    /// each formula holds one inlined multiplication. For software
    /// adapters (lavapipe, llvmpipe), whose LLVM JIT otherwise spends
    /// seconds per kernel on unrolled Montgomery multiplications; they are
    /// never used for speed (see [`crate::Accelerator`]), only for tests.
    Rolled,
}

impl Loops {
    /// `Rolled` on a software (CPU) adapter, `Unrolled` otherwise.
    pub fn for_context(ctx: &GpuContext) -> Self {
        if ctx.summary().is_software() {
            Loops::Rolled
        } else {
            Loops::Unrolled
        }
    }

    /// A short tag for pipeline cache keys.
    pub fn tag(self) -> &'static str {
        match self {
            Loops::Unrolled => "unrolled",
            Loops::Rolled => "rolled",
        }
    }
}

/// The curve functions of the module doc with [`Loops::Unrolled`] (see
/// [`curve_wgsl_with`]).
pub fn curve_wgsl<C: GpuCurve>() -> String {
    curve_wgsl_with::<C>(Loops::Unrolled)
}

/// The curve functions of the module doc, and `G_begin(x: u32)`, which a
/// kernel calls first with a buffer word that is never `0xffffffff` (its
/// element count, say): a no-op unless `loops` is [`Loops::Rolled`], and
/// forgetting it only lets the compiler unroll. Needs, once in the
/// module, [`field::mac_wgsl`] and [`field::field_wgsl`] of the base
/// field.
pub fn curve_wgsl_with<C: GpuCurve>(loops: Loops) -> String {
    let f = C::base_spec().prefix;
    let g = C::PREFIX;
    let template = r#"
struct $g_pt { x: $f_el, y: $f_el, z: $f_el }

fn $g_identity() -> $g_pt { return $g_pt($f_zero(), $f_one(), $f_zero()); }
fn $g_is_identity(p: $g_pt) -> bool { return $f_is_zero(p.z); }
fn $g_neg(p: $g_pt) -> $g_pt { return $g_pt(p.x, $f_neg(p.y), p.z); }
fn $g_from_affine(x: $f_el, y: $f_el) -> $g_pt { return $g_pt(x, y, $f_one()); }

// Each formula is two rounds of independent multiplications, and both
// rounds run through one loop over small arrays of operands, so the field
// multiplication appears once per formula. With `Loops::Unrolled` the trip
// counts are constants and drivers unroll them into straight-line code;
// with `Loops::Rolled` a runtime zero ($g_guard) hides them, and the code
// stays small.

// RCB 2015, algorithm 7 (a = 0): complete addition, 12M + 2·b3 + 19A.
fn $g_add(p: $g_pt, q: $g_pt) -> $g_pt {
    // Round 1: t0, t1, t2 of steps 1–3 and the products of steps 6, 11, 16.
    var l = array<$f_el, 6>(p.x, p.y, p.z, $f_add(p.x, p.y), $f_add(p.y, p.z), $f_add(p.x, p.z));
    var r = array<$f_el, 6>(q.x, q.y, q.z, $f_add(q.x, q.y), $f_add(q.y, q.z), $f_add(q.x, q.z));
    var m: array<$f_el, 6>;
    for (var round = 0u; round < 2u + $g_guard; round = round + 1u) {
        for (var i = 0u; i < 6u + $g_guard; i = i + 1u) { m[i] = $f_mul(l[i], r[i]); }
        if (round == 0u) {
            let t3 = $f_sub(m[3], $f_add(m[0], m[1]));
            let t4 = $f_sub(m[4], $f_add(m[1], m[2]));
            let y3 = $g_mul_b3($f_sub(m[5], $f_add(m[0], m[2])));
            let t0 = $f_add($f_add(m[0], m[0]), m[0]);
            let t2 = $g_mul_b3(m[2]);
            let z3 = $f_add(m[1], t2);
            let t1 = $f_sub(m[1], t2);
            // Round 2: steps 25, 26, 28, 29, 31, 32.
            l = array<$f_el, 6>(t4, t3, y3, t1, t0, z3);
            r = array<$f_el, 6>(y3, t1, t0, z3, t3, t4);
        }
    }
    return $g_pt($f_sub(m[1], m[0]), $f_add(m[3], m[2]), $f_add(m[5], m[4]));
}

// RCB 2015, algorithm 8 (a = 0): p + (qx, qy), complete for every p,
// q must not be the identity; 11M + 2·b3 + 13A.
fn $g_madd(p: $g_pt, qx: $f_el, qy: $f_el) -> $g_pt {
    // Round 1: t0, t1 of steps 1–2 and the products of steps 5, 8, 10.
    var l = array<$f_el, 6>(p.x, p.y, $f_add(qx, qy), qy, qx, qx);
    var r = array<$f_el, 6>(qx, qy, $f_add(p.x, p.y), p.z, p.z, qx);
    var m: array<$f_el, 6>;
    for (var round = 0u; round < 2u + $g_guard; round = round + 1u) {
        let count = select(6u, 5u, round == 0u) + $g_guard;
        for (var i = 0u; i < count; i = i + 1u) { m[i] = $f_mul(l[i], r[i]); }
        if (round == 0u) {
            let t3 = $f_sub(m[2], $f_add(m[0], m[1]));
            let t4 = $f_add(m[3], p.y);
            let y3 = $g_mul_b3($f_add(m[4], p.x));
            let t0 = $f_add($f_add(m[0], m[0]), m[0]);
            let t2 = $g_mul_b3(p.z);
            let z3 = $f_add(m[1], t2);
            let t1 = $f_sub(m[1], t2);
            // Round 2: steps 18, 19, 21, 22, 24, 25.
            l = array<$f_el, 6>(t4, t3, y3, t1, t0, z3);
            r = array<$f_el, 6>(y3, t1, t0, z3, t3, t4);
        }
    }
    return $g_pt($f_sub(m[1], m[0]), $f_add(m[3], m[2]), $f_add(m[5], m[4]));
}

// RCB 2015, algorithm 9 (a = 0): complete doubling, 6M + 2S + 1·b3 + 9A.
fn $g_dbl(p: $g_pt) -> $g_pt {
    // Round 1: Y², YZ, Z², XY (steps 1, 5, 6, 16).
    var l = array<$f_el, 4>(p.y, p.y, p.z, p.x);
    var r = array<$f_el, 4>(p.y, p.z, p.z, p.y);
    var m: array<$f_el, 4>;
    for (var round = 0u; round < 2u + $g_guard; round = round + 1u) {
        for (var i = 0u; i < 4u + $g_guard; i = i + 1u) { m[i] = $f_mul(l[i], r[i]); }
        if (round == 0u) {
            var z3 = $f_add(m[0], m[0]);
            z3 = $f_add(z3, z3);
            z3 = $f_add(z3, z3);
            let t2 = $g_mul_b3(m[2]);
            let y3 = $f_add(m[0], t2);
            let t0 = $f_sub(m[0], $f_add($f_add(t2, t2), t2));
            // Round 2: steps 8, 10, 14, 17.
            l = array<$f_el, 4>(t2, m[1], t0, t0);
            r = array<$f_el, 4>(z3, z3, y3, m[3]);
        }
    }
    return $g_pt($f_add(m[3], m[3]), $f_add(m[0], m[2]), m[1]);
}

"#;
    let mut s = mul_small_wgsl(f, &format!("{g}_mul_b3"), C::b3());
    s.push_str(&match loops {
        Loops::Unrolled => format!("const {g}_guard: u32 = 0u;\nfn {g}_begin(x: u32) {{}}\n"),
        // x is an element count, never 2³² − 1: the guard is zero, but no
        // compiler can prove it.
        Loops::Rolled => format!(
            "var<private> {g}_guard: u32;\nfn {g}_begin(x: u32) {{ {g}_guard = u32(x == 0xffffffffu); }}\n"
        ),
    });
    s.push_str(&template.replace("$g", g).replace("$f", f));
    s
}

/// The shared head of a curve kernel: multiply-accumulate, base field,
/// thread index and curve functions (everything a kernel over `C`'s points
/// needs above its bindings).
pub fn prelude<C: GpuCurve>(path: MulPath, loops: Loops) -> String {
    format!(
        "{}\n{}\n{}\n{}\n",
        field::mac_wgsl(path),
        field::field_wgsl(&C::base_spec()),
        field::index_wgsl(),
        curve_wgsl_with::<C>(loops)
    )
}

/// Element-wise point operations, the test kernel of a curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CurveOp {
    /// `a + b` (algorithm 7).
    Add = 0,
    /// `a + b` with `b` normalised to affine on the host (algorithm 8;
    /// the kernel keeps `a` when `b` is the identity).
    MixedAdd = 1,
    /// `2·a` (algorithm 9).
    Double = 2,
    /// `−a`.
    Neg = 3,
}

/// What one launch of a G1 kernel computes (its `params[1]`); every mode
/// is a loop of steps, each step one formula on one of two accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Mode {
    /// `A[i] + B[i]`, both projective.
    Add = 0,
    /// `A[i] + B[i]`, `B` affine (stride `2·L`), kept `A[i]` for `(0, 0)`.
    MixedAdd = 1,
    /// `2·A[i]`.
    Double = 2,
    /// `−A[i]`.
    Neg = 3,
    /// `B[i]·A[i]`: `A` affine, `B` scalars (`SW` words each), over their
    /// low `params[2]` bits.
    Scale = 4,
    /// MSM bucket segments: thread `t` sums the affine bases
    /// `A[v & 0x7fffffff]` (negated when `v`'s top bit is set) for the
    /// entries `v = B[e]`, `e ∈ [I[t], I[t+1])`.
    Segments = 5,
    /// Thread `t` sums the projective points `A[e]`, `e ∈ [I[t], I[t+1])`.
    Groups = 6,
    /// Bucket reduction: `A` is the dense buckets of windows (`M =
    /// params[2]` each, bucket `k` at `k − 1`); thread `t` takes window
    /// `t / R`, range `t % R` (`R = params[4]`) of `Lr = params[3]` buckets
    /// `[lo, hi)`, and writes `S = Σ B_k` and `T = Σ (k − lo)·B_k` over it
    /// (two points).
    Ranges = 7,
}

/// The two G1 kernels of a curve, by the formulas they contain: a kernel
/// holds each of its formulas once, in a loop, because compile time on
/// software adapters and GL grows faster than linearly with the number of
/// inlined formulas (one kernel with all three takes twice as long as
/// three kernels with one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Algorithm 7 only: `Add`, `Neg`, `Groups`, `Ranges`.
    Add,
    /// Algorithms 8 and 9: `MixedAdd`, `Double`, `Scale`, `Segments`.
    DblMadd,
}

impl Mode {
    fn kernel(self) -> Kernel {
        match self {
            Mode::Add | Mode::Neg | Mode::Groups | Mode::Ranges => Kernel::Add,
            Mode::MixedAdd | Mode::Double | Mode::Scale | Mode::Segments => Kernel::DblMadd,
        }
    }
}

/// WGSL of a G1 kernel. Bindings: `pa`, `pb`, `ix` (read-only words),
/// `params` (`[n, mode, …]`), `out` (projective points; two per thread
/// for `Ranges`).
fn g1_kernel<C: GpuCurve>(kernel: Kernel, path: MulPath, loops: Loops) -> String {
    let (setup, step, apply) = match kernel {
        Kernel::Add => (
            r#"
        case 0u: { acc0 = pt_a(t); q = pt_b(t); steps = 1u; }
        case 3u: { acc0 = $g_neg(pt_a(t)); }
        case 6u: { base = ix[t]; steps = ix[t + 1u] - base; }
        default: {
            let m = params[2];
            let lr = params[3];
            let w = t / params[4];
            let lo = min((t % params[4]) * lr, m);
            hi = min(lo + lr, m);
            base = w * m;
            steps = 2u * (hi - lo);
        }"#,
            r#"
            case 6u: { q = pt_a(base + s); }
            case 7u: {
                // S = S + B_k (k from the top), then T = T + S.
                if ((s & 1u) == 0u) { q = pt_a(base + hi - 1u - s / 2u); } else { q = acc0; into1 = true; }
            }
            default: {}"#,
            "r = $g_add(lhs, q);",
        ),
        Kernel::DblMadd => (
            r#"
        case 1u: {
            acc0 = pt_a(t);
            qx = load_b(2u * L * t);
            qy = load_b(2u * L * t + L);
            steps = select(1u, 0u, $f_is_zero(qx) && $f_is_zero(qy));
        }
        case 2u: { acc0 = pt_a(t); steps = 1u; }
        case 4u: {
            qx = load_a(2u * L * t);
            qy = load_a(2u * L * t + L);
            // Two steps per bit, from bit params[2] − 1 (the longest
            // scalar of the launch) down.
            steps = select(2u * min(params[2], 32u * SW), 0u, $f_is_zero(qx) && $f_is_zero(qy));
        }
        default: { base = ix[t]; steps = ix[t + 1u] - base; }"#,
            r#"
            case 1u: { formula = 1u; }
            case 4u: {
                // Double-and-add from the top bit: even steps double, odd
                // steps add when the bit is set.
                if ((s & 1u) == 1u) {
                    let bit = min(params[2], 32u * SW) - 1u - s / 2u;
                    if (((pb[SW * t + bit / 32u] >> (bit % 32u)) & 1u) == 0u) { continue; }
                    formula = 1u;
                }
            }
            case 5u: {
                let v = pb[base + s];
                let i = v & 0x7fffffffu;
                qx = load_a(2u * L * i);
                qy = load_a(2u * L * i + L);
                if ((v >> 31u) == 1u) { qy = $f_neg(qy); }
                formula = 1u;
            }
            default: {}"#,
            "if (formula == 1u) { r = $g_madd(lhs, qx, qy); } else { r = $g_dbl(lhs); }",
        ),
    };
    let template = r#"
@group(0) @binding(0) var<storage, read> pa: array<u32>;
@group(0) @binding(1) var<storage, read> pb: array<u32>;
@group(0) @binding(2) var<storage, read> ix: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

const L: u32 = $lu;
const SW: u32 = $swu;

fn load_a(w: u32) -> $f_el { var r: $f_el; for (var k = 0u; k < L; k = k + 1u) { r[k] = pa[w + k]; } return r; }
fn load_b(w: u32) -> $f_el { var r: $f_el; for (var k = 0u; k < L; k = k + 1u) { r[k] = pb[w + k]; } return r; }
fn pt_a(i: u32) -> $g_pt { return $g_pt(load_a(3u * L * i), load_a(3u * L * i + L), load_a(3u * L * i + 2u * L)); }
fn pt_b(i: u32) -> $g_pt { return $g_pt(load_b(3u * L * i), load_b(3u * L * i + L), load_b(3u * L * i + 2u * L)); }
fn store(i: u32, p: $g_pt) {
    for (var k = 0u; k < L; k = k + 1u) {
        out[3u * L * i + k] = p.x[k];
        out[3u * L * i + L + k] = p.y[k];
        out[3u * L * i + 2u * L + k] = p.z[k];
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = thread_index(gid, nwg);
    let n = params[0];
    if (t >= n) { return; }
    $g_begin(n);
    let mode = params[1];
    var acc0 = $g_identity();
    var acc1 = $g_identity();
    var steps = 0u;
    var base = 0u;
    var hi = 0u;
    var q = $g_identity();
    var qx = $f_zero();
    var qy = $f_zero();
    switch mode {$setup
    }
    for (var s = 0u; s < steps; s = s + 1u) {
        // 0: acc + q, 1: acc + (qx, qy), 2: 2·acc.
        var formula = select(2u, 0u, $add_kernel);
        var into1 = false;
        switch mode {$step
        }
        var lhs = acc0;
        if (into1) { lhs = acc1; }
        var r: $g_pt;
        $apply
        if (into1) { acc1 = r; } else { acc0 = r; }
    }
    if (mode == 7u) {
        store(2u * t, acc0);
        store(2u * t + 1u, acc1);
    } else {
        store(t, acc0);
    }
}
"#;
    let body = template
        .replace("$setup", setup)
        .replace("$step", step)
        .replace("$apply", apply)
        .replace(
            "$add_kernel",
            if kernel == Kernel::Add {
                "true"
            } else {
                "false"
            },
        )
        .replace("$l", &C::BaseField::LIMBS.to_string())
        .replace("$sw", &C::scalar_words().to_string())
        .replace("$g", C::PREFIX)
        .replace("$f", C::base_spec().prefix);
    format!("{}\n{body}", prelude::<C>(path, loops))
}

/// Projective points out of a kernel's output words.
pub(crate) fn points_from_words<C: GpuCurve>(
    words: &[u32],
    kernel: &'static str,
    out: &mut Vec<Projective<C>>,
) -> Result<(), GpuError> {
    for w in words.chunks_exact(3 * C::BaseField::LIMBS) {
        out.push(C::projective_from_words(w).ok_or(GpuError::BadOutput(kernel))?);
    }
    Ok(())
}

/// `k·p` for each pair, on the CPU (arkworks): the reference of
/// [`GpuContext::scale_each`].
pub fn scale_each_cpu<C: GpuCurve>(
    points: &[Affine<C>],
    scalars: &[C::ScalarField],
) -> Result<Vec<Projective<C>>, GpuError> {
    if points.len() != scalars.len() {
        return Err(GpuError::LengthMismatch(points.len(), scalars.len()));
    }
    Ok(points.iter().zip(scalars).map(|(p, k)| *p * k).collect())
}

impl GpuContext {
    /// One launch of `C`'s G1 kernel for `mode` over `threads` threads;
    /// `extra` follows `[threads, mode]` in the params. Returns the output
    /// words (`3·L` per point, one point per thread, two for `Ranges`).
    pub(crate) fn g1_launch<C: GpuCurve>(
        &self,
        mode: Mode,
        inputs: [&[u32]; 3],
        extra: &[u32],
        threads: usize,
    ) -> Result<Vec<u32>, GpuError> {
        let [a, b, i] = inputs;
        let out = self.g1_dispatch::<C>(
            mode,
            [Arg::Host(a), Arg::Host(b), Arg::Host(i)],
            extra,
            threads,
        )?;
        self.read(&out)
    }

    /// [`GpuContext::g1_launch`] whose inputs may already be on the device
    /// and whose output stays there (the MSM chains its steps this way).
    pub(crate) fn g1_dispatch<C: GpuCurve>(
        &self,
        mode: Mode,
        inputs: [Arg<'_>; 3],
        extra: &[u32],
        threads: usize,
    ) -> Result<DeviceWords, GpuError> {
        let (pipeline, params, out_words, n) = self.g1_prepare::<C>(mode, extra, threads)?;
        let [a, b, i] = inputs;
        self.dispatch(&pipeline, &[a, b, i, Arg::Host(&params)], out_words, n)
    }

    /// [`GpuContext::g1_launch`] submitted with its readback, for
    /// [`GpuContext::pipelined`] chunk loops.
    pub(crate) fn g1_submit<C: GpuCurve>(
        &self,
        mode: Mode,
        inputs: [&[u32]; 3],
        extra: &[u32],
        threads: usize,
    ) -> Result<Pending, GpuError> {
        let (pipeline, params, out_words, n) = self.g1_prepare::<C>(mode, extra, threads)?;
        let [a, b, i] = inputs;
        let args = [Arg::Host(a), Arg::Host(b), Arg::Host(i), Arg::Host(&params)];
        self.submit(&pipeline, &args, out_words, n)
    }

    /// The pipeline, parameters (`[n, mode, extra…]`), output words and
    /// thread count of one G1 launch.
    #[allow(clippy::type_complexity)]
    fn g1_prepare<C: GpuCurve>(
        &self,
        mode: Mode,
        extra: &[u32],
        threads: usize,
    ) -> Result<(std::sync::Arc<wgpu::ComputePipeline>, Vec<u32>, usize, u32), GpuError> {
        let path = self.mul_path();
        let loops = Loops::for_context(self);
        let kernel = mode.kernel();
        let key = format!("g1/{kernel:?}/{}/{}/{}", C::PREFIX, path.tag(), loops.tag());
        let pipeline = self.pipeline(&key, || g1_kernel::<C>(kernel, path, loops))?;
        let n = u32::try_from(threads).map_err(|_| GpuError::TooLarge {
            what: "g1 threads".into(),
            words: threads,
            max_words: u32::MAX as usize,
        })?;
        let mut params = vec![n, mode as u32];
        params.extend_from_slice(extra);
        let per_thread = if mode == Mode::Ranges { 2 } else { 1 };
        let out_words = threads * per_thread * 3 * C::BaseField::LIMBS;
        Ok((pipeline, params, out_words, n))
    }

    /// Element-wise `op` over `a` and `b` (equal lengths; `b` is ignored by
    /// the unary ops but must still match in length), chunked under the
    /// adapter's binding limit. The test and bench entry of the curve
    /// formulas.
    pub fn curve_op<C: GpuCurve>(
        &self,
        op: CurveOp,
        a: &[Projective<C>],
        b: &[Projective<C>],
    ) -> Result<Vec<Projective<C>>, GpuError> {
        if a.len() != b.len() {
            return Err(GpuError::LengthMismatch(a.len(), b.len()));
        }
        let mode = match op {
            CurveOp::Add => Mode::Add,
            CurveOp::MixedAdd => Mode::MixedAdd,
            CurveOp::Double => Mode::Double,
            CurveOp::Neg => Mode::Neg,
        };
        let l = C::BaseField::LIMBS;
        let chunk = self.items_per_launch(3 * l, 1 << 20);
        let mut out = Vec::with_capacity(a.len());
        self.pipelined(
            a.chunks(chunk).zip(b.chunks(chunk)),
            |(ca, cb)| {
                let mut wa = Vec::with_capacity(ca.len() * 3 * l);
                let mut wb = Vec::with_capacity(cb.len() * 3 * l);
                ca.iter().for_each(|p| C::push_projective(p, &mut wa));
                if op == CurveOp::MixedAdd {
                    for p in Projective::normalize_batch(cb) {
                        C::push_affine(&p, &mut wb);
                    }
                } else {
                    cb.iter().for_each(|p| C::push_projective(p, &mut wb));
                }
                self.g1_submit::<C>(mode, [&wa, &wb, &[]], &[], ca.len())
            },
            |words| points_from_words(&words, "g1", &mut out),
        )?;
        Ok(out)
    }

    /// `kᵢ·Pᵢ` for each pair: n independent scalar multiplications
    /// (double-and-add over as many bits as the launch's longest scalar
    /// has, one thread each), e.g. the
    /// random multipliers `rᵢ·Aᵢ` of a Groth16 batch or `rᵢ·H(mᵢ)` of a BLS
    /// batch. Identity points give the identity.
    pub fn scale_each<C: GpuCurve>(
        &self,
        points: &[Affine<C>],
        scalars: &[C::ScalarField],
    ) -> Result<Vec<Projective<C>>, GpuError> {
        if points.len() != scalars.len() {
            return Err(GpuError::LengthMismatch(points.len(), scalars.len()));
        }
        let l = C::BaseField::LIMBS;
        let sw = C::scalar_words();
        // Keep one launch's work moderate: a thread does ~256 doublings.
        let chunk = self.items_per_launch(3 * l, 1 << 16);
        let mut out = Vec::with_capacity(points.len());
        self.pipelined(
            points.chunks(chunk).zip(scalars.chunks(chunk)),
            |(cp, ck)| {
                let mut wp = Vec::with_capacity(cp.len() * 2 * l);
                let mut wk = Vec::with_capacity(ck.len() * sw);
                cp.iter().for_each(|p| C::push_affine(p, &mut wp));
                ck.iter().for_each(|k| C::push_scalar(k, &mut wk));
                // Double-and-add over the longest scalar's bits only: the
                // 64-bit multipliers of a BLS batch cost a quarter of a
                // full-width scalar.
                let bits = ck
                    .iter()
                    .map(|k| k.into_bigint().num_bits())
                    .max()
                    .unwrap_or(0);
                self.g1_submit::<C>(Mode::Scale, [&wp, &wk, &[]], &[bits], cp.len())
            },
            |words| points_from_words(&words, "g1", &mut out),
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ec::AffineRepr;
    use ark_ff::UniformRand;

    fn constants<C: GpuCurve>() {
        assert!(C::COEFF_A.is_zero());
        assert_eq!(C::COEFF_B, C::BaseField::from(C::B));
        assert_eq!(C::scalar_words(), 8);
    }

    fn round_trip<C: GpuCurve>() {
        let mut rng = ark_std::test_rng();
        let mut pts: Vec<Projective<C>> = (0..16).map(|_| Projective::rand(&mut rng)).collect();
        pts.push(Projective::zero());
        for p in &pts {
            let mut w = Vec::new();
            C::push_projective(p, &mut w);
            assert_eq!(w.len(), 3 * C::BaseField::LIMBS);
            assert_eq!(C::projective_from_words(&w), Some(*p));
            let a = p.into_affine();
            let mut wa = Vec::new();
            C::push_affine(&a, &mut wa);
            assert_eq!(wa.len(), 2 * C::BaseField::LIMBS);
            assert_eq!(wa.iter().all(|x| *x == 0), a.is_zero());
        }
        let mut all = Vec::new();
        pts.iter().for_each(|p| C::push_projective(p, &mut all));
        let aff = C::affine_from_words(&all).unwrap_or_default();
        assert_eq!(aff, Projective::normalize_batch(&pts));
        assert_eq!(C::projective_from_words(&all[1..]), None);
        assert!(C::affine_from_words(&all[1..]).is_none());
    }

    #[test]
    fn curve_constants_and_encodings() {
        constants::<ark_bn254::g1::Config>();
        constants::<ark_bls12_381::g1::Config>();
        round_trip::<ark_bn254::g1::Config>();
        round_trip::<ark_bls12_381::g1::Config>();
        assert!(mul_small_wgsl("f", "m", 9).matches("f_add").count() == 4);
    }
}
