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
//! Steps 1 and 2 run on all cores (digits per point, then a counting sort
//! per window). Steps 3–5 keep every intermediate on the device: each
//! launch's output buffer is the next one's input, the last merge pass
//! also scatters the sums into dense buckets (one thread per bucket), and
//! only the range sums of step 5 are read back. Inputs larger than one
//! buffer binding (or a forced [`MsmConfig::chunk`]) take the host path
//! instead: chunks of points whose segment sums are read back, meet again
//! in step 4 on the host's bucket order, and are uploaded again as dense
//! buckets.
//!
//! Points at infinity in the input are skipped, as are zero digits.
//! Everything is integer arithmetic and deterministic: the same inputs
//! give the same words.

use ark_ec::scalar_mul::variable_base::VariableBaseMSM;
use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ec::{AdditiveGroup, AffineRepr};
use ark_ff::{PrimeField, Zero};

use rayon::prelude::*;

use crate::curve::{GpuCurve, Mode};
use crate::field::GpuField;
use crate::{Arg, GpuContext, GpuError};

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
    let at = out.len();
    out.resize(at + windows as usize, 0);
    signed_digits_into(k, c, &mut out[at..])
}

/// [`signed_digits`] into `out`, one digit per element (`out.len()`
/// windows).
fn signed_digits_into(k: &[u64], c: u32, out: &mut [i32]) -> u32 {
    let c = c.clamp(1, MAX_WINDOW);
    let half = 1i64 << (c - 1);
    let full = 1i64 << c;
    let mut carry = 0i64;
    for (w, d) in out.iter_mut().enumerate() {
        let raw = i64::from(bits_at(k, w as u32 * c, c)) + carry;
        if raw > half {
            *d = (raw - full) as i32;
            carry = 1;
        } else {
            *d = raw as i32;
            carry = 0;
        }
    }
    carry as u32
}

/// Steps 1 and 2 for a run of points: the entries (point index, sign in
/// the top bit) sorted by bucket, and where each bucket starts.
struct Sorted {
    /// `point | negative << 31`, bucket by bucket.
    entries: Vec<u32>,
    /// `start[b]..start[b + 1]` are bucket `b`'s entries (`W·M + 1`
    /// offsets; bucket `b = window·M + |d| − 1`).
    start: Vec<u32>,
}

/// Digits of every point (all cores), then a counting sort per window
/// (one window per task; windows' runs are contiguous, so the tasks
/// write disjoint ranges). Points at infinity get no entries.
fn sort_points<C: GpuCurve>(
    pts: &[Affine<C>],
    ks: &[C::ScalarField],
    c: u32,
    w: u32,
) -> Result<Sorted, GpuError> {
    // The sign takes the top bit of an entry.
    if pts.len() >= 1 << 31 {
        return Err(GpuError::TooLarge {
            what: "msm points".into(),
            words: pts.len(),
            max_words: (1 << 31) - 1,
        });
    }
    let wu = w as usize;
    let m = 1usize << (c - 1);
    let mut digits = vec![0i32; pts.len() * wu];
    digits
        .par_chunks_mut(wu.max(1))
        .zip(pts.par_iter().zip(ks.par_iter()))
        .try_for_each(|(d, (p, k))| {
            // Zeros (no entries) for the identity.
            if p.is_zero() || signed_digits_into(k.into_bigint().as_ref(), c, d) == 0 {
                Ok(())
            } else {
                // Impossible for a field element below 2^bits.
                Err(GpuError::BadOutput("msm digits"))
            }
        })?;
    let per_window: Vec<(Vec<u32>, Vec<u32>)> = (0..wu)
        .into_par_iter()
        .map(|j| {
            // count[|d|] then prefix sums: start of bucket |d| − 1.
            let mut start = vec![0u32; m + 1];
            for d in digits.iter().skip(j).step_by(wu) {
                if *d != 0 {
                    start[d.unsigned_abs() as usize] += 1;
                }
            }
            for b in 1..=m {
                start[b] += start[b - 1];
            }
            let mut next = start.clone();
            let mut entries = vec![0u32; start[m] as usize];
            for (i, d) in digits.iter().skip(j).step_by(wu).enumerate() {
                if *d != 0 {
                    let b = d.unsigned_abs() as usize - 1;
                    // i < 2^31, checked above.
                    entries[next[b] as usize] = i as u32 | (u32::from(*d < 0) << 31);
                    next[b] += 1;
                }
            }
            (start, entries)
        })
        .collect();
    drop(digits);
    let total: usize = per_window.iter().map(|(_, e)| e.len()).sum();
    let mut entries = Vec::with_capacity(total);
    let mut start = Vec::with_capacity(wu * m + 1);
    for (s, e) in &per_window {
        let base = to_u32(entries.len(), "msm entries")?;
        start.extend(s[..m].iter().map(|x| base + x));
        entries.extend_from_slice(e);
    }
    start.push(to_u32(total, "msm entries")?);
    Ok(Sorted { entries, start })
}

/// Segments of at most `seg` entries within each bucket: their start
/// offsets (and the end of the last) and their buckets.
fn segments(start: &[u32], seg: usize) -> Result<(Vec<u32>, Vec<u32>), GpuError> {
    let seg = seg.max(1);
    let mut offs = Vec::new();
    let mut seg_bucket = Vec::new();
    for (b, run) in start.windows(2).enumerate() {
        let (s, e) = (run[0] as usize, run[1] as usize);
        let mut at = s;
        while at < e {
            offs.push(to_u32(at, "msm entries")?);
            seg_bucket.push(to_u32(b, "msm buckets")?);
            at = (at + seg).min(e);
        }
    }
    offs.push(*start.last().unwrap_or(&0));
    Ok((offs, seg_bucket))
}

/// Runs of equal buckets in `bucket` (sorted), cut every `seg`: the
/// `(first, end)` of each group, and whether any bucket had more than
/// `seg` sums.
fn groups(bucket: &[u32], seg: usize) -> (Vec<(usize, usize)>, bool) {
    let mut out = Vec::new();
    let mut over = false;
    let mut i = 0;
    while i < bucket.len() {
        let mut e = i + 1;
        while e < bucket.len() && bucket[e] == bucket[i] {
            e += 1;
        }
        over |= e - i > seg;
        let mut at = i;
        while at < e {
            let end = (at + seg).min(e);
            out.push((at, end));
            at = end;
        }
        i = e;
    }
    (out, over)
}

/// The windows' `Σ_k k·B_k` from the `Ranges` output (`S_0, T_0, S_1,
/// T_1, …`, `r` ranges of `range` buckets per window):
/// `Σ k·B_k = Σ_j T_j + range·Σ_j j·S_j`, the second sum by the running-
/// sum trick over the ranges.
fn combine_ranges<C: GpuCurve>(
    pts: &[Projective<C>],
    r: usize,
    range: usize,
    sums: &mut Vec<Projective<C>>,
) {
    for win in pts.chunks_exact(2 * r) {
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
        // One chunk: sorted once, for the resident path or, when its
        // buffers do not fit, the host path.
        let whole = if bases.len() <= chunk {
            Some(sort_points(bases, scalars, c, w)?)
        } else {
            None
        };
        let resident = match &whole {
            Some(sorted) => self.msm_resident::<C>(bases, sorted, &cfg, w)?,
            None => None,
        };
        let window_sums = if let Some(sums) = resident {
            sums
        } else {
            let mut partials = Partials {
                bucket: Vec::new(),
                words: Vec::new(),
            };
            match &whole {
                Some(sorted) => self.msm_segments(bases, sorted, &cfg, &mut partials)?,
                None => {
                    for (pts, ks) in bases.chunks(chunk).zip(scalars.chunks(chunk)) {
                        let sorted = sort_points(pts, ks, c, w)?;
                        self.msm_segments(pts, &sorted, &cfg, &mut partials)?;
                    }
                }
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
            self.msm_windows::<C>(&dense, w as usize, m, cfg.range as usize)?
        };
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

    /// Steps 3–5 with every intermediate on the device: the bases, entries
    /// and segment offsets go up once, each step's output is the next
    /// step's input, and only the windows' range sums (`2·R` points per
    /// window) come back. The last merge pass also lays the buckets out
    /// densely (a thread per bucket of every window, summing at most
    /// `segment` partials; an empty bucket sums nothing and is the
    /// identity), so the host never sees a bucket.
    ///
    /// `sorted` is steps 1–2 of all the points. `Ok(None)` when some step's
    /// buffer would not fit one binding; the caller then runs the host path
    /// on the same `sorted`.
    fn msm_resident<C: GpuCurve>(
        &self,
        bases: &[Affine<C>],
        sorted: &Sorted,
        cfg: &MsmConfig,
        w: u32,
    ) -> Result<Option<Vec<Projective<C>>>, GpuError> {
        let c = cfg.window;
        let m = 1usize << (c - 1);
        let l3 = 3 * C::BaseField::LIMBS;
        let wu = w as usize;
        let range = cfg.range as usize;
        let r = m.div_ceil(range);
        let seg = cfg.segment as usize;
        let (offs, mut bucket) = segments(&sorted.start, seg)?;
        if bucket.is_empty() {
            return Ok(Some(vec![Projective::zero(); wu]));
        }
        let max_words = self.max_binding_words();
        let biggest = [
            bases.len() * 2 * C::BaseField::LIMBS,
            sorted.entries.len(),
            offs.len(),
            bucket.len() * l3,
            wu * m * l3,
            wu * m + 1,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if biggest > max_words {
            return Ok(None);
        }
        let mut words = Vec::with_capacity(bases.len() * 2 * C::BaseField::LIMBS);
        bases.iter().for_each(|p| C::push_affine(p, &mut words));
        let bases_dev = self.upload(&words)?;
        drop(words);
        let entries_dev = self.upload(&sorted.entries)?;
        let mut sums = self.g1_dispatch::<C>(
            Mode::Segments,
            [
                Arg::Device(&bases_dev),
                Arg::Device(&entries_dev),
                Arg::Host(&offs),
            ],
            &[],
            bucket.len(),
        )?;
        drop((bases_dev, entries_dev));
        // Step 4 while a bucket has more than `seg` sums; each pass
        // divides the largest run by `seg` (≥ 2), so at most ⌈log₂ n⌉.
        let seg2 = seg.max(2);
        let mut passes = 0u32;
        loop {
            let (gs, over) = groups(&bucket, seg2);
            if !over {
                break;
            }
            passes += 1;
            assert!(passes <= usize::BITS, "msm merge does not converge");
            let mut go = Vec::with_capacity(gs.len() + 1);
            for g in &gs {
                go.push(to_u32(g.0, "msm groups")?);
            }
            go.push(to_u32(bucket.len(), "msm groups")?);
            sums = self.g1_dispatch::<C>(
                Mode::Groups,
                [Arg::Device(&sums), Arg::Host(&[]), Arg::Host(&go)],
                &[],
                gs.len(),
            )?;
            bucket = gs.iter().map(|g| bucket[g.0]).collect();
        }
        // Dense pass: bucket t sums the partials [I[t], I[t + 1]).
        let mut dense_offs = Vec::with_capacity(wu * m + 1);
        let mut at = 0usize;
        for t in 0..wu * m {
            while at < bucket.len() && (bucket[at] as usize) < t {
                at += 1;
            }
            dense_offs.push(to_u32(at, "msm buckets")?);
        }
        dense_offs.push(to_u32(bucket.len(), "msm buckets")?);
        let dense = self.g1_dispatch::<C>(
            Mode::Groups,
            [Arg::Device(&sums), Arg::Host(&[]), Arg::Host(&dense_offs)],
            &[],
            wu * m,
        )?;
        drop(sums);
        let params = [
            to_u32(m, "msm buckets")?,
            to_u32(range, "msm range")?,
            to_u32(r, "msm ranges")?,
        ];
        let out = self.g1_dispatch::<C>(
            Mode::Ranges,
            [Arg::Device(&dense), Arg::Host(&[]), Arg::Host(&[])],
            &params,
            wu * r,
        )?;
        let words = self.read(&out)?;
        let mut pts = Vec::with_capacity(2 * wu * r);
        crate::curve::points_from_words::<C>(&words, "msm ranges", &mut pts)?;
        let mut window_sums = Vec::with_capacity(wu);
        combine_ranges(&pts, r, range, &mut window_sums);
        assert_eq!(window_sums.len(), wu);
        Ok(Some(window_sums))
    }

    /// Step 3 for one chunk of points (`sorted` is its steps 1–2) on the
    /// host path: segments, and the segment sums read back (appended to
    /// `out`, sorted by bucket).
    fn msm_segments<C: GpuCurve>(
        &self,
        pts: &[Affine<C>],
        sorted: &Sorted,
        cfg: &MsmConfig,
        out: &mut Partials,
    ) -> Result<(), GpuError> {
        let l = C::BaseField::LIMBS;
        let (offs, seg_bucket) = segments(&sorted.start, cfg.segment as usize)?;
        if seg_bucket.is_empty() {
            return Ok(());
        }
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
                [&bases, &sorted.entries, &offs[s0..=s1]],
                &[],
                s1 - s0,
            )?;
            out.words.extend_from_slice(&words);
            s0 = s1;
        }
        out.bucket.extend_from_slice(&seg_bucket);
        Ok(())
    }

    /// Step 4 on the host path: sums partials of the same bucket, at most
    /// `segment` per thread, until each bucket has one.
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
            // Done when every bucket has one sum (the buckets are sorted).
            if cur.bucket.windows(2).all(|p| p[0] != p[1]) {
                return Ok(cur);
            }
            // Groups: runs of one bucket, cut every `seg` sums.
            let (groups, _) = groups(&cur.bucket, seg);
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

    /// Step 5 on the host path: `Σ_k k·B_k` of each window from the dense
    /// buckets (`w` windows of `m`), ranges of `range` buckets on the GPU.
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
            combine_ranges(&pts, r, range, &mut sums);
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

    /// The parallel sort against the definition: every non-zero digit of
    /// every finite point is one entry in its bucket, with its sign;
    /// entries of a bucket in point order; identity points have none.
    #[test]
    fn sort_points_matches_digits() {
        use ark_ec::CurveGroup;
        use ark_ff::UniformRand;
        use rand::SeedableRng;
        type C = ark_bn254::g1::Config;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 300;
        let mut pts: Vec<Affine<C>> = Projective::<C>::normalize_batch(
            &(0..n)
                .map(|_| Projective::rand(&mut rng))
                .collect::<Vec<_>>(),
        );
        pts[3] = Affine::identity();
        let mut ks: Vec<ark_bn254::Fr> = (0..n).map(|_| ark_bn254::Fr::rand(&mut rng)).collect();
        ks[5] = ark_bn254::Fr::from(0u64);
        ks[6] = -ark_bn254::Fr::from(1u64);
        for c in [1u32, 4, 9, 13] {
            let w = windows(254, c);
            let m = 1usize << (c - 1);
            let sorted = sort_points(&pts, &ks, c, w).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(sorted.start.len(), w as usize * m + 1);
            let mut want: Vec<Vec<u32>> = vec![Vec::new(); w as usize * m];
            for (i, (p, k)) in pts.iter().zip(&ks).enumerate() {
                if p.is_zero() {
                    continue;
                }
                let mut d = Vec::new();
                assert_eq!(signed_digits(k.into_bigint().as_ref(), c, w, &mut d), 0);
                for (j, x) in d.iter().enumerate() {
                    if *x != 0 {
                        let b = j * m + x.unsigned_abs() as usize - 1;
                        want[b].push(i as u32 | (u32::from(*x < 0) << 31));
                    }
                }
            }
            for (b, es) in want.iter().enumerate() {
                let (s, e) = (sorted.start[b] as usize, sorted.start[b + 1] as usize);
                assert_eq!(&sorted.entries[s..e], &es[..], "c = {c}, bucket {b}");
            }
            assert_eq!(
                *sorted.start.last().unwrap_or(&0) as usize,
                sorted.entries.len()
            );
        }
    }

    #[test]
    fn segments_and_groups_bound_the_work() {
        // Buckets of 0, 5, 1 and 17 entries; segments of at most 4.
        let start = [0u32, 0, 5, 6, 23];
        let (offs, bucket) = segments(&start, 4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(offs, [0, 4, 5, 6, 10, 14, 18, 22, 23]);
        assert_eq!(bucket, [1, 1, 2, 3, 3, 3, 3, 3]);
        assert!(offs.windows(2).all(|p| p[1] - p[0] <= 4 && p[1] > p[0]));
        // Groups of at most 3 sums of one bucket; bucket 3 has 5 > 3.
        let (gs, over) = groups(&bucket, 3);
        assert_eq!(gs, [(0, 2), (2, 3), (3, 6), (6, 8)]);
        assert!(over);
        let (gs, over) = groups(&bucket, 5);
        assert_eq!(gs, [(0, 2), (2, 3), (3, 8)]);
        assert!(!over);
        assert_eq!(groups(&[], 2), (vec![], false));
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
