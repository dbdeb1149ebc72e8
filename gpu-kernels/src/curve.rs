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
//! (6M + 2S), `G_neg`, `G_scale` (projective point by a full-width scalar)
//! and `G_scale_affine` (affine point by a scalar, mixed additions).
//! Multiplication by the small constant `b3` is an addition chain (9 for
//! BN254, 12 for BLS12-381: four field additions instead of a
//! multiplication).
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
use crate::{GpuContext, GpuError};

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

/// The curve functions of the module doc. Needs, once in the module,
/// [`field::mac_wgsl`] and [`field::field_wgsl`] of the base field.
pub fn curve_wgsl<C: GpuCurve>() -> String {
    let f = C::base_spec().prefix;
    let g = C::PREFIX;
    let sw = C::scalar_words();
    let template = r#"
struct $g_pt { x: $f_el, y: $f_el, z: $f_el }
const $g_SCALAR_WORDS: u32 = $swu;
alias $g_scalar = array<u32, $sw>;

fn $g_identity() -> $g_pt { return $g_pt($f_zero(), $f_one(), $f_zero()); }
fn $g_is_identity(p: $g_pt) -> bool { return $f_is_zero(p.z); }
fn $g_neg(p: $g_pt) -> $g_pt { return $g_pt(p.x, $f_neg(p.y), p.z); }
fn $g_from_affine(x: $f_el, y: $f_el) -> $g_pt { return $g_pt(x, y, $f_one()); }

// Each formula is two rounds of independent multiplications, and both
// rounds run through one loop over small arrays of operands, so the field
// multiplication appears once per formula. Drivers that unroll the loops
// get straight-line code; compilers that inline every call site (Mesa's
// GLSL front end for the GL backend takes about a second per inlined
// Montgomery multiplication on llvmpipe) see one.

// RCB 2015, algorithm 7 (a = 0): complete addition, 12M + 2·b3 + 19A.
fn $g_add(p: $g_pt, q: $g_pt) -> $g_pt {
    // Round 1: t0, t1, t2 of steps 1–3 and the products of steps 6, 11, 16.
    var l = array<$f_el, 6>(p.x, p.y, p.z, $f_add(p.x, p.y), $f_add(p.y, p.z), $f_add(p.x, p.z));
    var r = array<$f_el, 6>(q.x, q.y, q.z, $f_add(q.x, q.y), $f_add(q.y, q.z), $f_add(q.x, q.z));
    var m: array<$f_el, 6>;
    for (var round = 0u; round < 2u; round = round + 1u) {
        for (var i = 0u; i < 6u; i = i + 1u) { m[i] = $f_mul(l[i], r[i]); }
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
    for (var round = 0u; round < 2u; round = round + 1u) {
        let count = select(6u, 5u, round == 0u);
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
    for (var round = 0u; round < 2u; round = round + 1u) {
        for (var i = 0u; i < 4u; i = i + 1u) { m[i] = $f_mul(l[i], r[i]); }
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

// k·p, double-and-add from the top bit of k (public scalars: the branch
// on a bit is not a secret).
fn $g_scale(p: $g_pt, k: $g_scalar) -> $g_pt {
    var kk = k;
    var r = $g_identity();
    for (var w = i32($g_SCALAR_WORDS) - 1i; w >= 0i; w = w - 1i) {
        let word = kk[w];
        for (var bit = 31i; bit >= 0i; bit = bit - 1i) {
            r = $g_dbl(r);
            if (((word >> u32(bit)) & 1u) == 1u) { r = $g_add(r, p); }
        }
    }
    return r;
}

// k·(qx, qy) for an affine point that is not the identity.
fn $g_scale_affine(qx: $f_el, qy: $f_el, k: $g_scalar) -> $g_pt {
    var kk = k;
    var r = $g_identity();
    for (var w = i32($g_SCALAR_WORDS) - 1i; w >= 0i; w = w - 1i) {
        let word = kk[w];
        for (var bit = 31i; bit >= 0i; bit = bit - 1i) {
            r = $g_dbl(r);
            if (((word >> u32(bit)) & 1u) == 1u) { r = $g_madd(r, qx, qy); }
        }
    }
    return r;
}
"#;
    let mut s = mul_small_wgsl(f, &format!("{g}_mul_b3"), C::b3());
    s.push_str(
        &template
            .replace("$sw", &sw.to_string())
            .replace("$g", g)
            .replace("$f", f),
    );
    s
}

/// WGSL helpers to move points between storage buffers of `u32` words and
/// registers: `G_load_affine_<buf>(i)` → `vec` of x, y and
/// `G_load_pt_<buf>(i)`, `G_store_pt_<buf>(i, p)`, for the named buffers.
pub(crate) fn io_wgsl<C: GpuCurve>(
    affine_bufs: &[&str],
    pt_in: &[&str],
    pt_out: &[&str],
) -> String {
    let f = C::base_spec().prefix;
    let g = C::PREFIX;
    let l = C::BaseField::LIMBS;
    let mut s = String::new();
    for b in affine_bufs {
        s.push_str(&format!(
            "fn {g}_load_x_{b}(i: u32) -> {f}_el {{ var r: {f}_el; for (var k = 0u; k < {l}u; k = k + 1u) {{ r[k] = {b}[i * {l2}u + k]; }} return r; }}
fn {g}_load_y_{b}(i: u32) -> {f}_el {{ var r: {f}_el; for (var k = 0u; k < {l}u; k = k + 1u) {{ r[k] = {b}[i * {l2}u + {l}u + k]; }} return r; }}
",
            l2 = 2 * l
        ));
    }
    for b in pt_in {
        s.push_str(&format!(
            "fn {g}_load_pt_{b}(i: u32) -> {g}_pt {{
    var x: {f}_el; var y: {f}_el; var z: {f}_el;
    for (var k = 0u; k < {l}u; k = k + 1u) {{
        x[k] = {b}[i * {l3}u + k];
        y[k] = {b}[i * {l3}u + {l}u + k];
        z[k] = {b}[i * {l3}u + {l2}u + k];
    }}
    return {g}_pt(x, y, z);
}}
",
            l2 = 2 * l,
            l3 = 3 * l
        ));
    }
    for b in pt_out {
        s.push_str(&format!(
            "fn {g}_store_pt_{b}(i: u32, p: {g}_pt) {{
    for (var k = 0u; k < {l}u; k = k + 1u) {{
        {b}[i * {l3}u + k] = p.x[k];
        {b}[i * {l3}u + {l}u + k] = p.y[k];
        {b}[i * {l3}u + {l2}u + k] = p.z[k];
    }}
}}
",
            l2 = 2 * l,
            l3 = 3 * l
        ));
    }
    s
}

/// The shared head of a curve kernel: multiply-accumulate, base field,
/// thread index and curve functions (everything a kernel over `C`'s points
/// needs above its bindings).
pub fn prelude<C: GpuCurve>(path: MulPath) -> String {
    format!(
        "{}\n{}\n{}\n{}\n",
        field::mac_wgsl(path),
        field::field_wgsl(&C::base_spec()),
        field::index_wgsl(),
        curve_wgsl::<C>()
    )
}

/// Element-wise point operations, the test kernel of a curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CurveOp {
    /// `a + b` (algorithm 7).
    Add = 0,
    /// `a + b` with `b` normalised to affine on the host (algorithm 8;
    /// the kernel selects `a` when `b` is the identity).
    MixedAdd = 1,
    /// `2·a` (algorithm 9).
    Double = 2,
    /// `−a`.
    Neg = 3,
}

/// WGSL of the element-wise kernel of `op` (one pipeline per op: GL
/// compilers inline every formula a kernel mentions, so a kernel holds
/// only the one it runs): `a` and `b` projective words (for
/// [`CurveOp::MixedAdd`], `b` holds affine `x ‖ y` in a projective-sized
/// slot, `(0, 0)` for the identity), params `[n]`, output projective.
fn curve_ops_kernel<C: GpuCurve>(op: CurveOp, path: MulPath) -> String {
    let f = C::base_spec().prefix;
    let g = C::PREFIX;
    let body = match op {
        CurveOp::Add => format!("c = {g}_add(a, b);"),
        CurveOp::MixedAdd => format!(
            "if ({f}_is_zero(b.x) && {f}_is_zero(b.y)) {{ c = a; }} else {{ c = {g}_madd(a, b.x, b.y); }}"
        ),
        CurveOp::Double => format!("c = {g}_dbl(a);"),
        CurveOp::Neg => format!("c = {g}_neg(a);"),
    };
    format!(
        "{prelude}
@group(0) @binding(0) var<storage, read> a_in: array<u32>;
@group(0) @binding(1) var<storage, read> b_in: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> c_out: array<u32>;
{io}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = thread_index(gid, nwg);
    if (i >= params[0]) {{ return; }}
    let a = {g}_load_pt_a_in(i);
    let b = {g}_load_pt_b_in(i);
    var c: {g}_pt;
    {body}
    {g}_store_pt_c_out(i, c);
}}
",
        prelude = prelude::<C>(path),
        io = io_wgsl::<C>(&[], &["a_in", "b_in"], &["c_out"]),
    )
}

/// WGSL of `scale_each`: affine points (`2·L` words each, zeros for the
/// identity), scalars, params `[n]`, output projective.
fn scale_kernel<C: GpuCurve>(path: MulPath) -> String {
    let f = C::base_spec().prefix;
    let g = C::PREFIX;
    let sw = C::scalar_words();
    format!(
        "{prelude}
@group(0) @binding(0) var<storage, read> pts: array<u32>;
@group(0) @binding(1) var<storage, read> scalars: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> c_out: array<u32>;
{io}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = thread_index(gid, nwg);
    if (i >= params[0]) {{ return; }}
    let x = {g}_load_x_pts(i);
    let y = {g}_load_y_pts(i);
    var k: {g}_scalar;
    for (var w = 0u; w < {sw}u; w = w + 1u) {{ k[w] = scalars[i * {sw}u + w]; }}
    var c = {g}_identity();
    if (!({f}_is_zero(x) && {f}_is_zero(y))) {{ c = {g}_scale_affine(x, y, k); }}
    {g}_store_pt_c_out(i, c);
}}
",
        prelude = prelude::<C>(path),
        io = io_wgsl::<C>(&["pts"], &[], &["c_out"]),
    )
}

/// The multiply path of `ctx`'s adapter.
pub(crate) fn mul_path(ctx: &GpuContext) -> MulPath {
    if ctx.int64() {
        MulPath::Int64
    } else {
        MulPath::Portable
    }
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
        let path = mul_path(self);
        let key = format!("curve_ops/{}/{op:?}/{}", C::PREFIX, path.tag());
        let pipeline = self.pipeline(&key, || curve_ops_kernel::<C>(op, path))?;
        let l = C::BaseField::LIMBS;
        let chunk = (self.max_binding_words() / (3 * l)).clamp(1, 1 << 20);
        let mut out = Vec::with_capacity(a.len());
        for (ca, cb) in a.chunks(chunk).zip(b.chunks(chunk)) {
            let mut wa = Vec::with_capacity(ca.len() * 3 * l);
            let mut wb = Vec::with_capacity(cb.len() * 3 * l);
            ca.iter().for_each(|p| C::push_projective(p, &mut wa));
            if op == CurveOp::MixedAdd {
                for p in Projective::normalize_batch(cb) {
                    C::push_affine(&p, &mut wb);
                    wb.extend(std::iter::repeat_n(0u32, l));
                }
            } else {
                cb.iter().for_each(|p| C::push_projective(p, &mut wb));
            }
            let n = ca.len() as u32;
            let params = [n];
            let words = self.launch(&pipeline, &[&wa, &wb, &params], ca.len() * 3 * l, n)?;
            points_from_words(&words, "curve_ops", &mut out)?;
        }
        Ok(out)
    }

    /// `kᵢ·Pᵢ` for each pair: n independent scalar multiplications by
    /// full-width scalars (double-and-add, one thread each), e.g. the
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
        let path = mul_path(self);
        let key = format!("curve_scale/{}/{}", C::PREFIX, path.tag());
        let pipeline = self.pipeline(&key, || scale_kernel::<C>(path))?;
        let l = C::BaseField::LIMBS;
        let sw = C::scalar_words();
        // Keep one launch's work moderate: a thread does ~256 doublings.
        let chunk = (self.max_binding_words() / (3 * l)).clamp(1, 1 << 16);
        let mut out = Vec::with_capacity(points.len());
        for (cp, ck) in points.chunks(chunk).zip(scalars.chunks(chunk)) {
            let mut wp = Vec::with_capacity(cp.len() * 2 * l);
            let mut wk = Vec::with_capacity(ck.len() * sw);
            cp.iter().for_each(|p| C::push_affine(p, &mut wp));
            ck.iter().for_each(|k| C::push_scalar(k, &mut wk));
            let n = cp.len() as u32;
            let words = self.launch(&pipeline, &[&wp, &wk, &[n]], cp.len() * 3 * l, n)?;
            points_from_words(&words, "curve_scale", &mut out)?;
        }
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
