//! The twig log's key index, in memory: every present key's entry
//! offset in the log, in key order, at 16 bytes per key (plus 16 per
//! bucket of ≈ 64 keys).
//!
//! Keys are hashes, so their first 64 bits spread evenly: a key's bucket
//! is its top `bits` bits, and a bucket is a sorted array of (first 64
//! bits, offset). Two keys that share their first 64 bits (at 10⁸ keys
//! about one chance in 3 700, at 10⁹ one in 37) are both kept, ordered by
//! their full keys, which the index reads back from the log through the
//! caller's `key_at`: it never guesses. A lookup starts at the slot where
//! the key falls in its bucket's range (keys are spread evenly) and
//! gallops from there, one or two cache lines for a bucket of ≈ 64 slots
//! (a binary search missed the cache at each of its ≈ 6 steps); the
//! predecessor of a key (for the next-key chain of exclusion proofs) is
//! the slot before it, or the last slot of the nearest non-empty bucket
//! below.
//!
//! A `BTreeMap<[u8; 32], u64>` would take ≈ 60 bytes per key: 6 GB at 10⁸,
//! past the 4 GiB bound; this takes 1.6 GB there.

use crate::state::proof::Hash32;

/// Average keys per bucket at which the buckets double.
const BUCKET_KEYS_TARGET: u64 = 64;
/// Bucket bits to start with.
const BUCKET_BITS_MIN: u32 = 8;
/// Most bucket bits (2³² buckets would be 64 GiB of bucket headers).
const BUCKET_BITS_MAX: u32 = 31;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// The key's first 64 bits, big-endian: slot order is key order.
    frag: u64,
    /// Where the key's entry is in the log.
    offset: u64,
}

fn frag_of(key: &Hash32) -> u64 {
    u64::from_be_bytes(key[..8].try_into().expect("8 bytes"))
}

/// `slots.partition_point(|s| s.frag < frag)` for a sorted bucket whose
/// slots all share their top `64 - shift` bits with `frag`: from the slot
/// where `frag` would sit were the bucket's keys evenly spread, steps of
/// 1, 2, 4, … towards the answer, then a binary search in the last step.
fn lower_bound(slots: &[Slot], frag: u64, shift: u32) -> usize {
    let n = slots.len();
    if n == 0 {
        return 0;
    }
    debug_assert!((1..64).contains(&shift));
    let below = |s: &Slot| s.frag < frag;
    let rel = frag & ((1u64 << shift) - 1);
    // rel < 2^shift, so the guess is below n.
    let guess = ((u128::from(rel) * n as u128) >> shift) as usize;
    if below(&slots[guess]) {
        // The answer is in (guess, n]; every slot before `lo` is below.
        let (mut lo, mut step) = (guess + 1, 1);
        loop {
            let probe = lo + step - 1;
            if probe >= n {
                return lo + slots[lo..].partition_point(below);
            }
            if !below(&slots[probe]) {
                return lo + slots[lo..probe].partition_point(below);
            }
            lo = probe + 1;
            step *= 2;
        }
    }
    // The answer is in [0, hi]; slots[hi] is not below.
    let (mut hi, mut step) = (guess, 1);
    loop {
        if hi < step {
            return slots[..hi].partition_point(below);
        }
        let probe = hi - step;
        if below(&slots[probe]) {
            return probe + 1 + slots[probe + 1..hi].partition_point(below);
        }
        hi = probe;
        step *= 2;
    }
}

/// Keys in order, each with its entry's offset (see the module doc).
#[derive(Debug)]
pub struct KeyIndex {
    bits: u32,
    buckets: Vec<Box<[Slot]>>,
    len: u64,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// The full key of the entry at a log offset, read back (only for keys
/// that share their first 64 bits with another).
pub type KeyAt<'k, E> = dyn Fn(u64) -> Result<Hash32, E> + 'k;

impl KeyIndex {
    /// An empty index sized for about `keys` keys.
    pub fn with_capacity(keys: u64) -> Self {
        let bits = Self::bits_for(keys);
        Self {
            bits,
            buckets: vec![Box::default(); 1 << bits],
            len: 0,
        }
    }

    fn bits_for(keys: u64) -> u32 {
        let buckets = (keys / BUCKET_KEYS_TARGET).max(1);
        (64 - (buckets - 1).leading_zeros()).clamp(BUCKET_BITS_MIN, BUCKET_BITS_MAX)
    }

    /// Keys held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * size_of::<Box<[Slot]>>() + self.len as usize * size_of::<Slot>()
    }

    fn bucket_of(&self, frag: u64) -> usize {
        (frag >> (64 - self.bits)) as usize
    }

    /// The first slot of `slots`, a bucket of this index, whose first 64
    /// bits are not below `frag`, and the first above them: where `frag`
    /// falls in the bucket's range guesses the slot (keys are hashes,
    /// spread evenly), and an exponential search from the guess finds it
    /// in O(log distance) reads. A binary search over the bucket missed
    /// the cache at each of its ≈ 6 steps: it was 6 % of a block's CPU.
    fn frag_range(&self, slots: &[Slot], frag: u64) -> (usize, usize) {
        let lo = lower_bound(slots, frag, 64 - self.bits);
        let equal = slots[lo..].iter().take_while(|s| s.frag == frag).count();
        (lo, lo + equal)
    }

    /// Where `key` is, or would go, in its bucket: `Ok(i)` when the slot
    /// holds `key`, `Err(i)` for the first slot above it. Reads keys back
    /// only where slots share `key`'s first 64 bits.
    fn search<E>(
        &self,
        bucket: usize,
        key: &Hash32,
        key_at: &KeyAt<'_, E>,
    ) -> Result<Result<usize, usize>, E> {
        let slots = &self.buckets[bucket];
        let frag = frag_of(key);
        let (lo, hi) = self.frag_range(slots, frag);
        for (i, s) in slots.iter().enumerate().take(hi).skip(lo) {
            match key_at(s.offset)?.cmp(key) {
                std::cmp::Ordering::Equal => return Ok(Ok(i)),
                std::cmp::Ordering::Greater => return Ok(Err(i)),
                std::cmp::Ordering::Less => {}
            }
        }
        Ok(Err(hi))
    }

    /// The slot of the key with `key`'s first 64 bits at `offset`.
    fn slot_at(&self, key: &Hash32, offset: u64) -> Option<(usize, usize)> {
        let frag = frag_of(key);
        let b = self.bucket_of(frag);
        let slots = &self.buckets[b];
        let (lo, _) = self.frag_range(slots, frag);
        slots[lo..]
            .iter()
            .take_while(|s| s.frag == frag)
            .position(|s| s.offset == offset)
            .map(|i| (b, lo + i))
    }

    /// The offset of `key`'s entry, *unverified* when one key holds its
    /// first 64 bits: then that key's offset comes back without a read,
    /// and the caller, which reads the entry anyway, must check its full
    /// key (another key means `key` is absent). Where several keys share
    /// them, they are read back and the answer is exact.
    pub fn get<E>(&self, key: &Hash32, key_at: &KeyAt<'_, E>) -> Result<Option<u64>, E> {
        let frag = frag_of(key);
        let b = self.bucket_of(frag);
        let slots = &self.buckets[b];
        let (lo, hi) = self.frag_range(slots, frag);
        match hi - lo {
            0 => Ok(None),
            1 => Ok(Some(slots[lo].offset)),
            _ => Ok(self.search(b, key, key_at)?.ok().map(|i| slots[i].offset)),
        }
    }

    /// The offset of the greatest key below `key`.
    pub fn predecessor<E>(&self, key: &Hash32, key_at: &KeyAt<'_, E>) -> Result<Option<u64>, E> {
        let b = self.bucket_of(frag_of(key));
        let i = match self.search(b, key, key_at)? {
            Ok(i) | Err(i) => i,
        };
        if i > 0 {
            return Ok(Some(self.buckets[b][i - 1].offset));
        }
        Ok(self.buckets[..b]
            .iter()
            .rev()
            .find_map(|s| s.last())
            .map(|s| s.offset))
    }

    /// Moves `key` from `old` to `new` (its entry was rewritten): no read.
    /// `false` when `key` is not at `old`.
    pub fn replace(&mut self, key: &Hash32, old: u64, new: u64) -> bool {
        match self.slot_at(key, old) {
            Some((b, i)) => {
                self.buckets[b][i].offset = new;
                true
            }
            None => false,
        }
    }

    /// Inserts `key`, absent, at `offset`. `false` (and nothing changes)
    /// when it is present already.
    pub fn insert<E>(
        &mut self,
        key: &Hash32,
        offset: u64,
        key_at: &KeyAt<'_, E>,
    ) -> Result<bool, E> {
        let frag = frag_of(key);
        let b = self.bucket_of(frag);
        let i = match self.search(b, key, key_at)? {
            Ok(_) => return Ok(false),
            Err(i) => i,
        };
        let mut v = std::mem::take(&mut self.buckets[b]).into_vec();
        v.insert(i, Slot { frag, offset });
        self.buckets[b] = v.into_boxed_slice();
        self.len += 1;
        if self.len > BUCKET_KEYS_TARGET << self.bits && self.bits < BUCKET_BITS_MAX {
            self.grow();
        }
        Ok(true)
    }

    /// Sets `key`'s entry to `offset`, inserting it when absent; returns
    /// the offset it had. Reads keys back where slots share `key`'s first
    /// 64 bits (one read when `key` is present: its old entry's key).
    pub fn upsert<E>(
        &mut self,
        key: &Hash32,
        offset: u64,
        key_at: &KeyAt<'_, E>,
    ) -> Result<Option<u64>, E> {
        let b = self.bucket_of(frag_of(key));
        if let Ok(i) = self.search(b, key, key_at)? {
            let old = self.buckets[b][i].offset;
            self.buckets[b][i].offset = offset;
            return Ok(Some(old));
        }
        self.insert(key, offset, key_at)?;
        Ok(None)
    }

    /// Removes `key` wherever its entry is; returns that offset.
    pub fn remove_key<E>(&mut self, key: &Hash32, key_at: &KeyAt<'_, E>) -> Result<Option<u64>, E> {
        let b = self.bucket_of(frag_of(key));
        match self.search(b, key, key_at)? {
            Ok(i) => {
                let offset = self.buckets[b][i].offset;
                self.remove(key, offset);
                Ok(Some(offset))
            }
            Err(_) => Ok(None),
        }
    }

    /// Removes `key`, whose entry is at `offset`: no read. `false` when
    /// `key` is not at `offset`.
    pub fn remove(&mut self, key: &Hash32, offset: u64) -> bool {
        match self.slot_at(key, offset) {
            Some((b, i)) => {
                let mut v = std::mem::take(&mut self.buckets[b]).into_vec();
                v.remove(i);
                self.buckets[b] = v.into_boxed_slice();
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    /// Appends a key above every key held (a sorted bulk load), with no
    /// read back.
    ///
    /// # Panics
    /// If `key` is not above the greatest key held.
    pub fn push_greatest(&mut self, key: &Hash32, offset: u64) {
        let frag = frag_of(key);
        let b = self.bucket_of(frag);
        if let Some(last) = self.buckets[..=b].iter().rev().find_map(|s| s.last()) {
            assert!(last.frag <= frag, "push_greatest below the greatest key");
        }
        let mut v = std::mem::take(&mut self.buckets[b]).into_vec();
        v.push(Slot { frag, offset });
        self.buckets[b] = v.into_boxed_slice();
        self.len += 1;
        if self.len > BUCKET_KEYS_TARGET << self.bits && self.bits < BUCKET_BITS_MAX {
            self.grow();
        }
    }

    /// Writes the index for [`KeyIndex::read_from`] (a state log's
    /// checkpoint): bucket bits, then each bucket's count and slots.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.bits.to_le_bytes())?;
        w.write_all(&self.len.to_le_bytes())?;
        for b in &self.buckets {
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            for s in b.iter() {
                w.write_all(&s.frag.to_le_bytes())?;
                w.write_all(&s.offset.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Reads an index [`KeyIndex::write_to`] wrote in at most `bytes_max`
    /// bytes, refusing one that is not well formed (bits out of range,
    /// more buckets or keys than those bytes hold, slots out of order or
    /// in the wrong bucket, a count not the sum): the bytes may be
    /// damaged, and nothing is sized by them past what they can hold.
    /// Offsets are not checked against a log here.
    pub fn read_from(r: &mut dyn std::io::Read, bytes_max: u64) -> Result<Self, &'static str> {
        let mut b4 = [0u8; 4];
        let mut b8 = [0u8; 8];
        let short = "truncated";
        r.read_exact(&mut b4).map_err(|_| short)?;
        let bits = u32::from_le_bytes(b4);
        if !(BUCKET_BITS_MIN..=BUCKET_BITS_MAX).contains(&bits) {
            return Err("bucket bits out of range");
        }
        // Each bucket takes 4 bytes of count, each key 16.
        if (4u64 << bits) > bytes_max {
            return Err("more buckets than the bytes hold");
        }
        r.read_exact(&mut b8).map_err(|_| short)?;
        let len = u64::from_le_bytes(b8);
        if len > bytes_max / 16 {
            return Err("more keys than the bytes hold");
        }
        let mut buckets = Vec::with_capacity(1 << bits);
        let mut seen = 0u64;
        let mut last = 0u64;
        for b in 0..1u64 << bits {
            r.read_exact(&mut b4).map_err(|_| short)?;
            let n = u64::from(u32::from_le_bytes(b4));
            seen += n;
            if seen > len {
                return Err("buckets hold more keys than the count");
            }
            let mut slots = Vec::with_capacity(n as usize);
            for _ in 0..n {
                r.read_exact(&mut b8).map_err(|_| short)?;
                let frag = u64::from_le_bytes(b8);
                r.read_exact(&mut b8).map_err(|_| short)?;
                let offset = u64::from_le_bytes(b8);
                if frag >> (64 - bits) != b || frag < last {
                    return Err("a key out of order or out of its bucket");
                }
                last = frag;
                slots.push(Slot { frag, offset });
            }
            buckets.push(slots.into_boxed_slice());
        }
        if seen != len {
            return Err("buckets hold fewer keys than the count");
        }
        Ok(Self { bits, buckets, len })
    }

    /// Doubles the buckets: each splits by its next bit, order kept.
    fn grow(&mut self) {
        let bits = self.bits + 1;
        let mut buckets = Vec::with_capacity(1 << bits);
        for slots in std::mem::take(&mut self.buckets) {
            let cut = slots.partition_point(|s| (s.frag >> (64 - bits)) & 1 == 0);
            buckets.push(slots[..cut].into());
            buckets.push(slots[cut..].into());
        }
        self.bits = bits;
        self.buckets = buckets;
    }

    /// The offset of the greatest key.
    pub fn last(&self) -> Option<u64> {
        self.buckets
            .iter()
            .rev()
            .find_map(|b| b.last())
            .map(|s| s.offset)
    }

    /// Every offset, in key order.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().flat_map(|b| b.iter().map(|s| s.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    /// Keys whose first 64 bits come from a handful of values, so that
    /// most keys share them with another and the read-back path runs.
    fn key() -> impl Strategy<Value = Hash32> {
        (0u8..4, any::<[u8; 24]>(), any::<bool>()).prop_map(|(f, rest, spread)| {
            let mut k = [0u8; 32];
            if spread {
                k[..8].copy_from_slice(&(u64::from(f) << 62 | u64::from(rest[0])).to_be_bytes());
            } else {
                k[0] = f << 6;
            }
            k[8..].copy_from_slice(&rest);
            k
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(Hash32),
        Remove(Hash32),
        Pred(Hash32),
        Upsert(Hash32),
        RemoveKey(Hash32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => key().prop_map(Op::Set),
            1 => key().prop_map(Op::Remove),
            1 => key().prop_map(Op::Pred),
            2 => key().prop_map(Op::Upsert),
            1 => key().prop_map(Op::RemoveKey),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_index_is_an_ordered_map(ops in prop::collection::vec(op(), 1..400)) {
            // The "log": offset → key, as the store would read back.
            let mut log: Vec<Hash32> = vec![];
            let mut model: BTreeMap<Hash32, u64> = BTreeMap::new();
            let mut index = KeyIndex::with_capacity(0);
            for op in ops {
                match op {
                    Op::Set(k) => {
                        let o = log.len() as u64;
                        log.push(k);
                        let key_at = |o: u64| -> Result<Hash32, Infallible> { Ok(log[o as usize]) };
                        match model.insert(k, o) {
                            Some(old) => prop_assert!(index.replace(&k, old, o)),
                            None => prop_assert!(index.insert(&k, o, &key_at).unwrap()),
                        }
                        // A second insert of a present key is refused.
                        prop_assert!(!index.insert(&k, o, &key_at).unwrap());
                    }
                    Op::Remove(k) => {
                        if let Some(o) = model.remove(&k) {
                            prop_assert!(index.remove(&k, o));
                            prop_assert!(!index.remove(&k, o), "removed twice");
                        }
                    }
                    Op::Upsert(k) => {
                        let o = log.len() as u64;
                        log.push(k);
                        let key_at = |o: u64| -> Result<Hash32, Infallible> { Ok(log[o as usize]) };
                        prop_assert_eq!(index.upsert(&k, o, &key_at).unwrap(), model.insert(k, o));
                    }
                    Op::RemoveKey(k) => {
                        let key_at = |o: u64| -> Result<Hash32, Infallible> { Ok(log[o as usize]) };
                        prop_assert_eq!(index.remove_key(&k, &key_at).unwrap(), model.remove(&k));
                    }
                    Op::Pred(k) => {
                        let key_at = |o: u64| -> Result<Hash32, Infallible> { Ok(log[o as usize]) };
                        let want = model.range(..k).next_back().map(|(_, o)| *o);
                        prop_assert_eq!(index.predecessor(&k, &key_at).unwrap(), want);
                        // `get` may name another key with the same first
                        // 64 bits; its entry's key tells.
                        let got = index
                            .get(&k, &key_at)
                            .unwrap()
                            .filter(|o| log[*o as usize] == k);
                        prop_assert_eq!(got, model.get(&k).copied());
                    }
                }
                prop_assert_eq!(index.len(), model.len() as u64);
            }
            let order: Vec<u64> = index.offsets().collect();
            let want: Vec<u64> = model.values().copied().collect();
            prop_assert_eq!(order, want);
        }
    }

    proptest! {
        /// The guessed and galloping search finds what a binary search
        /// finds, in evenly spread buckets and in clumped ones (all at one
        /// end, runs of equal first bits).
        #[test]
        fn lower_bound_is_the_partition_point(
            shift in 1u32..64,
            mut rels in prop::collection::vec(any::<u64>(), 0..300),
            clump in 0u8..3,
            probes in prop::collection::vec(any::<u64>(), 1..40),
        ) {
            let mask = (1u64 << shift) - 1;
            let top = !mask & 0xA5A5_A5A5_A5A5_A5A5;
            for r in &mut rels {
                *r = match clump {
                    0 => *r & mask,
                    1 => (*r & mask) >> (shift / 2),
                    _ => (*r & mask) & !0xFF,
                };
            }
            rels.sort_unstable();
            let slots: Vec<Slot> = rels
                .iter()
                .map(|r| Slot { frag: top | r, offset: 0 })
                .collect();
            let mut targets: Vec<u64> = probes.iter().map(|p| top | (p & mask)).collect();
            targets.extend(slots.iter().map(|s| s.frag));
            targets.extend([top, top | mask]);
            for frag in targets {
                prop_assert_eq!(
                    lower_bound(&slots, frag, shift),
                    slots.partition_point(|s| s.frag < frag)
                );
            }
        }
    }

    /// What `write_to` wrote reads back; damaged counts are refused before
    /// anything is sized by them (31 bucket bits would ask for 32 GiB).
    #[test]
    fn a_written_index_reads_back_and_damaged_counts_are_refused() {
        let keys: Vec<Hash32> = (0u32..3000)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let key_at = |o: u64| -> Result<Hash32, Infallible> { Ok(keys[o as usize]) };
        let mut index = KeyIndex::with_capacity(0);
        for (o, k) in keys.iter().enumerate() {
            index.insert(k, o as u64, &key_at).unwrap();
        }
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).unwrap();
        let read = KeyIndex::read_from(&mut &bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(
            read.offsets().collect::<Vec<_>>(),
            index.offsets().collect::<Vec<_>>()
        );
        let damaged = |at: usize, v: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + v.len()].copy_from_slice(v);
            KeyIndex::read_from(&mut &b[..], b.len() as u64)
        };
        assert!(damaged(0, &31u32.to_le_bytes()).is_err(), "bucket bits");
        assert!(
            damaged(0, &99u32.to_le_bytes()).is_err(),
            "bits out of range"
        );
        assert!(damaged(4, &u64::MAX.to_le_bytes()).is_err(), "key count");
        assert!(
            damaged(4, &2999u64.to_le_bytes()).is_err(),
            "count not the sum"
        );
        assert!(KeyIndex::read_from(&mut &bytes[..bytes.len() - 1], bytes.len() as u64).is_err());
    }

    #[test]
    fn growing_keeps_order_and_a_sorted_load_matches_inserts() {
        let keys: Vec<Hash32> = (0u32..20_000)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let key_at = |o: u64| -> Result<Hash32, Infallible> { Ok(keys[o as usize]) };
        let mut inserted = KeyIndex::with_capacity(0);
        for (o, k) in keys.iter().enumerate() {
            assert!(inserted.insert(k, o as u64, &key_at).unwrap());
        }
        assert!(inserted.bits > BUCKET_BITS_MIN, "the buckets grew");
        let mut sorted: Vec<(Hash32, u64)> = keys.iter().copied().zip(0..).collect();
        sorted.sort();
        let mut loaded = KeyIndex::with_capacity(0);
        for (k, o) in &sorted {
            loaded.push_greatest(k, *o);
        }
        let want: Vec<u64> = sorted.iter().map(|s| s.1).collect();
        assert_eq!(inserted.offsets().collect::<Vec<_>>(), want);
        assert_eq!(loaded.offsets().collect::<Vec<_>>(), want);
        for (k, o) in sorted.iter().step_by(101) {
            assert_eq!(loaded.get(k, &key_at).unwrap(), Some(*o));
        }
        assert!(inserted.memory_bytes() < 20 * keys.len() + (1 << 16));
    }
}
