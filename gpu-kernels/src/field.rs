//! Montgomery field arithmetic in WGSL, generated from the field's modulus,
//! and the host side of field elements (limbs in, limbs out).
//!
//! An element is `L` little-endian `u32` limbs in Montgomery form
//! (`a·R mod p`, `R = 2^(32·L)`), exactly the words of arkworks' own
//! Montgomery representation, so conversion is a copy. [`field_wgsl`]
//! writes, for a field with prefix `P`: `P_add`, `P_sub`, `P_neg`,
//! `P_mul`, `P_sqr`, `P_eq`, `P_is_zero`, `P_zero`, `P_one`, `P_pow_*`
//! (fixed exponents) and `P_inv`; the code is straight-line (every limb
//! loop unrolled by the generator, constant indices only) so that GPU
//! compilers keep limbs in registers.
//!
//! Multiplication is CIOS Montgomery with the "no-carry" shortcut (Koç et
//! al.; gnark's variant): valid because every modulus here leaves its top
//! limb below `2^31 - 1`. The 32×32→64-bit multiply-accumulate at its core
//! comes in two forms, picked per adapter:
//!
//! - [`MulPath::Int64`]: one `u64` multiply-add (`SHADER_INT64`);
//! - [`MulPath::Portable`]: four 16×16-bit partial products in `u32`, for
//!   adapters without 64-bit integers (WebGPU, GL).
//!
//! The 13-bit layout of Derei and Koh (carry-free Montgomery, `u32` only)
//! is in [`crate::limb13`], for measurement: `gpu-kernels/README.md` ("Limb
//! layouts") has the figures and why the kernels use 32-bit limbs (int64
//! where the adapter has it) and what moving the no-int64 case to 13-bit
//! limbs would take.

use ark_ff::{BigInt, Fp, MontBackend, MontConfig};

/// How the kernels multiply two 32-bit limbs into 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MulPath {
    /// `u64(a) * u64(b) + …` (needs `SHADER_INT64`).
    Int64,
    /// Sixteen-bit halves, `u32` only: runs everywhere.
    Portable,
}

impl MulPath {
    /// A short tag for pipeline cache keys and reports.
    pub fn tag(self) -> &'static str {
        match self {
            MulPath::Int64 => "i64",
            MulPath::Portable => "u32",
        }
    }
}

/// The constants a field's WGSL is generated from.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    /// WGSL identifier prefix (`bn_fq`, `bn_fr`, `bls_fq`).
    pub prefix: &'static str,
    /// The modulus, `u32` limbs little-endian.
    pub modulus: Vec<u32>,
    /// `-p⁻¹ mod 2³²`.
    pub inv: u32,
    /// `R mod p` (one, in Montgomery form).
    pub one: Vec<u32>,
    /// `R² mod p` (converts a canonical value into Montgomery form).
    pub r2: Vec<u32>,
}

impl FieldSpec {
    /// Number of `u32` limbs of an element.
    pub fn limbs(&self) -> usize {
        self.modulus.len()
    }

    /// The modulus minus two: the exponent of inversion by Fermat.
    pub fn p_minus_2(&self) -> Vec<u32> {
        let mut e = self.modulus.clone();
        let mut borrow = 2u64;
        for w in &mut e {
            let (v, b) = (*w as u64).overflowing_sub(borrow);
            *w = v as u32;
            borrow = u64::from(b);
        }
        e
    }
}

/// `u64` limbs as `u32` limbs, little-endian.
pub(crate) fn split_limbs(x: &[u64]) -> Vec<u32> {
    x.iter()
        .flat_map(|w| [*w as u32, (*w >> 32) as u32])
        .collect()
}

/// A prime field the kernels support: its WGSL constants and its
/// elements' words.
pub trait GpuField: ark_ff::PrimeField {
    /// Number of `u32` limbs of an element.
    const LIMBS: usize;
    /// The field's WGSL constants.
    fn spec() -> FieldSpec;
    /// Appends the element's Montgomery limbs.
    fn push_words(&self, out: &mut Vec<u32>);
    /// The element whose Montgomery limbs are `w` (`LIMBS` words); `None`
    /// when they are not below the modulus (a kernel bug, never input).
    fn from_words(w: &[u32]) -> Option<Self>;
}

/// Implements [`GpuField`] for an arkworks Montgomery field.
fn spec_of<C: MontConfig<N>, const N: usize>(prefix: &'static str) -> FieldSpec {
    FieldSpec {
        prefix,
        modulus: split_limbs(&C::MODULUS.0),
        inv: C::INV as u32,
        one: split_limbs(&C::R.0),
        r2: split_limbs(&C::R2.0),
    }
}

fn words_of<C: MontConfig<N>, const N: usize>(x: &Fp<MontBackend<C, N>, N>, out: &mut Vec<u32>) {
    for w in x.0.0 {
        out.push(w as u32);
        out.push((w >> 32) as u32);
    }
}

fn from_words_of<C: MontConfig<N>, const N: usize>(w: &[u32]) -> Option<Fp<MontBackend<C, N>, N>> {
    if w.len() != 2 * N {
        return None;
    }
    let mut limbs = [0u64; N];
    for (i, l) in limbs.iter_mut().enumerate() {
        *l = u64::from(w[2 * i]) | (u64::from(w[2 * i + 1]) << 32);
    }
    let big = BigInt(limbs);
    if big >= C::MODULUS {
        return None;
    }
    Some(Fp::new_unchecked(big))
}

macro_rules! gpu_field {
    ($ty:ty, $cfg:ty, $n:literal, $prefix:literal) => {
        impl GpuField for $ty {
            const LIMBS: usize = 2 * $n;
            fn spec() -> FieldSpec {
                spec_of::<$cfg, $n>($prefix)
            }
            fn push_words(&self, out: &mut Vec<u32>) {
                words_of::<$cfg, $n>(self, out)
            }
            fn from_words(w: &[u32]) -> Option<Self> {
                from_words_of::<$cfg, $n>(w)
            }
        }
    };
}

gpu_field!(ark_bn254::Fq, ark_bn254::FqConfig, 4, "bn_fq");
gpu_field!(ark_bn254::Fr, ark_bn254::FrConfig, 4, "bn_fr");
gpu_field!(ark_bls12_381::Fq, ark_bls12_381::FqConfig, 6, "bls_fq");

/// `array<u32, L>(…)` literal of `w`.
pub(crate) fn wgsl_array(w: &[u32]) -> String {
    let items: Vec<String> = w.iter().map(|x| format!("{x:#010x}u")).collect();
    format!("array<u32, {}>({})", w.len(), items.join(", "))
}

/// The multiply-accumulate primitive: `mac(a, b, t, c)` is
/// `a·b + t + c` as `vec2(lo, hi)`; it never overflows 64 bits.
pub fn mac_wgsl(path: MulPath) -> &'static str {
    match path {
        MulPath::Int64 => {
            r#"
fn mac(a: u32, b: u32, t: u32, c: u32) -> vec2<u32> {
    let p = u64(a) * u64(b) + u64(t) + u64(c);
    return vec2<u32>(u32(p & u64(0xffffffffu)), u32(p >> 32u));
}
"#
        }
        MulPath::Portable => {
            r#"
fn mac(a: u32, b: u32, t: u32, c: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // mid ≤ (2¹⁶−1)² + 2·(2¹⁶−1) < 2³²: no overflow.
    let mid = p01 + (p00 >> 16u) + (p10 & 0xffffu);
    var lo = (p00 & 0xffffu) | (mid << 16u);
    var hi = p11 + (mid >> 16u) + (p10 >> 16u);
    let l1 = lo + t;
    hi = hi + select(0u, 1u, l1 < lo);
    let l2 = l1 + c;
    hi = hi + select(0u, 1u, l2 < l1);
    return vec2<u32>(l2, hi);
}
"#
        }
    }
}

/// WGSL of the field `spec`: its element alias `P_el` and every
/// function of the module doc. Needs [`mac_wgsl`] once in the module.
pub fn field_wgsl(spec: &FieldSpec) -> String {
    let p = spec.prefix;
    let n = spec.limbs();
    let mut s = String::new();
    let push = |s: &mut String, line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    push(&mut s, format!("alias {p}_el = array<u32, {n}>;"));
    push(
        &mut s,
        format!("const {p}_P: {p}_el = {};", wgsl_array(&spec.modulus)),
    );
    push(
        &mut s,
        format!("const {p}_ONE: {p}_el = {};", wgsl_array(&spec.one)),
    );
    push(
        &mut s,
        format!("const {p}_R2: {p}_el = {};", wgsl_array(&spec.r2)),
    );
    push(&mut s, format!("const {p}_INV: u32 = {:#010x}u;", spec.inv));
    push(
        &mut s,
        format!("fn {p}_zero() -> {p}_el {{ return {p}_el(); }}"),
    );
    push(
        &mut s,
        format!("fn {p}_one() -> {p}_el {{ return {p}_ONE; }}"),
    );

    // is_zero / eq
    let ors: Vec<String> = (0..n).map(|i| format!("a[{i}]")).collect();
    push(
        &mut s,
        format!(
            "fn {p}_is_zero(a: {p}_el) -> bool {{ return ({}) == 0u; }}",
            ors.join(" | ")
        ),
    );
    let xors: Vec<String> = (0..n).map(|i| format!("(a[{i}] ^ b[{i}])")).collect();
    push(
        &mut s,
        format!(
            "fn {p}_eq(a: {p}_el, b: {p}_el) -> bool {{ return ({}) == 0u; }}",
            xors.join(" | ")
        ),
    );

    // Conditional subtraction of p: returns a − p when a ≥ p, else a.
    // Input a < 2p (carry `hi` is the bit above the top limb).
    s.push_str(&format!(
        "fn {p}_reduce_once(a: {p}_el, hi: u32) -> {p}_el {{\n    var d: {p}_el;\n    var borrow = 0u;\n"
    ));
    sub_limbs(&mut s, n, "d", "a", &format!("{p}_P"));
    s.push_str("    if (hi == 0u && borrow == 1u) { return a; }\n    return d;\n}\n");

    // add
    s.push_str(&format!(
        "fn {p}_add(a: {p}_el, b: {p}_el) -> {p}_el {{\n    var r: {p}_el;\n    var carry = 0u;\n"
    ));
    add_limbs(&mut s, n, "r", "a", "b");
    s.push_str(&format!("    return {p}_reduce_once(r, carry);\n}}\n"));

    // sub
    s.push_str(&format!(
        "fn {p}_sub(a: {p}_el, b: {p}_el) -> {p}_el {{\n    var r: {p}_el;\n    var borrow = 0u;\n"
    ));
    sub_limbs(&mut s, n, "r", "a", "b");
    s.push_str("    if (borrow == 0u) { return r; }\n    var carry = 0u;\n");
    add_limbs(&mut s, n, "r", "r", &format!("{p}_P"));
    s.push_str("    return r;\n}\n");

    // neg
    push(
        &mut s,
        format!("fn {p}_neg(a: {p}_el) -> {p}_el {{ return {p}_sub({p}_zero(), a); }}"),
    );
    // double
    push(
        &mut s,
        format!("fn {p}_dbl(a: {p}_el) -> {p}_el {{ return {p}_add(a, a); }}"),
    );

    // mul: CIOS, no-carry variant (top limb of p < 2³¹ − 1).
    assert!(
        spec.modulus[n - 1] < 0x7fff_ffff,
        "no-carry Montgomery needs a spare top bit"
    );
    s.push_str(&format!(
        "fn {p}_mul(a: {p}_el, b: {p}_el) -> {p}_el {{\n    var t: {p}_el;\n    var r: vec2<u32>;\n    var A: u32;\n    var C: u32;\n    var m: u32;\n"
    ));
    for i in 0..n {
        s.push_str(&format!(
            "    r = mac(a[0], b[{i}], t[0], 0u); A = r.y; t[0] = r.x;\n"
        ));
        s.push_str(&format!("    m = t[0] * {p}_INV;\n"));
        s.push_str(&format!("    r = mac(m, {p}_P[0], t[0], 0u); C = r.y;\n"));
        for j in 1..n {
            s.push_str(&format!(
                "    r = mac(a[{j}], b[{i}], t[{j}], A); A = r.y; t[{j}] = r.x;\n"
            ));
            s.push_str(&format!(
                "    r = mac(m, {p}_P[{j}], t[{j}], C); C = r.y; t[{}] = r.x;\n",
                j - 1
            ));
        }
        s.push_str(&format!("    t[{}] = C + A;\n", n - 1));
    }
    s.push_str(&format!("    return {p}_reduce_once(t, 0u);\n}}\n"));
    push(
        &mut s,
        format!("fn {p}_sqr(a: {p}_el) -> {p}_el {{ return {p}_mul(a, a); }}"),
    );
    // Canonical <-> Montgomery.
    push(
        &mut s,
        format!("fn {p}_to_mont(a: {p}_el) -> {p}_el {{ return {p}_mul(a, {p}_R2); }}"),
    );
    push(
        &mut s,
        format!(
            "fn {p}_from_mont(a: {p}_el) -> {p}_el {{ var one: {p}_el; one[0] = 1u; return {p}_mul(a, one); }}"
        ),
    );
    s.push_str(&pow_wgsl(spec, "inv", &spec.p_minus_2()));
    s
}

/// Emits `out = a + b` limb by limb, carrying through the WGSL variable
/// `carry` (which must exist, `0u`); `out` may be `a`.
fn add_limbs(s: &mut String, n: usize, out: &str, a: &str, b: &str) {
    for i in 0..n {
        s.push_str(&format!(
            "    {{ let x = {a}[{i}] + {b}[{i}]; let c1 = select(0u, 1u, x < {a}[{i}]); let y = x + carry; {out}[{i}] = y; carry = c1 | select(0u, 1u, y < x); }}\n"
        ));
    }
}

/// Emits `out = a − b` limb by limb, borrowing through the WGSL variable
/// `borrow` (which must exist, `0u`).
fn sub_limbs(s: &mut String, n: usize, out: &str, a: &str, b: &str) {
    for i in 0..n {
        s.push_str(&format!(
            "    {{ let x = {a}[{i}] - {b}[{i}]; let b1 = select(0u, 1u, {a}[{i}] < {b}[{i}]); {out}[{i}] = x - borrow; borrow = b1 | select(0u, 1u, x < borrow); }}\n"
        ));
    }
}

/// `P_pow_<name>(a)`: `a^e` for the fixed exponent `e` (little-endian
/// limbs), square-and-multiply from the top bit. The exponent is public.
pub fn pow_wgsl(spec: &FieldSpec, name: &str, e: &[u32]) -> String {
    let p = spec.prefix;
    let top = e.iter().rposition(|w| *w != 0).unwrap_or(0);
    format!(
        "const {p}_E_{name}: array<u32, {len}> = {arr};
fn {p}_pow_{name}(a: {p}_el) -> {p}_el {{
    var r = {p}_one();
    for (var w = {top}i; w >= 0i; w = w - 1i) {{
        let word = {p}_E_{name}[w];
        for (var bit = 31i; bit >= 0i; bit = bit - 1i) {{
            r = {p}_sqr(r);
            if (((word >> u32(bit)) & 1u) == 1u) {{ r = {p}_mul(r, a); }}
        }}
    }}
    return r;
}}
fn {p}_{name}(a: {p}_el) -> {p}_el {{ return {p}_pow_{name}(a); }}
",
        len = e.len(),
        arr = wgsl_array(e),
    )
}

/// The shared prelude of every kernel: the index computation for 2-D
/// dispatches (see [`crate::GpuContext::launch`]).
pub fn index_wgsl() -> String {
    format!(
        "const WG: u32 = {wg}u;
fn thread_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {{ return gid.x + gid.y * nwg.x * WG; }}
",
        wg = crate::context::WORKGROUP_SIZE
    )
}

/// Element-wise field operations, the test and bench kernel of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FieldOp {
    /// `a + b`
    Add = 0,
    /// `a − b`
    Sub = 1,
    /// `a · b`
    Mul = 2,
    /// `−a`
    Neg = 3,
    /// `a²`
    Sqr = 4,
    /// `a⁻¹` (`0` for `0`)
    Inv = 5,
}

/// WGSL of the element-wise kernel: inputs `a`, `b`, params `[n, op]`,
/// output `c`.
pub fn field_ops_kernel(spec: &FieldSpec, path: MulPath) -> String {
    let p = spec.prefix;
    let n = spec.limbs();
    format!(
        "{mac}
{field}
{index}
@group(0) @binding(0) var<storage, read> a_in: array<u32>;
@group(0) @binding(1) var<storage, read> b_in: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> c_out: array<u32>;

fn load(buf: u32, i: u32) -> {p}_el {{
    var r: {p}_el;
    for (var k = 0u; k < {n}u; k = k + 1u) {{
        if (buf == 0u) {{ r[k] = a_in[i * {n}u + k]; }} else {{ r[k] = b_in[i * {n}u + k]; }}
    }}
    return r;
}}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = thread_index(gid, nwg);
    if (i >= params[0]) {{ return; }}
    let a = load(0u, i);
    let b = load(1u, i);
    var c: {p}_el;
    switch params[1] {{
        case 0u: {{ c = {p}_add(a, b); }}
        case 1u: {{ c = {p}_sub(a, b); }}
        case 2u: {{ c = {p}_mul(a, b); }}
        case 3u: {{ c = {p}_neg(a); }}
        case 4u: {{ c = {p}_sqr(a); }}
        default: {{ c = {p}_inv(a); }}
    }}
    for (var k = 0u; k < {n}u; k = k + 1u) {{ c_out[i * {n}u + k] = c[k]; }}
}}
",
        mac = mac_wgsl(path),
        field = field_wgsl(spec),
        index = index_wgsl(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_round_trip<F: GpuField>() {
        let mut rng = ark_std::test_rng();
        for _ in 0..32 {
            let x = F::rand(&mut rng);
            let mut w = Vec::new();
            x.push_words(&mut w);
            assert_eq!(w.len(), F::LIMBS);
            assert_eq!(F::from_words(&w), Some(x));
        }
        // The modulus itself is not an element.
        assert_eq!(F::from_words(&F::spec().modulus), None);
        assert_eq!(F::from_words(&[0u32; 3]), None);
        let mut one = Vec::new();
        F::one().push_words(&mut one);
        assert_eq!(one, F::spec().one);
        let mut zero = Vec::new();
        F::zero().push_words(&mut zero);
        assert!(zero.iter().all(|w| *w == 0));
        // R² is R in Montgomery form: (R²)·R⁻¹ = R, i.e. from_words gives
        // the element R mod p.
        let r2 = F::from_words(&F::spec().r2).unwrap_or_default();
        let r = F::from_words(&F::spec().one).unwrap_or_default();
        let two32 = F::from(1u64 << 32);
        assert_eq!(r, F::one());
        assert_eq!(r2, two32.pow([F::LIMBS as u64]));
    }

    #[test]
    fn words_round_trip_all_fields() {
        words_round_trip::<ark_bn254::Fq>();
        words_round_trip::<ark_bn254::Fr>();
        words_round_trip::<ark_bls12_381::Fq>();
    }

    #[test]
    fn inv_constant_is_minus_p_inverse() {
        for spec in [
            <ark_bn254::Fq as GpuField>::spec(),
            <ark_bn254::Fr as GpuField>::spec(),
            <ark_bls12_381::Fq as GpuField>::spec(),
        ] {
            assert_eq!(spec.modulus[0].wrapping_mul(spec.inv), u32::MAX);
        }
    }
}
