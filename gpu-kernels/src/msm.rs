//! Multi-scalar multiplication `Σ kᵢ·Pᵢ` over G1 (BN254, BLS12-381) on
//! the GPU: Pippenger's bucket method with signed digits, and its CPU
//! reference (arkworks).
//!
//! 1. **Digits (host).** Each scalar (canonical, `b` bits) is cut into
//!    `W = ⌈(b + 1)/c⌉` windows of `c` bits and recoded into signed digits
//!    `d ∈ [−2^(c−1) + 1, 2^(c−1)]` (a window above `2^(c−1)` becomes
//!    `window − 2^c` and carries one into the next; the extra bit of `W`
//!    leaves room for the last carry). A digit `d ≠ 0` puts `sign(d)·Pᵢ`
//!    into bucket `|d|` of its window: `M = 2^(c−1)` buckets per window,
//!    half of what unsigned digits need.
//! 2. **Sort (host).** A counting sort groups the entries (point index,
//!    sign) by (window, bucket); each bucket's run is cut into segments of
//!    at most `segment` entries, so no GPU thread gets more than `segment`
//!    points however the scalars are chosen (all equal scalars put every
//!    point in one bucket per window).
//! 3. **Segments (GPU).** One thread per segment sums its points with
//!    mixed additions (negating `y` for negative digits).
//! 4. **Buckets (GPU).** While a bucket has more than one segment sum, one
//!    thread per group of at most `segment` sums adds them (projective
//!    additions); random scalars never need this pass.
//! 5. **Windows (GPU, then host).** Each window's buckets are cut into
//!    ranges of `range` buckets; a thread walks its range from the top with
//!    the running-sum trick and returns `S = Σ B_k` and `T = Σ (k − lo)·B_k`.
//!    The host finishes `Σ k·B_k = Σ_j T_j + range·Σ_j j·S_j` (another
//!    running sum, over the ranges) and combines windows by Horner's rule
//!    with `c` doublings each.
//!
//! Points at infinity in the input are skipped, as are zero digits. Inputs
//! larger than one buffer binding are cut into chunks of points whose
//! segment sums meet again in step 4. Everything is integer arithmetic and
//! deterministic: the same inputs give the same words.

use ark_ec::scalar_mul::variable_base::VariableBaseMSM;
use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ec::{AdditiveGroup, AffineRepr};
use ark_ff::{PrimeField, Zero};

use crate::curve::{GpuCurve, Mode};
use crate::field::GpuField;
use crate::{GpuContext, GpuError};

/// The largest window: `2^15` buckets per window.
pub const MAX_WINDOW: u32 = 16;

/// Default bound on the points one GPU thread sums (step 2).
pub const DEFAULT_SEGMENT: u32 = 64;

/// The largest segment [`MsmConfig`] accepts.
pub const MAX_SEGMENT: u32 = 1 << 16;

/// Field multiplications of a mixed addition (RCB algorithm 8).
const MADD_MULS: u64 = 11;
/// Field multiplications of a projective addition (RCB algorithm 7).
const ADD_MULS: u64 = 12;

/// The parameters of one MSM. [`MsmConfig::for_size`] picks them; tests
/// set small values to exercise segment splitting and chunking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsmConfig {
    /// Window width `c` in bits (1 ..= [`MAX_WINDOW`]).
    pub window: u32,
    /// Most points one thread sums; also the most segment sums one thread
    /// adds when a bucket has several (1 ..= [`MAX_SEGMENT`]).
    pub segment: u32,
    /// Buckets per thread in the window reduction (≥ 1).
    pub range: u32,
    /// Most points per chunk (each chunk's bases and entries are one
    /// binding); `0`, or anything larger than the binding limit allows,
    /// means as many as one binding holds.
    pub chunk: usize,
}

impl MsmConfig {
    /// The configuration for `n` points and scalars of `scalar_bits`
    /// bits: the window minimises the field multiplications of steps 3
    /// and 5, `W(c)·(11·n + 24·2^(c−1))` (ties to the smaller window),
    /// segments of [`DEFAULT_SEGMENT`], and ranges of `M/64` buckets (1 to
    /// 64) so a window's reduction spreads over about 64 threads.
    pub fn for_size(n: usize, scalar_bits: u32) -> Self {
        let n = n as u64;
        let mut best = (u64::MAX, 1u32);
        for c in 1..=MAX_WINDOW {
            let w = u64::from(windows(scalar_bits, c));
            let cost = w * (MADD_MULS * n + 2 * ADD_MULS * (1u64 << (c - 1)));
            if cost < best.0 {
                best = (cost, c);
            }
        }
        let window = best.1;
        let buckets = 1u32 << (window - 1);
        MsmConfig {
            window,
            segment: DEFAULT_SEGMENT,
            range: (buckets / 64).clamp(1, 64),
            chunk: 0,
        }
    }

    /// The same configuration with every field in its valid range.
    fn clamped(self) -> Self {
        let window = self.window.clamp(1, MAX_WINDOW);
        MsmConfig {
            window,
            segment: self.segment.clamp(1, MAX_SEGMENT),
            range: self.range.clamp(1, 1 << (window - 1)),
            chunk: self.chunk,
        }
    }
}

/// Windows of `c` bits for `bits`-bit scalars: one bit more than the
/// scalar, for the last carry of the signed recoding.
pub fn windows(bits: u32, c: u32) -> u32 {
    (bits + 1).div_ceil(c.max(1))
}

/// Bits `[start, start + c)` of the little-endian limbs `k` (`c ≤ 32`).
fn bits_at(k: &[u64], start: u32, c: u32) -> u32 {
    let limb = (start / 64) as usize;
    let off = start % 64;
    let mut v = k.get(limb).map_or(0, |x| x >> off);
    if off + c > 64 {
        v |= k.get(limb + 1).map_or(0, |x| x << (64 - off));
    }
    (v & ((1u64 << c) - 1)) as u32
}

/// The signed-digit recoding of step 1: appends `windows` digits of `k`
/// (little-endian limbs), least significant first, with
/// `k = Σ dⱼ·2^(c·j)`. Returns the carry out of the last window, which is
/// zero whenever `k < 2^(c·windows − 1)`.
pub fn signed_digits(k: &[u64], c: u32, windows: u32, out: &mut Vec<i32>) -> u32 {
    let c = c.clamp(1, MAX_WINDOW);
    let half = 1i64 << (c - 1);
    let full = 1i64 << c;
    let mut carry = 0i64;
    for w in 0..windows {
        let raw = i64::from(bits_at(k, w * c, c)) + carry;
        if raw > half {
            out.push((raw - full) as i32);
            carry = 1;
        } else {
            out.push(raw as i32);
            carry = 0;
        }
    }
    carry as u32
}

/// `Σ kᵢ·Pᵢ` on the CPU (arkworks' `msm_unchecked`): the reference of
/// [`GpuContext::msm`]. Lengths must match.
pub fn msm_cpu<C: GpuCurve>(
    bases: &[Affine<C>],
    scalars: &[C::ScalarField],
) -> Result<Projective<C>, GpuError> {
    if bases.len() != scalars.len() {
        return Err(GpuError::LengthMismatch(bases.len(), scalars.len()));
    }
    Ok(Projective::<C>::msm_unchecked(bases, scalars))
}

/// A `u32` count or offset, or `TooLarge`.
fn to_u32(x: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(x).map_err(|_| GpuError::TooLarge {
        what: what.into(),
        words: x,
        max_words: u32::MAX as usize,
    })
}

/// Partial sums on their way to one per bucket: bucket ids (sorted) and
/// the projective words of each sum.
struct Partials {
    bucket: Vec<u32>,
    words: Vec<u32>,
}

impl GpuContext {
    /// `Σ kᵢ·Pᵢ` with the configuration [`MsmConfig::for_size`] picks.
    /// Lengths must match; an empty input gives the identity.
    pub fn msm<C: GpuCurve>(
        &self,
        bases: &[Affine<C>],
        scalars: &[C::ScalarField],
    ) -> Result<Projective<C>, GpuError> {
        let bits = C::ScalarField::MODULUS_BIT_SIZE;
        self.msm_with(bases, scalars, &MsmConfig::for_size(bases.len(), bits))
    }

    /// `Σ kᵢ·Pᵢ` with an explicit configuration (out-of-range fields are
    /// clamped). The module doc describes the steps.
    pub fn msm_with<C: GpuCurve>(
        &self,
        bases: &[Affine<C>],
        scalars: &[C::ScalarField],
        cfg: &MsmConfig,
    ) -> Result<Projective<C>, GpuError> {
        if bases.len() != scalars.len() {
            return Err(GpuError::LengthMismatch(bases.len(), scalars.len()));
        }
        let cfg = cfg.clamped();
        let c = cfg.window;
        let bits = C::ScalarField::MODULUS_BIT_SIZE;
        let w = windows(bits, c);
        let m = 1usize << (c - 1);
        let l = C::BaseField::LIMBS;
        let max_words = self.max_binding_words();
        // A chunk's bases (2·L words each) and entries (W each) must each
        // fit one binding.
        let fit = (max_words / (2 * l).max(w as usize)).clamp(1, 1 << 30);
        let chunk = if cfg.chunk == 0 {
            fit
        } else {
            cfg.chunk.min(fit)
        };
        let mut partials = Partials {
            bucket: Vec::new(),
            words: Vec::new(),
        };
        for (pts, ks) in bases.chunks(chunk).zip(scalars.chunks(chunk)) {
            self.msm_segments(pts, ks, &cfg, w, &mut partials)?;
        }
        if partials.bucket.is_empty() {
            return Ok(Projective::zero());
        }
        let partials = self.msm_merge::<C>(partials, cfg.segment)?;
        // Dense buckets, identity where empty: (0 : 1 : 0).
        let mut identity = Vec::with_capacity(3 * l);
        C::push_projective(&Projective::zero(), &mut identity);
        let mut dense = Vec::with_capacity(w as usize * m * 3 * l);
        for _ in 0..w as usize * m {
            dense.extend_from_slice(&identity);
        }
        for (i, b) in partials.bucket.iter().enumerate() {
            let at = *b as usize * 3 * l;
            dense[at..at + 3 * l].copy_from_slice(&partials.words[i * 3 * l..(i + 1) * 3 * l]);
        }
        let window_sums = self.msm_windows::<C>(&dense, w as usize, m, cfg.range as usize)?;
        // Horner over windows, most significant first.
        let mut acc = Projective::<C>::zero();
        for s in window_sums.iter().rev() {
            for _ in 0..c {
                acc.double_in_place();
            }
            acc += s;
        }
        Ok(acc)
    }

    /// Steps 1–3 for one chunk of points: digits, counting sort, segments,
    /// and the segment sums (appended to `out`, sorted by bucket).
    fn msm_segments<C: GpuCurve>(
        &self,
        pts: &[Affine<C>],
        ks: &[C::ScalarField],
        cfg: &MsmConfig,
        w: u32,
        out: &mut Partials,
    ) -> Result<(), GpuError> {
        let c = cfg.window;
        let m = 1usize << (c - 1);
        let l = C::BaseField::LIMBS;
        let wu = w as usize;
        // Digits of every point (zeros for the identity).
        let mut digits = Vec::with_capacity(pts.len() * wu);
        for (p, k) in pts.iter().zip(ks) {
            if p.is_zero() {
                digits.extend(std::iter::repeat_n(0, wu));
                continue;
            }
            let big = k.into_bigint();
            if signed_digits(big.as_ref(), c, w, &mut digits) != 0 {
                // Impossible for a field element below 2^bits.
                return Err(GpuError::BadOutput("msm digits"));
            }
        }
        // Counting sort by bucket = window·M + |d| − 1.
        let mut start = vec![0u32; wu * m + 1];
        for (j, d) in digits.iter().enumerate() {
            if *d != 0 {
                start[(j % wu) * m + d.unsigned_abs() as usize] += 1;
            }
        }
        for b in 1..start.len() {
            start[b] += start[b - 1];
        }
        let total = start[wu * m] as usize;
        if total == 0 {
            return Ok(());
        }
        // start[b] is now the end of bucket b − 1 = the start of bucket b.
        let mut next = start.clone();
        let mut entries = vec![0u32; total];
        for (j, d) in digits.iter().enumerate() {
            if *d != 0 {
                let b = (j % wu) * m + d.unsigned_abs() as usize - 1;
                let point = to_u32(j / wu, "msm point index")?;
                entries[next[b] as usize] = point | (u32::from(*d < 0) << 31);
                next[b] += 1;
            }
        }
        drop(digits);
        // Segments of at most `segment` entries within each bucket.
        let seg = cfg.segment as usize;
        let mut offs = Vec::new();
        let mut seg_bucket = Vec::new();
        for b in 0..wu * m {
            let (s, e) = (start[b] as usize, start[b + 1] as usize);
            let mut at = s;
            while at < e {
                offs.push(to_u32(at, "msm entries")?);
                seg_bucket.push(to_u32(b, "msm buckets")?);
                at = (at + seg).min(e);
            }
        }
        offs.push(to_u32(total, "msm entries")?);
        let mut bases = Vec::with_capacity(pts.len() * 2 * l);
        pts.iter().for_each(|p| C::push_affine(p, &mut bases));
        // One launch per run of segments whose sums fit one binding.
        let per_launch = (self.max_binding_words() / (3 * l)).max(1);
        let nseg = seg_bucket.len();
        let mut s0 = 0;
        while s0 < nseg {
            let s1 = (s0 + per_launch).min(nseg);
            let words = self.g1_launch::<C>(
                Mode::Segments,
                [&bases, &entries, &offs[s0..=s1]],
                &[],
                s1 - s0,
            )?;
            out.words.extend_from_slice(&words);
            s0 = s1;
        }
        out.bucket.extend_from_slice(&seg_bucket);
        Ok(())
    }

    /// Step 4: sums partials of the same bucket, at most `segment` per
    /// thread, until each bucket has one.
    fn msm_merge<C: GpuCurve>(
        &self,
        mut cur: Partials,
        segment: u32,
    ) -> Result<Partials, GpuError> {
        let l3 = 3 * C::BaseField::LIMBS;
        let seg = (segment as usize).max(2);
        // Chunks of points from several launches arrive bucket-sorted per
        // chunk; a stable sort by bucket brings each bucket's sums together.
        if !cur.bucket.is_sorted() {
            let mut order: Vec<usize> = (0..cur.bucket.len()).collect();
            order.sort_by_key(|i| cur.bucket[*i]);
            let mut words = Vec::with_capacity(cur.words.len());
            for i in &order {
                words.extend_from_slice(&cur.words[i * l3..(i + 1) * l3]);
            }
            cur = Partials {
                bucket: order.iter().map(|i| cur.bucket[*i]).collect(),
                words,
            };
        }
        loop {
            // Groups: runs of one bucket, cut every `seg` sums.
            let mut groups: Vec<(usize, usize)> = Vec::new();
            let mut multi = false;
            let mut i = 0;
            while i < cur.bucket.len() {
                let mut e = i + 1;
                while e < cur.bucket.len() && cur.bucket[e] == cur.bucket[i] {
                    e += 1;
                }
                multi |= e - i > 1;
                let mut at = i;
                while at < e {
                    let end = (at + seg).min(e);
                    groups.push((at, end));
                    at = end;
                }
                i = e;
            }
            if !multi {
                return Ok(cur);
            }
            let mut next = Partials {
                bucket: groups.iter().map(|g| cur.bucket[g.0]).collect(),
                words: Vec::with_capacity(groups.len() * l3),
            };
            // Launches over runs of groups whose points fit one binding.
            let max_points = (self.max_binding_words() / l3).max(seg);
            let mut g0 = 0;
            while g0 < groups.len() {
                let first = groups[g0].0;
                let mut g1 = g0;
                while g1 < groups.len() && groups[g1].1 - first <= max_points {
                    g1 += 1;
                }
                let mut offs = Vec::with_capacity(g1 - g0 + 1);
                for g in &groups[g0..g1] {
                    offs.push(to_u32(g.0 - first, "msm groups")?);
                }
                let last = groups[g1 - 1].1;
                offs.push(to_u32(last - first, "msm groups")?);
                let words = self.g1_launch::<C>(
                    Mode::Groups,
                    [&cur.words[first * l3..last * l3], &[], &offs],
                    &[],
                    g1 - g0,
                )?;
                next.words.extend_from_slice(&words);
                g0 = g1;
            }
            cur = next;
        }
    }

    /// Step 5: `Σ_k k·B_k` of each window from the dense buckets (`w`
    /// windows of `m`), ranges of `range` buckets on the GPU.
    fn msm_windows<C: GpuCurve>(
        &self,
        dense: &[u32],
        w: usize,
        m: usize,
        range: usize,
    ) -> Result<Vec<Projective<C>>, GpuError> {
        let l3 = 3 * C::BaseField::LIMBS;
        let r = m.div_ceil(range);
        // Windows per launch: their buckets and their 2·R outputs must fit.
        let max_words = self.max_binding_words();
        let per_launch = (max_words / (m * l3).max(2 * r * l3)).max(1);
        let params = [
            to_u32(m, "msm buckets")?,
            to_u32(range, "msm range")?,
            to_u32(r, "msm ranges")?,
        ];
        let mut sums = Vec::with_capacity(w);
        let mut w0 = 0;
        while w0 < w {
            let w1 = (w0 + per_launch).min(w);
            let words = self.g1_launch::<C>(
                Mode::Ranges,
                [&dense[w0 * m * l3..w1 * m * l3], &[], &[]],
                &params,
                (w1 - w0) * r,
            )?;
            let mut pts = Vec::with_capacity(2 * (w1 - w0) * r);
            crate::curve::points_from_words::<C>(&words, "msm ranges", &mut pts)?;
            for win in pts.chunks_exact(2 * r) {
                // win = S_0, T_0, S_1, T_1, …; Σ k·B_k = Σ T_j + range·Σ j·S_j.
                let mut t_sum = Projective::<C>::zero();
                let mut running = Projective::<C>::zero();
                let mut weighted = Projective::<C>::zero();
                for j in (0..r).rev() {
                    t_sum += win[2 * j + 1];
                    if j > 0 {
                        running += win[2 * j];
                        weighted += running;
                    }
                }
                sums.push(t_sum + weighted * C::ScalarField::from(range as u64));
            }
            w0 = w1;
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recomposes digits into limbs' value modulo 2^128 for small checks.
    fn recompose(d: &[i32], c: u32) -> i128 {
        d.iter()
            .rev()
            .fold(0i128, |acc, x| (acc << c) + i128::from(*x))
    }

    #[test]
    fn signed_digits_recompose() {
        for c in 1..=MAX_WINDOW {
            for k in [
                0u64,
                1,
                2,
                3,
                (1 << (c - 1)) as u64,
                ((1 << (c - 1)) + 1) as u64,
                u64::MAX,
                0x8000_0000_0000_0000,
                0x1234_5678_9abc_def0,
            ] {
                let w = windows(64, c);
                let mut d = Vec::new();
                assert_eq!(signed_digits(&[k], c, w, &mut d), 0, "c={c} k={k:#x}");
                assert_eq!(d.len(), w as usize);
                let half = 1i32 << (c - 1);
                assert!(d.iter().all(|x| *x > -half && *x <= half), "c={c} {d:?}");
                assert_eq!(recompose(&d, c), i128::from(k), "c={c} k={k:#x}");
            }
        }
    }

    #[test]
    fn digits_across_limbs() {
        // 2^64 + 5 with c = 7: windows straddle the limb boundary.
        let k = [5u64, 1u64];
        let mut d = Vec::new();
        assert_eq!(signed_digits(&k, 7, windows(128, 7), &mut d), 0);
        assert_eq!(recompose(&d, 7), (1i128 << 64) + 5);
        assert_eq!(bits_at(&k, 62, 4), 0b0100);
        assert_eq!(bits_at(&k, 200, 4), 0);
    }

    #[test]
    fn window_choice_grows_with_n() {
        let small = MsmConfig::for_size(1, 254);
        let mid = MsmConfig::for_size(4096, 254);
        let big = MsmConfig::for_size(1 << 18, 254);
        assert!(small.window <= mid.window && mid.window <= big.window);
        assert!(big.window <= MAX_WINDOW);
        assert!(big.range >= 1 && big.range <= 64);
        let cfg = MsmConfig {
            window: 40,
            segment: 0,
            range: 0,
            chunk: 0,
        }
        .clamped();
        assert_eq!(cfg.window, MAX_WINDOW);
        assert_eq!((cfg.segment, cfg.range), (1, 1));
    }
}
