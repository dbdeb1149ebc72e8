//! Hash to G1 of BLS12-381 per RFC 9380, suite
//! `BLS12381G1_XMD:SHA-256_SSWU_RO_`, for batches of messages (the `H(mᵢ)`
//! of a BLS batch verification); the domain separation tag is a parameter
//! (the node's are `DST_SIG` and `DST_POP` in `int_engine::crypto::bls`).
//!
//! The work is split where the data changes kind:
//!
//! - **CPU:** `expand_message_xmd` with SHA-256 and `hash_to_field`
//!   (RFC 9380 §5.2–5.3): byte hashing, about ten SHA-256 compressions
//!   for a short message, gives `u0, u1 ∈ Fq` ([`hash_to_field`]); on all
//!   cores.
//! - **GPU, one thread per message:** for `u0` and `u1` the simplified SWU
//!   map onto the 11-isogenous curve `E'` (§6.6.2, in the inversion-free
//!   form of Appendix G.2.3 for `p ≡ 3 mod 4`: the square root and the
//!   square test are one exponentiation by `(p − 3)/4`; `sgn0` is the
//!   parity of the canonical value), then the 11-isogeny to `E` (§6.6.3,
//!   its four polynomials evaluated homogeneously in `x' = xn/xd`, so the
//!   image comes out in projective coordinates with no inversion); the two
//!   points are added and the cofactor is cleared by multiplying by
//!   `h_eff = 0xd201000000010001` (§7, §8.8.1), with the complete formulas
//!   of [`crate::curve`].
//!
//! The constants (`A'`, `B'`, `Z = 11` and the isogeny's coefficients) are
//! arkworks' (`ark_bls12_381::g1::Config`'s `WBConfig`), never typed here;
//! the tests check the whole map against RFC 9380's test vectors (Appendix
//! J.9.1) and against blst.
//!
//! Kernel layout: the map (SWU and isogeny) is a straight-line program of
//! about 200 field instructions over 24 registers, built once on the host
//! (`map_program`) and uploaded with its constants; each thread runs it
//! in a small interpreter loop, so the kernel holds one Montgomery
//! multiplication for the whole map, one in the exponentiation and one
//! each in the point addition and doubling. GL and software compilers
//! inline every multiplication site (seconds each on llvmpipe), so this
//! keeps compilation in seconds; on a GPU the interpreter's `switch` is
//! uniform (every thread runs the same instruction). The same program runs
//! on the CPU with arkworks in the unit tests, against arkworks' `WBMap`.
//!
//! Cost per message on the GPU, in base-field multiplications (`M`,
//! squarings counted as `M`): per field element the SWU map is one
//! exponentiation by the 379-bit `(p − 3)/4` (378 squarings, 227
//! multiplications) and 23 M, the isogeny 14 M of powers of `xd`, 104 M of
//! Horner steps and 4 M to combine (750 M); then two complete additions
//! (12 M each, the first onto the identity) and the cofactor clearing by a
//! 64-bit double-and-add (64 doublings of 8 M, 7 additions of 12 M): about
//! 2 × 750 + 24 + 596 = 2 120 M in all.

use ark_bls12_381::{Fq, G1Affine, G1Projective, g1};
use ark_ec::hashing::curve_maps::swu::SWUConfig;
use ark_ec::hashing::curve_maps::wb::WBConfig;
use ark_ec::short_weierstrass::SWCurveConfig;
use ark_ff::{AdditiveGroup, BigInteger, Field, PrimeField};
use std::sync::OnceLock;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::curve::{self, GpuCurve, Loops};
use crate::field::{self, GpuField, MulPath};
use crate::{Arg, GpuContext, GpuError};

/// The isogenous curve `E'` of the SWU map.
type Iso = <g1::Config as WBConfig>::IsogenousCurve;

/// `L` of RFC 9380 §5: bytes of uniform output per field element
/// (`ceil((ceil(log2 p) + k)/8)` with `k = 128`).
const L: usize = 64;

/// The cofactor multiplier `h_eff` of RFC 9380 §8.8.1.
pub const H_EFF: u64 = 0xd201_0000_0001_0001;

/// Most messages in one launch: a thread does about 2 100 field
/// multiplications, so this bounds one dispatch's run time.
const MAX_PER_LAUNCH: usize = 1 << 16;

/// Words of one base-field element.
const FQ_WORDS: usize = <Fq as GpuField>::LIMBS;

/// `expand_message_xmd` of RFC 9380 §5.3.1 with SHA-256: `len` uniform
/// bytes from `msg` under `dst`. A tag longer than 255 bytes is first
/// hashed as §5.3.3 prescribes. An error for an empty tag (§3.1) or a
/// length the construction cannot give (above 255 SHA-256 outputs, 8160
/// bytes).
pub fn expand_message_xmd(msg: &[u8], dst: &[u8], len: usize) -> Result<Vec<u8>, GpuError> {
    check_dst(dst)?;
    let oversize;
    let dst = if dst.len() > 255 {
        oversize = Sha256::new()
            .chain_update(b"H2C-OVERSIZE-DST-")
            .chain_update(dst)
            .finalize();
        &oversize[..]
    } else {
        dst
    };
    let ell = len.div_ceil(32);
    let (Ok(ell_byte), Ok(len_bytes)) = (u8::try_from(ell), u16::try_from(len)) else {
        return Err(GpuError::BadInput(format!(
            "expand_message_xmd cannot give {len} bytes"
        )));
    };
    // dst.len() ≤ 255 here.
    let dst_len = [dst.len() as u8];
    let b0 = Sha256::new()
        .chain_update([0u8; 64])
        .chain_update(msg)
        .chain_update(len_bytes.to_be_bytes())
        .chain_update([0u8])
        .chain_update(dst)
        .chain_update(dst_len)
        .finalize();
    let mut out = Vec::with_capacity(ell * 32);
    let mut prev = Sha256::new()
        .chain_update(b0)
        .chain_update([1u8])
        .chain_update(dst)
        .chain_update(dst_len)
        .finalize();
    out.extend_from_slice(&prev);
    for i in 2..=ell_byte {
        let mut x = [0u8; 32];
        for (k, v) in x.iter_mut().enumerate() {
            *v = b0[k] ^ prev[k];
        }
        prev = Sha256::new()
            .chain_update(x)
            .chain_update([i])
            .chain_update(dst)
            .chain_update(dst_len)
            .finalize();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    Ok(out)
}

/// RFC 9380 §3.1: a tag must not be empty.
fn check_dst(dst: &[u8]) -> Result<(), GpuError> {
    if dst.is_empty() {
        return Err(GpuError::BadInput(
            "a hash-to-curve tag (DST) must not be empty".into(),
        ));
    }
    Ok(())
}

/// `hash_to_field(msg, 2)` of RFC 9380 §5.2 for BLS12-381's base field:
/// the two elements `u0, u1` that the GPU maps to the curve.
pub fn hash_to_field(msg: &[u8], dst: &[u8]) -> Result<[Fq; 2], GpuError> {
    let bytes = expand_message_xmd(msg, dst, 2 * L)?;
    Ok([
        Fq::from_be_bytes_mod_order(&bytes[..L]),
        Fq::from_be_bytes_mod_order(&bytes[L..]),
    ])
}

/// CPU reference: blst's `hash_to_g1` of each message under `dst` (the
/// implementation the node's BLS verification uses), as arkworks points.
/// An error for an empty tag, as [`GpuContext::hash_to_g1`] gives.
pub fn hash_to_g1_cpu(msgs: &[&[u8]], dst: &[u8]) -> Result<Vec<G1Affine>, GpuError> {
    check_dst(dst)?;
    msgs.par_iter()
        .map(|m| {
            let mut h = blst::blst_p1::default();
            let mut a = blst::blst_p1_affine::default();
            let mut bytes = [0u8; 96];
            // SAFETY: valid pointers and lengths of live slices and
            // objects; blst writes only into `h`, `a` and `bytes` (96 bytes,
            // the size of an uncompressed G1 point).
            unsafe {
                blst::blst_hash_to_g1(
                    &mut h,
                    m.as_ptr(),
                    m.len(),
                    dst.as_ptr(),
                    dst.len(),
                    std::ptr::null(),
                    0,
                );
                blst::blst_p1_to_affine(&mut a, &h);
                blst::blst_p1_affine_serialize(bytes.as_mut_ptr(), &a);
            }
            affine_from_uncompressed(&bytes)
        })
        .collect()
}

/// A point from its uncompressed ZCash encoding (big-endian `x ‖ y`, flag
/// bits in the top three bits of the first byte).
fn affine_from_uncompressed(bytes: &[u8; 96]) -> Result<G1Affine, GpuError> {
    if bytes[0] & 0x40 != 0 {
        return Ok(G1Affine::identity());
    }
    let mut x = [0u8; 48];
    x.copy_from_slice(&bytes[..48]);
    x[0] &= 0x1f;
    let p = G1Affine::new_unchecked(
        Fq::from_be_bytes_mod_order(&x),
        Fq::from_be_bytes_mod_order(&bytes[48..]),
    );
    if p.is_on_curve() {
        Ok(p)
    } else {
        Err(GpuError::BadOutput("blst hash_to_g1"))
    }
}

/// `(p − 3)/4`, the exponent of the SWU map's square root.
fn sqrt_exponent() -> Vec<u32> {
    let mut e = Fq::MODULUS;
    e.sub_with_borrow(&3u64.into());
    e.div2();
    e.div2();
    field::split_limbs(e.as_ref())
}

/// `√(−Z³)`, the constant `c2` of RFC 9380 Appendix G.2.3 (either root:
/// the sign of `y` is fixed by `sgn0` afterwards). The root exists because
/// `Z` and `−1` are non-squares; a unit test checks it.
fn c2() -> Fq {
    let z = Iso::ZETA;
    (-(z * z * z)).sqrt().unwrap_or_default()
}

/// One instruction of the map program (see [`map_program`]). Registers
/// are `0..REGS`; an operand `≥ CONST_BASE` names constant
/// `operand − CONST_BASE` (see [`map_constants`]); flags are `0..4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ins {
    /// `d = a · b`
    Mul(u8, u8, u8),
    /// `d = a + b`
    Add(u8, u8, u8),
    /// `d = a − b`
    Sub(u8, u8, u8),
    /// `d = a^((p − 3)/4)`
    Pow(u8, u8),
    /// `flag f = (a == b)`
    Eq(u8, u8, u8),
    /// `flag f = (a == 0)`
    IsZero(u8, u8),
    /// `flag f = (a and b differ in their lowest Montgomery-word bit)`; on
    /// values multiplied by [`C_RAW1`] that is `sgn0(a) ≠ sgn0(b)`.
    ParityNe(u8, u8, u8),
    /// `d = flag f ? a : b`
    Sel(u8, u8, u8, u8),
}

impl Ins {
    /// The instruction word: opcode in bits 0–3, `d` 4–11, `a` 12–19,
    /// `b` 20–27, flag 28–31.
    fn encode(self) -> u32 {
        let w = |op: u32, d: u8, a: u8, b: u8, f: u8| {
            op | u32::from(d) << 4 | u32::from(a) << 12 | u32::from(b) << 20 | u32::from(f) << 28
        };
        match self {
            Ins::Mul(d, a, b) => w(0, d, a, b, 0),
            Ins::Add(d, a, b) => w(1, d, a, b, 0),
            Ins::Sub(d, a, b) => w(2, d, a, b, 0),
            Ins::Pow(d, a) => w(3, d, a, a, 0),
            Ins::Eq(f, a, b) => w(4, 0, a, b, f),
            Ins::IsZero(f, a) => w(5, 0, a, a, f),
            Ins::ParityNe(f, a, b) => w(6, 0, a, b, f),
            Ins::Sel(d, a, b, f) => w(7, d, a, b, f),
        }
    }
}

/// Registers of the map program.
const REGS: usize = 24;
/// First operand number that names a constant.
const CONST_BASE: u8 = 64;
/// The program's input `u`.
const R_U: u8 = 0;
/// Output registers: the point on `E` as `(X : Y : Z)`.
const R_X: u8 = 21;
const R_Y: u8 = 22;
const R_Z: u8 = 23;

/// Constant operands (index into [`map_constants`], plus [`CONST_BASE`]).
const C_ZERO: u8 = CONST_BASE;
const C_ONE: u8 = CONST_BASE + 1;
/// The element whose Montgomery words are `1, 0, …`: multiplying by it
/// leaves an element's canonical value in its words (for `sgn0`).
const C_RAW1: u8 = CONST_BASE + 2;
const C_A: u8 = CONST_BASE + 3;
const C_B: u8 = CONST_BASE + 4;
const C_Z: u8 = CONST_BASE + 5;
const C_NEG_A: u8 = CONST_BASE + 6;
const C_ZA: u8 = CONST_BASE + 7;
const C_C2: u8 = CONST_BASE + 8;
/// The isogeny's coefficients start here, in [`isogeny_polys`] order.
const C_ISO: u8 = CONST_BASE + 9;

/// The isogeny's four polynomials (x numerator, x denominator, y
/// numerator, y denominator; coefficients from degree 0 up), arkworks'
/// `ISOGENY_MAP` for BLS12-381 G1 (RFC 9380 Appendix E.2).
fn isogeny_polys() -> [&'static [Fq]; 4] {
    let map = <g1::Config as WBConfig>::ISOGENY_MAP;
    [
        map.x_map_numerator,
        map.x_map_denominator,
        map.y_map_numerator,
        map.y_map_denominator,
    ]
}

/// The constants the program reads, in operand order.
fn map_constants() -> Vec<Fq> {
    let a = Iso::COEFF_A;
    let z = Iso::ZETA;
    let mut c = vec![
        Fq::ZERO,
        Fq::ONE,
        Fq::new_unchecked(ark_ff::BigInt::one()),
        a,
        Iso::COEFF_B,
        z,
        -a,
        z * a,
        c2(),
    ];
    for poly in isogeny_polys() {
        c.extend_from_slice(poly);
    }
    c
}

/// The map to `E` as a straight-line program over field registers:
/// RFC 9380's `map_to_curve_simple_swu_3mod4` (Appendix G.2.3) from `u`
/// in register [`R_U`], then the 11-isogeny evaluated homogeneously, with
/// the point `(X : Y : Z)` left in [`R_X`], [`R_Y`], [`R_Z`].
///
/// The isogeny's polynomials are all evaluated as degree-15 forms in
/// `(xn, xd)`: `P(xn, xd) = Σ cᵢ·xnⁱ·xd^(15−i)` is `xd^15·p(xn/xd)` for
/// every `p` of degree ≤ 15, so `x = XN/XD` and `y = y'·YN/YD` with the
/// same `xd` powers cancelling, and `(X : Y : Z) = (XN·YD : y'·YN·XD :
/// XD·YD)`. Horner in `xn` with a running power of `xd` shared by the four
/// forms.
///
/// The GPU runs this program with one field multiplication in its loop
/// (GL and software compilers inline every multiplication site at seconds
/// each); [`run_program_cpu`] runs it with arkworks for the unit tests.
fn map_program() -> Vec<Ins> {
    use Ins::*;
    const TV1: u8 = 1;
    const TV3: u8 = 2;
    const XD: u8 = 3;
    const X1N: u8 = 4;
    const TV2: u8 = 5;
    const GXD: u8 = 6;
    const GX1: u8 = 7;
    const TV4: u8 = 8;
    const Y1: u8 = 9;
    const X2N: u8 = 10;
    const Y2: u8 = 11;
    const T: u8 = 12;
    const T2: u8 = 13;
    const XN: u8 = 14;
    const Y: u8 = 15;
    const PW: u8 = 16;
    const ACC: u8 = 17; // four accumulators, 17..=20
    let mut p = vec![
        // Simplified SWU on E', RFC 9380 Appendix G.2.3 steps 1–33.
        Mul(TV1, R_U, R_U),
        Mul(TV3, C_Z, TV1),
        Mul(T, TV3, TV3),
        Add(XD, T, TV3),
        Add(X1N, XD, C_ONE),
        Mul(X1N, X1N, C_B),
        Mul(XD, C_NEG_A, XD),
        IsZero(0, XD),
        Sel(XD, C_ZA, XD, 0),
        Mul(TV2, XD, XD),
        Mul(GXD, TV2, XD),
        Mul(TV2, C_A, TV2),
        Mul(GX1, X1N, X1N),
        Add(GX1, GX1, TV2),
        Mul(GX1, GX1, X1N),
        Mul(TV2, C_B, GXD),
        Add(GX1, GX1, TV2),
        Mul(TV4, GXD, GXD),
        Mul(TV2, GX1, GXD),
        Mul(TV4, TV4, TV2),
        Pow(Y1, TV4),
        Mul(Y1, Y1, TV2),
        Mul(X2N, TV3, X1N),
        Mul(Y2, Y1, C_C2),
        Mul(Y2, Y2, TV1),
        Mul(Y2, Y2, R_U),
        Mul(T, Y1, Y1),
        Mul(T, T, GXD),
        Eq(1, T, GX1),
        Sel(XN, X1N, X2N, 1),
        Sel(Y, Y1, Y2, 1),
        // sgn0(u) ≠ sgn0(y): negate y.
        Mul(T, R_U, C_RAW1),
        Mul(T2, Y, C_RAW1),
        ParityNe(2, T, T2),
        Sub(T, C_ZERO, Y),
        Sel(Y, T, Y, 2),
    ];
    // The isogeny: the four degree-15 forms by Horner in xn.
    let polys = isogeny_polys();
    let mut base = [0u8; 4];
    let mut at = C_ISO;
    for (k, poly) in polys.iter().enumerate() {
        base[k] = at;
        at += poly.len() as u8;
        if poly.len() == 16 {
            p.push(Add(ACC + k as u8, at - 1, C_ZERO));
        }
    }
    for i in (0..15usize).rev() {
        // PW = xd^(15 − i).
        if i == 14 {
            p.push(Add(PW, XD, C_ZERO));
        } else {
            p.push(Mul(PW, PW, XD));
        }
        for (k, poly) in polys.iter().enumerate() {
            let deg = poly.len() - 1;
            let acc = ACC + k as u8;
            let c = base[k] + i as u8;
            if i > deg {
                continue;
            }
            if i == deg {
                p.push(Mul(acc, c, PW));
            } else {
                p.push(Mul(acc, acc, XN));
                p.push(Mul(T, c, PW));
                p.push(Add(acc, acc, T));
            }
        }
    }
    p.extend([
        Mul(R_Z, ACC + 1, ACC + 3),
        Mul(R_X, ACC, ACC + 3),
        Mul(T, Y, ACC + 2),
        Mul(R_Y, T, ACC + 1),
    ]);
    p
}

/// Runs [`map_program`] on `u` with arkworks arithmetic, as the kernel
/// does: the point `(X : Y : Z)` on `E` (homogeneous; `Z = 0` for the
/// identity). For the unit tests.
#[cfg(test)]
fn run_program_cpu(prog: &[Ins], consts: &[Fq], u: Fq) -> [Fq; 3] {
    use ark_ff::Zero;
    let mut reg = [Fq::ZERO; REGS];
    let mut flag = [false; 4];
    reg[R_U as usize] = u;
    let val = |reg: &[Fq; REGS], k: u8| {
        if k >= CONST_BASE {
            consts[(k - CONST_BASE) as usize]
        } else {
            reg[k as usize]
        }
    };
    let e: Vec<u64> = {
        let w = sqrt_exponent();
        w.chunks(2)
            .map(|c| u64::from(c[0]) | u64::from(c.get(1).copied().unwrap_or(0)) << 32)
            .collect()
    };
    for ins in prog {
        match *ins {
            Ins::Mul(d, a, b) => reg[d as usize] = val(&reg, a) * val(&reg, b),
            Ins::Add(d, a, b) => reg[d as usize] = val(&reg, a) + val(&reg, b),
            Ins::Sub(d, a, b) => reg[d as usize] = val(&reg, a) - val(&reg, b),
            Ins::Pow(d, a) => reg[d as usize] = val(&reg, a).pow(&e),
            Ins::Eq(f, a, b) => flag[f as usize] = val(&reg, a) == val(&reg, b),
            Ins::IsZero(f, a) => flag[f as usize] = val(&reg, a).is_zero(),
            Ins::ParityNe(f, a, b) => {
                flag[f as usize] = (val(&reg, a).0.0[0] ^ val(&reg, b).0.0[0]) & 1 == 1
            }
            Ins::Sel(d, a, b, f) => {
                reg[d as usize] = if flag[f as usize] {
                    val(&reg, a)
                } else {
                    val(&reg, b)
                }
            }
        }
    }
    [reg[R_X as usize], reg[R_Y as usize], reg[R_Z as usize]]
}

/// The kernel's program buffer: the constants (Montgomery words), the
/// exponent `(p − 3)/4` (canonical words) and the instruction words; with
/// the offsets of the exponent and the instructions.
fn program_words() -> &'static (Vec<u32>, usize, usize) {
    static WORDS: OnceLock<(Vec<u32>, usize, usize)> = OnceLock::new();
    WORDS.get_or_init(build_program_words)
}

fn build_program_words() -> (Vec<u32>, usize, usize) {
    let mut w = Vec::new();
    map_constants().iter().for_each(|c| c.push_words(&mut w));
    let exp_at = w.len();
    w.extend(sqrt_exponent());
    let prog_at = w.len();
    w.extend(map_program().into_iter().map(Ins::encode));
    (w, exp_at, prog_at)
}

/// Highest set bit of the exponent `(p − 3)/4`.
fn exponent_top_bit() -> u32 {
    let e = sqrt_exponent();
    let top = e.iter().rposition(|w| *w != 0).unwrap_or(0);
    32 * top as u32 + 31 - e[top].leading_zeros()
}

/// WGSL of the map kernel. Bindings: `u_in` (field elements), `prog`
/// (constants, the exponent, the instructions), `params = [n, mode]`,
/// output (projective points). Mode 0 maps each `u` to `E` (RFC 9380's `map_to_curve`, no cofactor
/// clearing: one point per element); mode 1 maps `u_in[2i]` and
/// `u_in[2i+1]`, adds them and clears the cofactor (`hash_to_curve` from
/// the field elements on: one point per pair).
///
/// Every multiplication site is in a loop: the program interpreter (one
/// `mul`), the exponentiation (one), and the point steps (one `add`, one
/// `dbl`), so GL and software compilers inline four multiplications, not
/// hundreds; on hardware the interpreter's `switch` is uniform across a
/// launch (every thread runs the same instruction).
pub fn hash_to_g1_kernel(path: MulPath, loops: Loops) -> String {
    let (words, exp_at, prog_at) = program_words();
    let len = words.len() - prog_at;
    let top = exponent_top_bit();
    format!(
        "{prelude}
const EXP_AT: u32 = {exp_at}u;
const PROG_AT: u32 = {prog_at}u;
const PROG_LEN: u32 = {len}u;
const EXP_TOP: u32 = {top}u;
const CONST_BASE: u32 = {cb}u;
const R_U: u32 = {ru}u;
const R_X: u32 = {rx}u;
const R_Y: u32 = {ry}u;
const R_Z: u32 = {rz}u;
const H_EFF_LO: u32 = {h_lo:#010x}u;
const H_EFF_HI: u32 = {h_hi:#010x}u;

@group(0) @binding(0) var<storage, read> u_in: array<u32>;
@group(0) @binding(1) var<storage, read> prog: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

var<private> reg: array<bls_fq_el, {regs}>;
var<private> flag: array<u32, 4>;

fn load_u(k: u32) -> bls_fq_el {{
    var r: bls_fq_el;
    for (var l = 0u; l < {w}u; l = l + 1u) {{ r[l] = u_in[k * {w}u + l]; }}
    return r;
}}

fn operand(k: u32) -> bls_fq_el {{
    if (k < CONST_BASE) {{ return reg[k]; }}
    var r: bls_fq_el;
    let at = (k - CONST_BASE) * {w}u;
    for (var l = 0u; l < {w}u; l = l + 1u) {{ r[l] = prog[at + l]; }}
    return r;
}}

// a^((p − 3)/4), square-and-multiply from the top bit, one multiplication
// site: even steps square, odd steps multiply by a when the bit is set.
fn pow_c1(a: bls_fq_el) -> bls_fq_el {{
    var r = a;
    for (var s = 0u; s < 2u * EXP_TOP + bls_g1_guard; s = s + 1u) {{
        var x = r;
        if ((s & 1u) == 1u) {{
            let bit = EXP_TOP - 1u - s / 2u;
            if (((prog[EXP_AT + bit / 32u] >> (bit % 32u)) & 1u) == 0u) {{ continue; }}
            x = a;
        }}
        r = bls_fq_mul(r, x);
    }}
    return r;
}}

// The map program (SWU on E', then the isogeny to E) on u.
fn map_to_e(u: bls_fq_el) -> bls_g1_pt {{
    reg[R_U] = u;
    for (var pc = 0u; pc < PROG_LEN + bls_g1_guard; pc = pc + 1u) {{
        let ins = prog[PROG_AT + pc];
        let d = (ins >> 4u) & 0xffu;
        let f = ins >> 28u;
        let a = operand((ins >> 12u) & 0xffu);
        let b = operand((ins >> 20u) & 0xffu);
        switch ins & 0xfu {{
            case 0u: {{ reg[d] = bls_fq_mul(a, b); }}
            case 1u: {{ reg[d] = bls_fq_add(a, b); }}
            case 2u: {{ reg[d] = bls_fq_sub(a, b); }}
            case 3u: {{ reg[d] = pow_c1(a); }}
            case 4u: {{ flag[f] = u32(bls_fq_eq(a, b)); }}
            case 5u: {{ flag[f] = u32(bls_fq_is_zero(a)); }}
            case 6u: {{ flag[f] = (a[0] ^ b[0]) & 1u; }}
            default: {{ if (flag[f] == 1u) {{ reg[d] = a; }} else {{ reg[d] = b; }} }}
        }}
    }}
    if (bls_fq_is_zero(reg[R_Z])) {{ return bls_g1_identity(); }}
    return bls_g1_pt(reg[R_X], reg[R_Y], reg[R_Z]);
}}

fn store(i: u32, p: bls_g1_pt) {{
    for (var k = 0u; k < {w}u; k = k + 1u) {{
        out[i * {w3}u + k] = p.x[k];
        out[i * {w3}u + {w}u + k] = p.y[k];
        out[i * {w3}u + {w2}u + k] = p.z[k];
    }}
}}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = thread_index(gid, nwg);
    let n = params[0];
    if (i >= n) {{ return; }}
    bls_g1_begin(n);
    let hash = params[1] == 1u;
    let per = select(1u, 2u, hash);
    // Steps: map and add each u into p; then (hash only) h_eff·p by
    // double-and-add over h_eff's 64 bits (even steps double r, odd steps
    // add p when the bit is set).
    let steps = per + select(0u, 128u, hash);
    var p = bls_g1_identity();
    var r = bls_g1_identity();
    for (var s = 0u; s < steps; s = s + 1u) {{
        var x = p;
        var y = p;
        var add = true;
        if (s < per) {{
            y = map_to_e(load_u(i * per + s));
        }} else {{
            let k = s - per;
            let bit = 63u - k / 2u;
            x = r;
            if ((k & 1u) == 0u) {{
                add = false;
            }} else if (((select(H_EFF_LO, H_EFF_HI, bit >= 32u) >> (bit & 31u)) & 1u) == 0u) {{
                continue;
            }}
        }}
        var res: bls_g1_pt;
        if (add) {{ res = bls_g1_add(x, y); }} else {{ res = bls_g1_dbl(x); }}
        if (s < per) {{ p = res; }} else {{ r = res; }}
    }}
    if (hash) {{ store(i, r); }} else {{ store(i, p); }}
}}
",
        prelude = curve::prelude::<g1::Config>(path, loops),
        cb = CONST_BASE,
        ru = R_U,
        rx = R_X,
        ry = R_Y,
        rz = R_Z,
        regs = REGS,
        h_lo = H_EFF as u32,
        h_hi = (H_EFF >> 32) as u32,
        w = FQ_WORDS,
        w2 = 2 * FQ_WORDS,
        w3 = 3 * FQ_WORDS,
    )
}

/// Which points the kernel returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One point of `E` per field element (SWU and isogeny).
    Map = 0,
    /// One point of G1 per pair of field elements.
    Hash = 1,
}

impl GpuContext {
    /// Runs the map kernel over `u` (Montgomery words of field elements).
    fn run_map(&self, u: &[Fq], mode: Mode) -> Result<Vec<G1Projective>, GpuError> {
        let per = if mode == Mode::Hash { 2 } else { 1 };
        if u.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.mul_path();
        let loops = Loops::for_context(self);
        let key = format!("hash_to_g1/{}/{}", path.tag(), loops.tag());
        let pipeline = self.pipeline(&key, || hash_to_g1_kernel(path, loops))?;
        let (prog, _, _) = program_words();
        // The exponent program, uploaded once for all the launches.
        let prog = self.upload(prog)?;
        let point_words = 3 * FQ_WORDS;
        let chunk = self.items_per_launch(point_words.max(per * FQ_WORDS), MAX_PER_LAUNCH);
        let mut out = Vec::with_capacity(u.len() / per);
        self.pipelined(
            u.chunks(chunk * per),
            |c| {
                let mut words = Vec::with_capacity(c.len() * FQ_WORDS);
                c.iter().for_each(|x| x.push_words(&mut words));
                let m = c.len() / per;
                let count = u32::try_from(m).map_err(|e| GpuError::BadInput(e.to_string()))?;
                let params = [count, mode as u32];
                let args = [Arg::Host(&words), Arg::Device(&prog), Arg::Host(&params)];
                self.submit(&pipeline, &args, m * point_words, count)
            },
            |got| {
                for w in got.chunks_exact(point_words) {
                    out.push(
                        g1::Config::projective_from_words(w)
                            .ok_or(GpuError::BadOutput("hash_to_g1"))?,
                    );
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// RFC 9380's `map_to_curve` for BLS12-381 G1 of each element (the
    /// simplified SWU map to `E'` and the 11-isogeny to `E`, no cofactor
    /// clearing), one GPU thread each. The part of [`Self::hash_to_g1`]
    /// that RFC 9380's test vectors pin down as `Q0`, `Q1`.
    pub fn map_to_g1(&self, u: &[Fq]) -> Result<Vec<G1Projective>, GpuError> {
        self.run_map(u, Mode::Map)
    }

    /// Hash to G1 from the field elements on: `h_eff·(map(u0) + map(u1))`
    /// for each pair, one GPU thread each.
    pub fn hash_fields_to_g1(&self, u: &[[Fq; 2]]) -> Result<Vec<G1Projective>, GpuError> {
        let flat: Vec<Fq> = u.iter().flatten().copied().collect();
        self.run_map(&flat, Mode::Hash)
    }

    /// RFC 9380 `hash_to_curve` (`BLS12381G1_XMD:SHA-256_SSWU_RO_`) of
    /// each message under `dst`, in projective form (no inversion: what a
    /// multi-scalar multiplication takes). Hashing to the field on the CPU
    /// (all cores), the rest on the GPU. An error for an empty `dst`.
    pub fn hash_to_g1_projective(
        &self,
        msgs: &[&[u8]],
        dst: &[u8],
    ) -> Result<Vec<G1Projective>, GpuError> {
        check_dst(dst)?;
        let u = msgs
            .par_iter()
            .map(|m| hash_to_field(m, dst))
            .collect::<Result<Vec<_>, _>>()?;
        self.hash_fields_to_g1(&u)
    }

    /// RFC 9380 `hash_to_curve` of each message under `dst` as affine
    /// points (one batch inversion); equal to blst's `hash_to_g1`
    /// ([`hash_to_g1_cpu`]). An error for an empty `dst`.
    pub fn hash_to_g1(&self, msgs: &[&[u8]], dst: &[u8]) -> Result<Vec<G1Affine>, GpuError> {
        let p = self.hash_to_g1_projective(msgs, dst)?;
        Ok(ark_ec::CurveGroup::normalize_batch(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ec::CurveGroup;
    use ark_ec::hashing::curve_maps::wb::WBMap;
    use ark_ec::hashing::map_to_curve_hasher::MapToCurve;
    use ark_ff::UniformRand;

    #[test]
    fn constants_fit_the_construction() {
        // p ≡ 3 (mod 4): the square root is one exponentiation.
        assert_eq!(Fq::MODULUS.0[0] & 3, 3);
        // Z = 11 is a non-square and c2² = −Z³.
        assert!(Iso::ZETA.legendre().is_qnr());
        assert_eq!(Iso::ZETA, Fq::from(11u64));
        assert_eq!(c2().square(), -(Iso::ZETA * Iso::ZETA * Iso::ZETA));
        // RFC 9380 Appendix E.2: degrees 11, 10, 15, 15, monic denominators.
        let polys = isogeny_polys();
        assert_eq!(polys.map(|p| p.len()), [12, 11, 16, 16]);
        assert_eq!(polys[1][10], Fq::ONE);
        assert_eq!(polys[3][15], Fq::ONE);
        // Every constant has an operand number.
        assert_eq!(map_constants().len(), 64);
        assert!(usize::from(C_ISO - CONST_BASE) + 55 <= 256 - usize::from(CONST_BASE));
        // h_eff = 1 − x for BLS12-381's x = −0xd201000000010000.
        assert_eq!(H_EFF, 0xd201_0000_0001_0000 + 1);
        // (p − 3)/4 · 4 + 3 = p.
        let e = sqrt_exponent();
        let mut back = ark_ff::BigInt::<6>([0; 6]);
        for (i, w) in e.iter().enumerate() {
            back.0[i / 2] |= u64::from(*w) << (32 * (i % 2));
        }
        back <<= 2;
        back.add_with_carry(&3u64.into());
        assert_eq!(back, Fq::MODULUS);
        assert_eq!(exponent_top_bit(), 378);
    }

    #[test]
    fn program_is_arkworks_map() {
        let prog = map_program();
        let consts = map_constants();
        let mut rng = ark_std::test_rng();
        let mut us: Vec<Fq> = (0..64).map(|_| Fq::rand(&mut rng)).collect();
        us.extend([Fq::ZERO, Fq::ONE, -Fq::ONE]);
        for u in us {
            let [x, y, z] = run_program_cpu(&prog, &consts, u);
            let want = WBMap::<g1::Config>::map_to_curve(u).unwrap_or_default();
            let zi = z.inverse().unwrap_or_default();
            let got = G1Affine::new_unchecked(x * zi, y * zi);
            assert_eq!(got, want, "u = {u}");
        }
    }

    #[test]
    fn program_words_fit_their_fields() {
        let prog = map_program();
        for ins in &prog {
            let (regs, flags): (Vec<u8>, Vec<u8>) = match *ins {
                Ins::Mul(d, a, b) | Ins::Add(d, a, b) | Ins::Sub(d, a, b) => {
                    (vec![d, a, b], vec![])
                }
                Ins::Pow(d, a) => (vec![d, a], vec![]),
                Ins::Eq(f, a, b) | Ins::ParityNe(f, a, b) => (vec![a, b], vec![f]),
                Ins::IsZero(f, a) => (vec![a], vec![f]),
                Ins::Sel(d, a, b, f) => (vec![d, a, b], vec![f]),
            };
            for r in regs {
                assert!(usize::from(r) < REGS || (CONST_BASE..CONST_BASE + 64).contains(&r));
            }
            assert!(flags.iter().all(|f| *f < 4));
        }
        let (words, exp_at, prog_at) = program_words();
        assert_eq!(*exp_at, 64 * FQ_WORDS);
        assert_eq!(words.len() - prog_at, prog.len());
        // Op counts of the module doc.
        let muls = prog.iter().filter(|i| matches!(i, Ins::Mul(..))).count();
        let ones = sqrt_exponent().iter().map(|w| w.count_ones()).sum::<u32>();
        assert_eq!((muls, ones - 1), (145, 227), "program muls, pow muls");
    }

    #[test]
    fn expand_message_limits() {
        assert!(expand_message_xmd(b"m", b"", 32).is_err());
        assert!(expand_message_xmd(b"m", b"D", 255 * 32 + 1).is_err());
        assert_eq!(
            expand_message_xmd(b"m", b"D", 255 * 32)
                .map(|v| v.len())
                .ok(),
            Some(8160)
        );
        assert_eq!(
            expand_message_xmd(b"m", b"D", 5).map(|v| v.len()).ok(),
            Some(5)
        );
    }

    #[test]
    fn projective_program_output_is_on_curve() {
        let prog = map_program();
        let consts = map_constants();
        let [x, y, z] = run_program_cpu(&prog, &consts, Fq::from(7u64));
        let p = g1::Config::projective_from_words(&{
            let mut w = Vec::new();
            [x, y, z].iter().for_each(|c| c.push_words(&mut w));
            w
        })
        .unwrap_or_default();
        assert!(p.into_affine().is_on_curve());
    }
}
