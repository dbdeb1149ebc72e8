//! The twig log's files: one append-only byte log cut into segment files
//! (`log-NNNNNNNN.seg`, [`SEGMENT_BYTES`] each), addressed by a global
//! offset (`segment × SEGMENT_BYTES + position`).
//!
//! A record is an entry ([`crate::state::twig_proof::EntryRef`]'s
//! encoding, first byte [`ENTRY_VERSION`]) or a tombstone ([`TOMBSTONE`],
//! then the deleted key: not in the Merkle tree, it tells a recovery scan
//! that the key's last entry is no longer active). A record never spans
//! two segments: one that does not fit the rest of a segment starts the
//! next one, and a [`SEGMENT_END`] byte marks where the old one stops.
//!
//! The log holds no notion of what is committed: the store keeps the
//! committed tail offset beside the block head (in LMDB), and on open
//! cuts whatever lies past it ([`SegmentLog::cut_after`]) — the bytes of a
//! block that was written but never committed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::state::proof::Hash32;
use crate::state::twig_proof::{ENTRY_HEADER_BYTES, ENTRY_VERSION, EntryRef, VALUE_BYTES_MAX};

/// Bytes per segment file.
pub const SEGMENT_BYTES: u64 = 256 << 20;
/// First byte of a tombstone record.
pub const TOMBSTONE: u8 = 0xd0;
/// Bytes of a tombstone record.
pub const TOMBSTONE_BYTES: usize = 1 + 32;
/// Marks the end of a segment's records.
pub const SEGMENT_END: u8 = 0x00;
/// Bytes an entry read guesses first: an account's entry, header and
/// value (`id ‖ record`), so that an account is one read. (It was 256
/// while accounts' entries grew to 280 with their id: every account read
/// then took a second call for its last 24 bytes.)
pub const ENTRY_GUESS_BYTES: usize = ENTRY_HEADER_BYTES + crate::storage::ACCOUNT_VALUE_BYTES;
/// Bytes gathered for one write call at most.
const RUN_BYTES_MAX: usize = 8 << 20;
/// Bytes read at a time by a scan.
const SCAN_CHUNK_BYTES: usize = 8 << 20;

/// Errors of the log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system failed.
    #[error("state log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the log open for writing.
    #[error("the state log in {0} is open for writing in another process (a running node?)")]
    Locked(PathBuf),
    /// A write to a log opened read-only.
    #[error("the state log was opened read-only")]
    ReadOnly,
    /// Bytes that should be a record are not one.
    #[error("state log corrupt at offset {offset}: {what}")]
    Corrupt {
        /// Where.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

/// One record read back by a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// An entry, decoded, and its bytes.
    Entry(EntryRef<'a>, &'a [u8]),
    /// A deleted key.
    Tombstone(&'a Hash32),
}

/// The segment files of one log.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    files: BTreeMap<u64, File>,
    /// The writer's exclusive lock on `LOCK` (`None`: opened read-only).
    lock: Option<File>,
}

/// Tells the kernel that reads of `f` are random: an entry read past the
/// page cache then reads its pages, not the default 128 KiB after them
/// (at 10⁸ accounts, readahead turned 20 000 entry reads a block into
/// gigabytes read). Scans read in large chunks and do not need it. Best
/// effort: a kernel without the advice reads ahead as before.
fn no_readahead(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call reads nothing of ours.
    let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
}

/// Reads one io_uring ring keeps in flight.
pub const RING_DEPTH: u32 = 256;

/// Whether this kernel gives io_uring rings: 0 not asked yet, 1 yes, 2 no
/// (asked once per process; `INT_IO_URING=0` in the environment says no
/// without asking, for kernels where rings are a policy question).
static RINGS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// A ring for [`SegmentLog::read_entries`], or `None` when the kernel
/// gives none.
fn ring() -> Option<io_uring::IoUring> {
    use std::sync::atomic::Ordering;
    match RINGS.load(Ordering::Relaxed) {
        2 => return None,
        0 if std::env::var("INT_IO_URING").is_ok_and(|v| v == "0" || v == "off") => {
            RINGS.store(2, Ordering::Relaxed);
            tracing::info!("io_uring off (INT_IO_URING): state reads go one system call each");
            return None;
        }
        _ => {}
    }
    match io_uring::IoUring::new(RING_DEPTH) {
        Ok(r) => {
            RINGS.store(1, Ordering::Relaxed);
            Some(r)
        }
        Err(e) => {
            // Refused from the start: never asked again. Refused after
            // working (a resource limit): this batch only.
            if RINGS
                .compare_exchange(0, 2, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::info!("no io_uring ({e}): state reads go one system call each");
            }
            None
        }
    }
}

/// Reads go one system call each from now on, in this process: what
/// `INT_IO_URING=0` does, for a process that cannot set its environment
/// before its first read (a test of that path).
pub fn disable_rings() {
    RINGS.store(2, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`SegmentLog::read_entries`] reads through io_uring here.
pub fn rings_work() -> bool {
    match RINGS.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => ring().is_some(),
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("log-{n:08}.seg"))
}

impl SegmentLog {
    /// Opens the segments in `dir` (created if absent) for writing: one
    /// writer at a time, held by an exclusive lock on `dir/LOCK` until the
    /// log is dropped.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        if let Some(parent) = dir.parent() {
            // The directory's own name, when it was just created.
            File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let lock = Self::open_file(&dir.join("LOCK"), true)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Self::open_segments(dir, segment_bytes, Some(lock))
    }

    /// Opens the segments in `dir` to read only, beside a writer in
    /// another process (`int state` beside a running node): nothing is
    /// created, cut or dropped.
    pub fn open_read_only(dir: &Path, segment_bytes: u64) -> Result<Self, LogError> {
        Self::open_segments(dir, segment_bytes, None)
    }

    fn open_segments(dir: &Path, segment_bytes: u64, lock: Option<File>) -> Result<Self, LogError> {
        assert!(segment_bytes as usize > ENTRY_HEADER_BYTES + VALUE_BYTES_MAX);
        let io = |source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let writable = lock.is_some();
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("log-"))
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            files.insert(n, Self::open_file(&e.path(), writable)?);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            files,
            lock,
        })
    }

    fn open_file(path: &Path, writable: bool) -> Result<File, LogError> {
        let f = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable)
            .truncate(false)
            .open(path)
            .map_err(|source| LogError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        no_readahead(&f);
        Ok(f)
    }

    fn io(&self, n: u64) -> impl Fn(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: segment_path(&self.dir, n),
            source,
        }
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this log was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.lock.is_some()
    }

    fn writable(&self) -> Result<(), LogError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(LogError::ReadOnly),
        }
    }

    fn file(&mut self, n: u64) -> Result<&File, LogError> {
        self.writable()?;
        if !self.files.contains_key(&n) {
            let f = Self::open_file(&segment_path(&self.dir, n), true)?;
            // The new file's name must survive a power loss before the
            // block that starts it commits.
            self.sync_dir()?;
            self.files.insert(n, f);
        }
        Ok(&self.files[&n])
    }

    /// Makes the directory's entries (created and removed segments)
    /// durable.
    fn sync_dir(&self) -> Result<(), LogError> {
        let io = |source| LogError::Io {
            path: self.dir.clone(),
            source,
        };
        File::open(&self.dir).map_err(io)?.sync_all().map_err(io)
    }

    /// Where a record of `len` bytes written at `tail` goes: `tail`, or
    /// the next segment's start when it does not fit.
    pub fn place(&self, tail: u64, len: usize) -> u64 {
        let room = self.segment_bytes - tail % self.segment_bytes;
        if len as u64 <= room {
            tail
        } else {
            tail + room
        }
    }

    /// Writes `records` (each one record's bytes) from `tail`; returns
    /// each record's offset and the new tail. Not durable until
    /// [`SegmentLog::sync`].
    pub fn append(&mut self, tail: u64, records: &[&[u8]]) -> Result<(Vec<u64>, u64), LogError> {
        let mut offsets = Vec::with_capacity(records.len());
        // Records are gathered per segment and written with one call each.
        let mut at = tail;
        let mut run_start = tail;
        let mut run: Vec<u8> = Vec::new();
        for r in records {
            let o = self.place(at, r.len());
            if o != at {
                run.push(SEGMENT_END);
                self.write_run(run_start, &run)?;
                run.clear();
                run_start = o;
            } else if (o.is_multiple_of(self.segment_bytes) && o != run_start)
                || run.len() >= RUN_BYTES_MAX
            {
                // The last record filled its segment to the byte: the run
                // goes on in the next file (no end marker is needed). Or
                // the run is long enough for one call (a genesis chunk
                // would otherwise gather a whole segment in memory).
                self.write_run(run_start, &run)?;
                run.clear();
                run_start = o;
            }
            offsets.push(o);
            run.extend_from_slice(r);
            at = o + r.len() as u64;
        }
        self.write_run(run_start, &run)?;
        Ok((offsets, at))
    }

    fn write_run(&mut self, start: u64, bytes: &[u8]) -> Result<(), LogError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let (n, pos) = (start / self.segment_bytes, start % self.segment_bytes);
        assert!(
            pos + bytes.len() as u64 <= self.segment_bytes,
            "a run of records past its segment's end"
        );
        self.file(n)?.write_all_at(bytes, pos).map_err(self.io(n))
    }

    /// Makes everything written in segments `from..=to` (by offset) durable.
    pub fn sync(&mut self, from: u64, to: u64) -> Result<(), LogError> {
        for n in from / self.segment_bytes..=to / self.segment_bytes {
            if let Some(f) = self.files.get(&n) {
                f.sync_data().map_err(self.io(n))?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), LogError> {
        let (n, pos) = (offset / self.segment_bytes, offset % self.segment_bytes);
        if pos + buf.len() as u64 > self.segment_bytes {
            return Err(LogError::Corrupt {
                offset,
                what: "a read across a segment's end",
            });
        }
        let f = self.files.get(&n).ok_or(LogError::Corrupt {
            offset,
            what: "the segment is missing",
        })?;
        f.read_exact_at(buf, pos).map_err(self.io(n))
    }

    /// The entry at `offset`, its bytes: one read for entries of up to
    /// [`ENTRY_GUESS_BYTES`], two for longer ones.
    pub fn read_entry(&self, offset: u64) -> Result<Vec<u8>, LogError> {
        let mut out = self.entry_buffer(offset)?;
        // The guess may run past the file's end: read what is there.
        let got = self.read_some(offset, &mut out)?;
        self.finish_entry(offset, out, got)
    }

    /// The buffer a first read of the entry at `offset` fills: the guess,
    /// cut at the segment's end.
    fn entry_buffer(&self, offset: u64) -> Result<Vec<u8>, LogError> {
        let room = (self.segment_bytes - offset % self.segment_bytes) as usize;
        let out = vec![0u8; ENTRY_GUESS_BYTES.min(room)];
        if out.len() < ENTRY_HEADER_BYTES {
            return Err(LogError::Corrupt {
                offset,
                what: "an entry cut by its segment's end",
            });
        }
        Ok(out)
    }

    /// The entry at `offset` from the first `got` bytes of its
    /// [`SegmentLog::entry_buffer`] (all the file held there): checked,
    /// cut to its length, or completed by a second read.
    fn finish_entry(&self, offset: u64, mut out: Vec<u8>, got: usize) -> Result<Vec<u8>, LogError> {
        if got < ENTRY_HEADER_BYTES || out[0] != ENTRY_VERSION {
            return Err(LogError::Corrupt {
                offset,
                what: "not an entry",
            });
        }
        let len = u32::from_le_bytes(out[73..77].try_into().expect("4 bytes")) as usize;
        if len > VALUE_BYTES_MAX {
            return Err(LogError::Corrupt {
                offset,
                what: "an entry value over the bound",
            });
        }
        let total = ENTRY_HEADER_BYTES + len;
        if total <= got {
            out.truncate(total);
        } else {
            let have = got.min(out.len());
            out.resize(total, 0);
            self.read(offset + have as u64, &mut out[have..])?;
        }
        Ok(out)
    }

    /// The entries at `offsets`, as [`SegmentLog::read_entry`] reads each,
    /// through one io_uring ring that keeps up to [`RING_DEPTH`] reads in
    /// flight: one system call per batch instead of one per entry, and no
    /// threads waiting in the kernel. `None` when this kernel gives no
    /// ring, or one that fails (too old, or refused by a sandbox): read
    /// them one by one then.
    pub fn read_entries(&self, offsets: &[u64]) -> Result<Option<Vec<Vec<u8>>>, LogError> {
        use std::os::fd::AsRawFd;
        if offsets.is_empty() {
            // No ring set up for nothing (a planner whose entries all
            // came from the read cache asks for none).
            return Ok(Some(Vec::new()));
        }
        let Some(mut ring) = ring() else {
            return Ok(None);
        };
        let mut bufs = offsets
            .iter()
            .map(|&o| self.entry_buffer(o))
            .collect::<Result<Vec<_>, _>>()?;
        let mut got = vec![0usize; offsets.len()];
        let mut failed: Option<LogError> = None;
        let (mut next, mut in_flight) = (0usize, 0usize);
        loop {
            {
                let mut sq = ring.submission();
                while next < offsets.len() && in_flight < RING_DEPTH as usize && failed.is_none() {
                    let (n, pos) = (
                        offsets[next] / self.segment_bytes,
                        offsets[next] % self.segment_bytes,
                    );
                    let Some(f) = self.files.get(&n) else {
                        failed = Some(LogError::Corrupt {
                            offset: offsets[next],
                            what: "the segment is missing",
                        });
                        break;
                    };
                    let buf = &mut bufs[next];
                    let read = io_uring::opcode::Read::new(
                        io_uring::types::Fd(f.as_raw_fd()),
                        buf.as_mut_ptr(),
                        buf.len() as u32,
                    )
                    .offset(pos)
                    .build()
                    .user_data(next as u64);
                    // SAFETY: the read writes into `bufs[next]`'s heap
                    // bytes, which stay allocated and unmoved until it
                    // completes: this function reaps every read it
                    // submitted before it returns, and leaks the buffers
                    // when it cannot (below); `f` stays open as `self`
                    // is borrowed.
                    if unsafe { sq.push(&read) }.is_err() {
                        break;
                    }
                    next += 1;
                    in_flight += 1;
                }
            }
            if in_flight == 0 {
                break;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Reads may still land in the buffers: never free
                    // them. A ring that cannot be entered (a sandbox that
                    // allows setting one up but not using it) is not used
                    // again: these reads go one call each.
                    std::mem::forget(bufs);
                    if RINGS.swap(2, std::sync::atomic::Ordering::Relaxed) != 2 {
                        tracing::warn!(
                            "io_uring failed ({e}): state reads go one system call each"
                        );
                    }
                    return Ok(None);
                }
            }
            for done in ring.completion() {
                in_flight -= 1;
                let i = done.user_data() as usize;
                match usize::try_from(done.result()) {
                    Ok(n) => got[i] = n,
                    Err(_) => {
                        let n = offsets[i] / self.segment_bytes;
                        failed.get_or_insert(self.io(n)(std::io::Error::from_raw_os_error(
                            -done.result(),
                        )));
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let mut out = Vec::with_capacity(offsets.len());
        for ((&offset, mut buf), mut got) in offsets.iter().zip(bufs).zip(got) {
            if got < buf.len() {
                // Short: the file's end, or a read the kernel cut.
                got += self.read_some(offset + got as u64, &mut buf[got..])?;
            }
            out.push(self.finish_entry(offset, buf, got)?);
        }
        Ok(Some(out))
    }

    /// Reads up to `buf.len()` bytes at `offset` within one segment;
    /// returns how many the file held.
    fn read_some(&self, offset: u64, buf: &mut [u8]) -> Result<usize, LogError> {
        let (n, pos) = (offset / self.segment_bytes, offset % self.segment_bytes);
        let f = self.files.get(&n).ok_or(LogError::Corrupt {
            offset,
            what: "the segment is missing",
        })?;
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], pos + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(n)(e)),
            }
        }
        Ok(got)
    }

    /// The key of the entry at `offset` (its header only).
    pub fn read_key(&self, offset: u64) -> Result<Hash32, LogError> {
        let mut head = [0u8; 1 + 8 + 32];
        self.read(offset, &mut head)?;
        if head[0] != ENTRY_VERSION {
            return Err(LogError::Corrupt {
                offset,
                what: "not an entry",
            });
        }
        Ok(head[9..41].try_into().expect("32 bytes"))
    }

    /// Calls `f` with every record from `from` to `to` (offsets), in
    /// order, reading large chunks sequentially, until `f` returns
    /// `Ok(false)`.
    pub fn scan(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(u64, Record<'_>) -> Result<bool, LogError>,
    ) -> Result<(), LogError> {
        let mut at = from;
        while at < to {
            let seg_end = (at / self.segment_bytes + 1) * self.segment_bytes;
            let chunk_end = to.min(seg_end).min(at + SCAN_CHUNK_BYTES as u64);
            let mut buf = vec![0u8; (chunk_end - at) as usize];
            // A segment's file ends at its end marker, before the segment.
            let got = self.read_some(at, &mut buf)?;
            buf.truncate(got);
            let mut pos = 0usize;
            let mut segment_ends = false;
            while at + (pos as u64) < to {
                let rest = &buf[pos..];
                let offset = at + pos as u64;
                match rest.first() {
                    None => break,
                    Some(&SEGMENT_END) => {
                        segment_ends = true;
                        break;
                    }
                    Some(&TOMBSTONE) => {
                        let Some(key) = rest.get(1..TOMBSTONE_BYTES) else {
                            break;
                        };
                        let key: &Hash32 = key.try_into().expect("32 bytes");
                        if !f(offset, Record::Tombstone(key))? {
                            return Ok(());
                        }
                        pos += TOMBSTONE_BYTES;
                    }
                    Some(&ENTRY_VERSION) => {
                        if rest.len() < ENTRY_HEADER_BYTES {
                            break;
                        }
                        let len =
                            u32::from_le_bytes(rest[73..77].try_into().expect("4 bytes")) as usize;
                        if len > VALUE_BYTES_MAX {
                            return Err(LogError::Corrupt {
                                offset,
                                what: "an entry value over the bound",
                            });
                        }
                        let Some(bytes) = rest.get(..ENTRY_HEADER_BYTES + len) else {
                            break;
                        };
                        let e = EntryRef::decode(bytes).map_err(|_| LogError::Corrupt {
                            offset,
                            what: "an entry that does not decode",
                        })?;
                        if !f(offset, Record::Entry(e, bytes))? {
                            return Ok(());
                        }
                        pos += bytes.len();
                    }
                    Some(_) => {
                        return Err(LogError::Corrupt {
                            offset,
                            what: "an unknown record tag",
                        });
                    }
                }
            }
            if segment_ends {
                at = seg_end;
            } else if pos == 0 {
                // No whole record in [at, chunk_end): records are far
                // shorter than a chunk, so one is cut by the tail or by
                // its segment's end.
                return Err(LogError::Corrupt {
                    offset: at,
                    what: "a record cut short",
                });
            } else {
                at += pos as u64;
            }
        }
        Ok(())
    }

    /// Removes the segments that lie wholly below `offset`.
    pub fn drop_below(&mut self, offset: u64) -> Result<(), LogError> {
        self.writable()?;
        let keep = offset / self.segment_bytes;
        let gone: Vec<u64> = self.files.range(..keep).map(|(n, _)| *n).collect();
        self.remove_segments(&gone)
    }

    /// Deletes segment files, then makes their removal durable.
    fn remove_segments(&mut self, segments: &[u64]) -> Result<(), LogError> {
        for &n in segments {
            self.files.remove(&n);
            std::fs::remove_file(segment_path(&self.dir, n)).map_err(self.io(n))?;
        }
        if !segments.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Cuts everything at and past `offset`: bytes a crashed block wrote
    /// after the last commit.
    pub fn cut_after(&mut self, offset: u64) -> Result<(), LogError> {
        self.writable()?;
        let n = offset / self.segment_bytes;
        let later: Vec<u64> = self.files.range(n + 1..).map(|(n, _)| *n).collect();
        self.remove_segments(&later)?;
        if let Some(f) = self.files.get(&n) {
            f.set_len(offset % self.segment_bytes).map_err(self.io(n))?;
            f.sync_all().map_err(self.io(n))?;
        }
        Ok(())
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.files
            .values()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::twig::encode_entry;

    /// A batch read through a ring gives what one read each gives: short
    /// and long entries (a second read past the guess), entries cut by
    /// their segment's end, the last entry of the file, repeats, any
    /// order; an offset in a segment that is not there is an error.
    #[test]
    fn batch_reads_match_single_reads() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let seg = 3 * (ENTRY_HEADER_BYTES + VALUE_BYTES_MAX) as u64;
        let mut log = SegmentLog::open(dir.path(), seg).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let entries: Vec<Vec<u8>> = (0..400u64)
            .map(|serial| {
                let len = match serial % 4 {
                    0 => 0,
                    1 => ENTRY_GUESS_BYTES - ENTRY_HEADER_BYTES,
                    2 => rng.gen_range(0..VALUE_BYTES_MAX),
                    _ => VALUE_BYTES_MAX,
                };
                let mut e = Vec::new();
                encode_entry(serial, &[serial as u8; 32], &[2; 32], &vec![7; len], &mut e);
                e
            })
            .collect();
        let records: Vec<&[u8]> = entries.iter().map(|e| &e[..]).collect();
        let (offsets, tail) = log.append(0, &records).unwrap();
        log.sync(0, tail).unwrap();
        let mut asked: Vec<u64> = (0..1000)
            .map(|_| offsets[rng.gen_range(0..offsets.len())])
            .collect();
        asked.push(*offsets.last().unwrap());
        let Some(batch) = log.read_entries(&asked).unwrap() else {
            assert!(!rings_work());
            eprintln!("no io_uring on this kernel: the batch path is not tested here");
            return;
        };
        for (o, got) in asked.iter().zip(&batch) {
            assert_eq!(*got, log.read_entry(*o).unwrap(), "offset {o}");
        }
        assert!(log.read_entries(&[offsets[0], tail + 10 * seg]).is_err());
        assert!(log.read_entries(&[offsets[0], 1]).is_err());
    }

    /// A record that fills its segment to the byte, followed by more in
    /// the same append: the rest go to the next segment's file (this
    /// panicked before: the run crossed into the next segment).
    #[test]
    fn a_record_that_fills_its_segment_to_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 2 * (ENTRY_HEADER_BYTES + VALUE_BYTES_MAX) as u64;
        let mut log = SegmentLog::open(dir.path(), seg).unwrap();
        let entry = |serial: u64, len: usize| {
            let mut e = Vec::new();
            encode_entry(serial, &[1; 32], &[2; 32], &vec![7; len], &mut e);
            e
        };
        let first = entry(0, VALUE_BYTES_MAX);
        let second = entry(1, seg as usize - first.len() - ENTRY_HEADER_BYTES);
        let third = entry(2, 10);
        let records = [&first[..], &second[..], &third[..]];
        let (offsets, tail) = log.append(0, &records).unwrap();
        assert_eq!(offsets, [0, first.len() as u64, seg]);
        assert_eq!(tail, seg + third.len() as u64);
        log.sync(0, tail).unwrap();
        let mut seen = Vec::new();
        log.scan(0, tail, &mut |o, r| {
            if let Record::Entry(e, _) = r {
                seen.push((o, e.serial));
            }
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, [(0, 0), (first.len() as u64, 1), (seg, 2)]);
        for (o, r) in offsets.iter().zip(records) {
            assert_eq!(log.read_entry(*o).unwrap(), r);
        }
    }
}
