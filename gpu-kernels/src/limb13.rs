//! The 13-bit limb layout (Derei and Koh, ZPrize 2023 WebGPU MSM) beside
//! the crate's 32-bit one, for measuring which multiplies faster on an
//! adapter without 64-bit integers.
//!
//! An element of a field `F` with a `b`-bit modulus is `N = ⌈(b+1)/13⌉`
//! limbs of 13 bits, one per `u32` word, little-endian, in Montgomery form
//! with `R = 2^(13·N)`: 20 limbs for BN254 (Fq, Fr), 30 for BLS12-381 Fq.
//! This is not arkworks' representation (`R = 2^64·⌈b/64⌉`), so
//! [`Layout13::push_limbs`] and [`Layout13::from_limbs`] convert at the
//! buffer boundary (one field multiplication each way on the host).
//!
//! Why 13 bits: the product of two limbs is below 2²⁶, so a `u32` holds 64
//! of them. The multiplication ([`mul13_wgsl`]) is the operand-scanning
//! Montgomery of Mitscha-Baude as Derei and Koh use it: each of the `N`
//! rounds adds `xᵢ·y + qᵢ·p` into the accumulator `S` and shifts it down
//! one limb, propagating only the one carry that the shift needs (out of
//! limb 0). No other limb is ever carried, so a column collects at most
//! `2N` products plus that carry before the final pass normalises `S`
//! back to 13-bit limbs. Carry-free therefore means
//! `2N·((2¹³−1)² + 2¹³) < 2³²`, i.e. `N ≤ 32` ([`MAX_CARRY_FREE_LIMBS`],
//! checked at compile time for 20 and 30 limbs); the generator also tracks
//! the exact maximum of every column for the actual modulus and refuses a
//! layout where one could reach 2³² ([`Layout13::max_column`]). There is
//! no 64-bit integer and no carry compare anywhere, so the same WGSL runs
//! on GL and browsers.
//!
//! The measurement kernel is a chain `x ← x·y` repeated `k` times per
//! thread, generated for this layout ([`GpuContext::mul_chain_13`]) and for
//! the 32-bit layout's `P_mul` on either multiply path
//! ([`GpuContext::mul_chain_32`]), so the layouts are timed on identical
//! work (`int bench gpu`'s `mul_chain_*` rows). [`mul_chain_cpu`] is the
//! reference. `gpu-kernels/README.md` ("Limb layouts") records the figures
//! and the decision.

use ark_ff::Field;

use crate::field::{self, GpuField, MulPath};
use crate::{Arg, GpuContext, GpuError};

/// Bits per limb.
pub const LIMB_BITS: u32 = 13;

/// `2¹³ − 1`: the largest limb, and the mask that keeps one.
pub const LIMB_MASK: u32 = (1 << LIMB_BITS) - 1;

/// Whether `n` limbs can be multiplied without intermediate carries: a
/// column holds at most `2n` limb products (`≤ (2¹³−1)²` each) plus the
/// carry out of limb 0, which stays below `2n·2¹³` (if `T₀ < 2n·2²⁶` then
/// `T₀ >> 13 < 2n·2¹³`), and all of it must stay below `2³²`.
pub const fn carry_free(n: usize) -> bool {
    let m = (LIMB_MASK as u64) * (LIMB_MASK as u64);
    let col = 2 * (n as u64) * (m + (1u64 << LIMB_BITS));
    col < (1u64 << 32)
}

/// The most 13-bit limbs a carry-free multiplication can have (32, i.e.
/// moduli up to 415 bits).
pub const MAX_CARRY_FREE_LIMBS: usize = {
    let mut n = 1;
    while carry_free(n + 1) {
        n += 1;
    }
    n
};

// BN254 (20 limbs) and BLS12-381 (30 limbs) fit; one more than the maximum
// does not.
const _: () = assert!(carry_free(20) && carry_free(30) && MAX_CARRY_FREE_LIMBS == 32);
const _: () = assert!(!carry_free(MAX_CARRY_FREE_LIMBS + 1));

/// Limbs for a `bits`-bit modulus: `2p < R = 2^(13·N)`, so a product
/// before its final subtraction (below `2p`) fits `N` limbs.
pub fn limbs_for_bits(bits: u32) -> usize {
    (bits + 1).div_ceil(LIMB_BITS) as usize
}

/// Cuts little-endian `u64` words into `n` 13-bit limbs; `None` when the
/// value does not fit `13·n` bits.
fn to_13(words: &[u64], n: usize) -> Option<Vec<u32>> {
    let total = 64 * words.len();
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let off = LIMB_BITS as usize * j;
        let (w, sh) = (off / 64, off % 64);
        let lo = words.get(w).map_or(0, |x| x >> sh);
        let hi = if sh > 64 - LIMB_BITS as usize {
            words.get(w + 1).map_or(0, |x| x << (64 - sh))
        } else {
            0
        };
        out.push(((lo | hi) as u32) & LIMB_MASK);
    }
    // Bits above 13·n must be zero.
    let used = LIMB_BITS as usize * n;
    for bit in used..total {
        if words[bit / 64] >> (bit % 64) & 1 == 1 {
            return None;
        }
    }
    Some(out)
}

/// Joins 13-bit limbs into `out`'s `u64` words (zeroed first); `None`
/// when a limb is over 13 bits or the value does not fit `out`.
fn from_13(limbs: &[u32], out: &mut [u64]) -> Option<()> {
    out.iter_mut().for_each(|w| *w = 0);
    for (j, &l) in limbs.iter().enumerate() {
        if l > LIMB_MASK {
            return None;
        }
        if l == 0 {
            continue;
        }
        let off = LIMB_BITS as usize * j;
        let (w, sh) = (off / 64, off % 64);
        let l = u64::from(l);
        *out.get_mut(w)? |= l << sh;
        if sh > 64 - LIMB_BITS as usize {
            let spill = l >> (64 - sh);
            if spill != 0 {
                *out.get_mut(w + 1)? |= spill;
            }
        }
    }
    Some(())
}

/// The 13-bit layout of the field `F`: its modulus in limbs, the
/// Montgomery constants, and the host conversions.
#[derive(Clone, Debug)]
pub struct Layout13<F: GpuField> {
    prefix: String,
    modulus: Vec<u32>,
    mu: u32,
    max_column: u64,
    r: F,
    r_inv: F,
}

impl<F: GpuField> Layout13<F> {
    /// The layout of `F`; [`GpuError::BadInput`] when its modulus needs
    /// more limbs than a carry-free multiplication allows (not the case for
    /// the crate's three fields).
    pub fn new() -> Result<Self, GpuError> {
        let n = limbs_for_bits(F::MODULUS_BIT_SIZE);
        let modulus = to_13(F::MODULUS.as_ref(), n)
            .ok_or_else(|| GpuError::BadInput("modulus does not fit its limbs".into()))?;
        let max_column = column_bound(&modulus)?;
        // −p⁻¹ mod 2³² reduced mod 2¹³ is −p⁻¹ mod 2¹³.
        let mu = F::spec().inv & LIMB_MASK;
        let r = F::from(2u64).pow([u64::from(LIMB_BITS) * n as u64]);
        let r_inv = r
            .inverse()
            .ok_or_else(|| GpuError::BadInput("R is zero mod p".into()))?;
        Ok(Layout13 {
            prefix: format!("{}13", F::spec().prefix),
            modulus,
            mu,
            max_column,
            r,
            r_inv,
        })
    }

    /// Limbs per element (`N`).
    pub fn limbs(&self) -> usize {
        self.modulus.len()
    }

    /// The modulus in 13-bit limbs.
    pub fn modulus(&self) -> &[u32] {
        &self.modulus
    }

    /// `−p⁻¹ mod 2¹³`.
    pub fn mu(&self) -> u32 {
        self.mu
    }

    /// The largest value any `u32` of the multiplication can hold, for
    /// this modulus and inputs below `p` (always below `2³²`; the headroom
    /// is `2³² − max_column`).
    pub fn max_column(&self) -> u64 {
        self.max_column
    }

    /// `R = 2^(13·N) mod p` as a field element.
    pub fn r(&self) -> F {
        self.r
    }

    /// WGSL identifier prefix (`bn_fq13`, `bn_fr13`, `bls_fq13`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Appends `x`'s limbs (`x·R mod p`, 13 bits per word). A value below
    /// `p` always fits `N` limbs; the error is there so that a broken
    /// layout cannot upload garbage silently.
    pub fn push_limbs(&self, x: &F, out: &mut Vec<u32>) -> Result<(), GpuError> {
        let m = (*x * self.r).into_bigint();
        let l = to_13(m.as_ref(), self.limbs())
            .ok_or_else(|| GpuError::BadInput("element does not fit its limbs".into()))?;
        out.extend(l);
        Ok(())
    }

    /// The element whose limbs are `w`; `None` unless `w` is `N` limbs of
    /// at most 13 bits whose value is below `p`.
    pub fn from_limbs(&self, w: &[u32]) -> Option<F> {
        if w.len() != self.limbs() {
            return None;
        }
        let mut big = F::BigInt::default();
        from_13(w, big.as_mut())?;
        // from_bigint refuses values ≥ p.
        Some(F::from_bigint(big)? * self.r_inv)
    }
}

/// The largest value the multiplication of [`mul13_wgsl`] can put in a
/// `u32` for the modulus `p` (13-bit limbs) and inputs below `p`,
/// following the generated code step by step; [`GpuError::BadInput`] when
/// it could reach `2³²`.
pub fn column_bound(p: &[u32]) -> Result<u64, GpuError> {
    let n = p.len();
    if n < 2 {
        return Err(GpuError::BadInput("a 13-bit layout needs two limbs".into()));
    }
    let lim = 1u64 << 32;
    let m = u64::from(LIMB_MASK);
    // An input below p has limbs ≤ 2¹³ − 1 and a top limb ≤ p's.
    let top = u64::from(p[n - 1]);
    let xb = |i: usize| if i == n - 1 { top } else { m };
    let pb = |j: usize| u64::from(p[j]);
    let mut worst = 0u64;
    let mut check = |v: u64| -> Result<u64, GpuError> {
        worst = worst.max(v);
        if v >= lim {
            Err(GpuError::BadInput(format!(
                "13-bit column bound {v} ≥ 2³² with {n} limbs"
            )))
        } else {
            Ok(v)
        }
    };
    // s[0..n-1]: s[n−1] is always 0.
    let mut s = vec![0u64; n - 1];
    for i in 0..n {
        let t = check(s[0] + xb(i) * xb(0))?;
        let c = check(t + m * pb(0))? >> LIMB_BITS;
        let mut next = vec![0u64; n - 1];
        for j in 1..n {
            let old = if j < n - 1 { s[j] } else { 0 };
            let add = if j == 1 { c } else { 0 };
            next[j - 1] = check(old + xb(i) * xb(j) + m * pb(j) + add)?;
        }
        s = next;
    }
    let mut c = 0u64;
    for v in &s {
        c = check(v + c)? >> LIMB_BITS;
    }
    Ok(worst)
}

/// WGSL of the layout: `P13_el` (`array<u32, N>`), `P13_P`,
/// `P13_reduce` (subtracts `p` from a normalised value below `2p` when it
/// is at least `p`) and `P13_mul` (Montgomery, `a·b·R⁻¹ mod p`, inputs and
/// output below `p`), where `P13` is [`Layout13::prefix`]. Straight-line:
/// the generator unrolls every limb loop and keeps the accumulator in
/// scalar variables.
pub fn mul13_wgsl<F: GpuField>(layout: &Layout13<F>) -> String {
    let p = layout.prefix();
    let n = layout.limbs();
    let pl = layout.modulus();
    let mut s = String::new();
    s.push_str(&format!("alias {p}_el = array<u32, {n}>;\n"));
    s.push_str(&format!(
        "const {p}_P: {p}_el = {};\n",
        field::wgsl_array(pl)
    ));
    s.push_str(&format!(
        "const {p}_MASK: u32 = {LIMB_MASK}u;\nconst {p}_MU: u32 = {}u;\n",
        layout.mu()
    ));

    // Conditional subtraction: limb-wise with a borrow bit, 13-bit limbs
    // so `a + 2¹³ − p − borrow` never wraps.
    s.push_str(&format!(
        "fn {p}_reduce(a: {p}_el) -> {p}_el {{\n    var d: {p}_el;\n    var borrow = 0u;\n"
    ));
    for (j, pj) in pl.iter().enumerate() {
        s.push_str(&format!(
            "    {{ let v = a[{j}] + {}u - borrow; d[{j}] = v & {p}_MASK; borrow = 1u - (v >> {LIMB_BITS}u); }}\n",
            (1u32 << LIMB_BITS) - pj
        ));
    }
    s.push_str("    if (borrow == 1u) { return a; }\n    return d;\n}\n");

    // Multiplication: N rounds of S ← (S + aᵢ·b + qᵢ·p) / 2¹³, carrying
    // only out of limb 0 (see the module doc and `column_bound`).
    s.push_str(&format!("fn {p}_mul(a: {p}_el, b: {p}_el) -> {p}_el {{\n"));
    for j in 0..n - 1 {
        s.push_str(&format!("    var s{j} = 0u;\n"));
    }
    s.push_str("    var t: u32;\n    var q: u32;\n    var c: u32;\n    var x: u32;\n");
    for i in 0..n {
        let first = i == 0;
        s.push_str(&format!("    x = a[{i}];\n"));
        if first {
            s.push_str("    t = x * b[0];\n");
        } else {
            s.push_str("    t = s0 + x * b[0];\n");
        }
        // (t·μ mod 2³²) mod 2¹³ = (t mod 2¹³)·μ mod 2¹³.
        s.push_str(&format!("    q = (t * {p}_MU) & {p}_MASK;\n"));
        s.push_str(&format!("    c = (t + q * {}u) >> {LIMB_BITS}u;\n", pl[0]));
        for (j, pj) in pl.iter().enumerate().skip(1) {
            let old = if j < n - 1 && !first {
                format!("s{j} + ")
            } else {
                String::new()
            };
            let carry = if j == 1 { " + c" } else { "" };
            s.push_str(&format!(
                "    s{} = {old}x * b[{j}] + q * {pj}u{carry};\n",
                j - 1
            ));
        }
    }
    s.push_str(&format!("    var r: {p}_el;\n    c = 0u;\n"));
    for j in 0..n - 1 {
        s.push_str(&format!(
            "    t = s{j} + c; r[{j}] = t & {p}_MASK; c = t >> {LIMB_BITS}u;\n"
        ));
    }
    s.push_str(&format!("    r[{}] = c;\n", n - 1));
    s.push_str(&format!("    return {p}_reduce(r);\n}}\n"));
    s
}

/// WGSL of a chain kernel: inputs `x`, `y` (`limbs` words per element),
/// params `[n, k]`, output `x·yᵏ` computed as `k` calls of `{p}_mul`,
/// which `field` must define (with its `{p}_el`).
fn chain_kernel(field: &str, p: &str, limbs: usize) -> String {
    format!(
        "{field}
{index}
@group(0) @binding(0) var<storage, read> x_in: array<u32>;
@group(0) @binding(1) var<storage, read> y_in: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> x_out: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = thread_index(gid, nwg);
    if (i >= params[0]) {{ return; }}
    var x: {p}_el;
    var y: {p}_el;
    for (var j = 0u; j < {limbs}u; j = j + 1u) {{
        x[j] = x_in[i * {limbs}u + j];
        y[j] = y_in[i * {limbs}u + j];
    }}
    let k = params[1];
    for (var r = 0u; r < k; r = r + 1u) {{ x = {p}_mul(x, y); }}
    for (var j = 0u; j < {limbs}u; j = j + 1u) {{ x_out[i * {limbs}u + j] = x[j]; }}
}}
",
        index = field::index_wgsl(),
    )
}

/// The chain kernel of the 13-bit layout (no 64-bit integers).
pub fn mul_chain_13_kernel<F: GpuField>(layout: &Layout13<F>) -> String {
    chain_kernel(&mul13_wgsl(layout), layout.prefix(), layout.limbs())
}

/// The chain kernel of the 32-bit layout on `path`, with `field.rs`'s
/// `P_mul`.
pub fn mul_chain_32_kernel<F: GpuField>(path: MulPath) -> String {
    let spec = F::spec();
    let field = format!("{}\n{}", field::mac_wgsl(path), field::field_wgsl(&spec));
    chain_kernel(&field, spec.prefix, F::LIMBS)
}

/// `xᵢ·yᵢᵏ` for every `i` by `k` multiplications each, on all cores: the
/// CPU reference of the chain kernels (and the work they do).
pub fn mul_chain_cpu<F: Field>(x: &[F], y: &[F], k: u32) -> Result<Vec<F>, GpuError> {
    use rayon::prelude::*;
    if x.len() != y.len() {
        return Err(GpuError::LengthMismatch(x.len(), y.len()));
    }
    Ok(x.par_iter()
        .zip(y)
        .map(|(x, y)| {
            let mut v = *x;
            for _ in 0..k {
                v *= y;
            }
            v
        })
        .collect())
}

impl GpuContext {
    /// `xᵢ·yᵢᵏ` for every `i`, each thread multiplying `k` times in the
    /// 13-bit layout (inputs converted on the host, chunked under the
    /// binding limit). Runs on every adapter (`u32` only).
    pub fn mul_chain_13<F: GpuField>(&self, x: &[F], y: &[F], k: u32) -> Result<Vec<F>, GpuError> {
        let layout = Layout13::<F>::new()?;
        let key = format!("mul_chain/{}", layout.prefix());
        self.mul_chain(
            &key,
            || mul_chain_13_kernel(&layout),
            Some(&layout),
            x,
            y,
            k,
        )
    }

    /// The same chain in the 32-bit layout (`field.rs`'s `P_mul`) on
    /// `path`; [`MulPath::Int64`] on an adapter without `SHADER_INT64` is
    /// [`GpuError::BadInput`].
    pub fn mul_chain_32<F: GpuField>(
        &self,
        path: MulPath,
        x: &[F],
        y: &[F],
        k: u32,
    ) -> Result<Vec<F>, GpuError> {
        if path == MulPath::Int64 && !self.int64() {
            return Err(GpuError::BadInput(
                "the int64 multiply path needs SHADER_INT64".into(),
            ));
        }
        let key = format!("mul_chain/{}/{}", F::spec().prefix, path.tag());
        self.mul_chain(&key, || mul_chain_32_kernel::<F>(path), None, x, y, k)
    }

    /// Runs a chain kernel: elements in the 13-bit `layout`, or in the
    /// 32-bit one when `None`.
    fn mul_chain<F: GpuField>(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
        layout: Option<&Layout13<F>>,
        x: &[F],
        y: &[F],
        k: u32,
    ) -> Result<Vec<F>, GpuError> {
        if x.len() != y.len() {
            return Err(GpuError::LengthMismatch(x.len(), y.len()));
        }
        let pipeline = self.pipeline(key, source)?;
        let l = layout.map_or(F::LIMBS, Layout13::limbs);
        let push = |v: &F, out: &mut Vec<u32>| match layout {
            Some(layout) => layout.push_limbs(v, out),
            None => {
                v.push_words(out);
                Ok(())
            }
        };
        let get = |w: &[u32]| match layout {
            Some(layout) => layout.from_limbs(w),
            None => F::from_words(w),
        };
        let chunk = self.items_per_launch(l, 1 << 22);
        let mut out = Vec::with_capacity(x.len());
        self.pipelined(
            x.chunks(chunk).zip(y.chunks(chunk)),
            |(cx, cy)| {
                let mut wx = Vec::with_capacity(cx.len() * l);
                let mut wy = Vec::with_capacity(cy.len() * l);
                for (a, b) in cx.iter().zip(cy) {
                    push(a, &mut wx)?;
                    push(b, &mut wy)?;
                }
                let n = cx.len() as u32;
                let params = [n, k];
                let args = [Arg::Host(&wx), Arg::Host(&wy), Arg::Host(&params)];
                self.submit(&pipeline, &args, cx.len() * l, n)
            },
            |words| {
                for w in words.chunks_exact(l) {
                    out.push(get(w).ok_or(GpuError::BadOutput("mul_chain"))?);
                }
                Ok(())
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_of<F: GpuField>(n: usize) {
        let l = Layout13::<F>::new().unwrap();
        assert_eq!(l.limbs(), n);
        assert!(l.max_column() < 1u64 << 32);
        // μ·p ≡ −1 (mod 2¹³).
        assert_eq!(l.modulus()[0].wrapping_mul(l.mu()) & LIMB_MASK, LIMB_MASK);
        // Every limb of p is 13 bits and the limbs give p back.
        let mut big = F::BigInt::default();
        from_13(l.modulus(), big.as_mut()).unwrap();
        assert_eq!(big, F::MODULUS);
    }

    #[test]
    fn layouts_of_the_three_fields() {
        layout_of::<ark_bn254::Fq>(20);
        layout_of::<ark_bn254::Fr>(20);
        layout_of::<ark_bls12_381::Fq>(30);
    }

    #[test]
    fn column_bound_refuses_too_many_limbs() {
        // The all-ones modulus of 33 limbs overflows a column; 32 fit.
        assert!(column_bound(&[LIMB_MASK; 33]).is_err());
        // 32 all-ones limbs fit, with the columns near 2³² (the tracker
        // follows the worst case, not a loose estimate).
        let worst = column_bound(&[LIMB_MASK; 32]).unwrap();
        assert!(worst > 4_290_000_000 && worst < 1 << 32, "{worst}");
        assert!(column_bound(&[LIMB_MASK; 1]).is_err());
        // The real moduli stay within the compile-time formula.
        let bls = Layout13::<ark_bls12_381::Fq>::new().unwrap();
        let formula = |n: u64| 2 * n * (u64::from(LIMB_MASK).pow(2) + (1 << LIMB_BITS));
        assert!(bls.max_column() <= formula(30));
        let bn = Layout13::<ark_bn254::Fq>::new().unwrap();
        assert!(bn.max_column() <= formula(20));
    }

    #[test]
    fn limb_packing_edges() {
        // 2⁶⁴ − 1 spans a word boundary inside limb 4 (bits 52..65).
        let l = to_13(&[u64::MAX, 0], 6).unwrap();
        assert_eq!(
            l,
            vec![LIMB_MASK, LIMB_MASK, LIMB_MASK, LIMB_MASK, 0x0fff, 0]
        );
        let mut back = [0u64; 2];
        from_13(&l, &mut back).unwrap();
        assert_eq!(back, [u64::MAX, 0]);
        // A value wider than 13·n bits, or a limb over 13 bits, is refused.
        assert!(to_13(&[1 << 13], 1).is_none());
        assert!(from_13(&[1 << 13], &mut back).is_none());
        // Limbs beyond the words' width are refused unless zero.
        let mut one = [0u64; 1];
        assert!(from_13(&[0, 0, 0, 0, 0, 1], &mut one).is_none());
        assert!(from_13(&[1, 0, 0, 0, 0, 0], &mut one).is_some());
    }
}
