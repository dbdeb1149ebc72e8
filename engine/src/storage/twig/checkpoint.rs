//! A state log's memory saved beside it when the node stops
//! ([`TwigStore::save_checkpoint`]), so that the next open reads it
//! instead of scanning the whole held log (at 10⁸ accounts on the
//! development VM: a 1.5 GiB checkpoint written in 6.8 s, a restart in
//! 8.0 s against 78 s of scan; `int bench scale`).
//!
//! A checkpoint is used only for the meta it was written at: a block
//! committed after it makes it stale, and a node killed mid-run reopens by
//! the scan, as before. It is written to a temporary file, synced and
//! renamed, and ends with the BLAKE3 hash of everything before it; a
//! writer's open deletes it once read (used or not). Whatever is wrong
//! with one (short, damaged, of another meta, not matching its own root)
//! makes the open fall back to the scan, never read a wrong state: the
//! tree it restores must give the meta's root, and the index must hold
//! one key per active entry.
//!
//! Layout, little-endian: `MAGIC`, the meta's length (u32) and bytes, the
//! full twigs' entries roots (u64 count, 32 bytes each), the youngest
//! twig's entry hashes (u64 count, 32 bytes each), the held twigs' active
//! bits (u64 count, 256 bytes each), the held twigs' first offsets (u64
//! count, 8 bytes each), the key index ([`KeyIndex::write_to`]), then the
//! hash (32 bytes).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{TwigMeta, TwigStore, TwigStoreError, index::KeyIndex};
use crate::state::proof::Hash32;
use crate::state::twig::{TwigBits, TwigTree};
use crate::state::twig_proof::TWIG_ENTRIES;

/// The file's first bytes (and its format's version).
const MAGIC: &[u8; 8] = b"INTCKPT1";

/// The checkpoint's file name in the log's directory.
const FILE: &str = "checkpoint";

/// Where a log's checkpoint is.
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// A writer that hashes what passes.
struct Hashing<W> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes.
struct Hashed<R> {
    inner: R,
    hash: blake3::Hasher,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes `store`'s memory to `dir/checkpoint` (see the module doc);
/// returns its bytes.
pub(super) fn save(store: &TwigStore, dir: &Path) -> Result<u64, TwigStoreError> {
    let (entry_roots, young, bits) = store.tree.parts();
    if bits.len() != entry_roots.len() + usize::from(!young.is_empty())
        || store.twig_offsets.len() != bits.len()
    {
        return Err(TwigStoreError::Plan(
            "a checkpoint of a tree whose twigs do not line up".into(),
        ));
    }
    let tmp = dir.join(format!("{FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| {
            TwigStoreError::Log(super::LogError::Io {
                path: path.clone(),
                source,
            })
        }
    };
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: blake3::Hasher::new(),
    };
    let write = |w: &mut Hashing<BufWriter<File>>| -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        let meta = store.meta().encode();
        w.write_all(&(meta.len() as u32).to_le_bytes())?;
        w.write_all(&meta)?;
        w.write_all(&(entry_roots.len() as u64).to_le_bytes())?;
        for r in entry_roots {
            w.write_all(r)?;
        }
        w.write_all(&(young.len() as u64).to_le_bytes())?;
        for h in young {
            w.write_all(h)?;
        }
        w.write_all(&(bits.len() as u64).to_le_bytes())?;
        for words in bits {
            for word in words {
                w.write_all(&word.to_le_bytes())?;
            }
        }
        w.write_all(&(store.twig_offsets.len() as u64).to_le_bytes())?;
        for o in &store.twig_offsets {
            w.write_all(&o.to_le_bytes())?;
        }
        store.index.write_to(w)
    };
    write(&mut w).map_err(io(&tmp))?;
    let hash = w.hash.finalize();
    let mut inner = w.inner;
    inner.write_all(hash.as_bytes()).map_err(io(&tmp))?;
    let file = inner.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io(&tmp))?;
    let bytes = file.metadata().map_err(io(&tmp))?.len();
    let to = path(dir);
    std::fs::rename(&tmp, &to).map_err(io(&to))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(bytes)
}

/// What a checkpoint restores.
pub(super) struct Restored {
    pub(super) index: KeyIndex,
    pub(super) tree: TwigTree,
    pub(super) twig_offsets: std::collections::VecDeque<u64>,
}

/// Reads `dir/checkpoint` if it was written at `meta`: `Ok(None)` when
/// there is none or it is of another meta, an error when it is damaged.
pub(super) fn load(dir: &Path, meta: &TwigMeta) -> Result<Option<Restored>, String> {
    let file = match File::open(path(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("opening it: {e}")),
    };
    let size = file.metadata().map_err(|e| format!("its size: {e}"))?.len();
    let Some(body) = size.checked_sub(32) else {
        return Err("shorter than its hash".into());
    };
    let mut r = Hashed {
        inner: BufReader::with_capacity(1 << 20, file).take(body),
        hash: blake3::Hasher::new(),
    };
    let short = |_| "truncated".to_string();
    let mut b8 = [0u8; 8];
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(short)?;
    if &magic != MAGIC {
        return Err("not a checkpoint of this format".into());
    }
    let mut b4 = [0u8; 4];
    r.read_exact(&mut b4).map_err(short)?;
    let meta_len = u32::from_le_bytes(b4) as u64;
    if meta_len > body {
        return Err("a meta longer than the file".into());
    }
    let mut meta_bytes = vec![0u8; meta_len as usize];
    r.read_exact(&mut meta_bytes).map_err(short)?;
    let saved = TwigMeta::decode(&meta_bytes).map_err(|e| format!("its meta: {e}"))?;
    if saved != *meta {
        return Ok(None);
    }
    // A count is bounded by the bytes left before anything is sized by
    // it.
    let count = |r: &mut Hashed<_>, each: u64| -> Result<usize, String> {
        let mut b8 = [0u8; 8];
        r.read_exact(&mut b8).map_err(short)?;
        let n = u64::from_le_bytes(b8);
        if n.checked_mul(each).is_none_or(|b| b > body) {
            return Err("a count past the file's end".into());
        }
        Ok(n as usize)
    };
    let hash32 = |r: &mut Hashed<_>| -> Result<Hash32, String> {
        let mut h = [0u8; 32];
        r.read_exact(&mut h).map_err(short)?;
        Ok(h)
    };
    let n = count(&mut r, 32)?;
    let entry_roots = (0..n)
        .map(|_| hash32(&mut r))
        .collect::<Result<Vec<_>, _>>()?;
    let n = count(&mut r, 32)?;
    if n as u64 >= TWIG_ENTRIES {
        return Err("a youngest twig past its size".into());
    }
    let young = (0..n)
        .map(|_| hash32(&mut r))
        .collect::<Result<Vec<_>, _>>()?;
    let n = count(&mut r, size_of::<TwigBits>() as u64)?;
    let mut bits: Vec<TwigBits> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut words = TwigBits::default();
        for word in &mut words {
            r.read_exact(&mut b8).map_err(short)?;
            *word = u64::from_le_bytes(b8);
        }
        bits.push(words);
    }
    let n = count(&mut r, 8)?;
    let mut twig_offsets = std::collections::VecDeque::with_capacity(n);
    for _ in 0..n {
        r.read_exact(&mut b8).map_err(short)?;
        twig_offsets.push_back(u64::from_le_bytes(b8));
    }
    let index = KeyIndex::read_from(&mut r, body).map_err(|e| format!("its index: {e}"))?;
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(|e| e.to_string())? != 0 {
        return Err("bytes after its index".into());
    }
    let computed = r.hash.finalize();
    let mut stored = [0u8; 32];
    let mut file = r.inner.into_inner();
    file.read_exact(&mut stored).map_err(short)?;
    if computed.as_bytes() != &stored {
        return Err("its hash does not match its bytes".into());
    }
    // The parts must line up with the meta before the tree takes them.
    let twigs = entry_roots.len() + usize::from(!young.is_empty());
    let tail = (meta.base + entry_roots.len() as u64) * TWIG_ENTRIES + young.len() as u64;
    if bits.len() != twigs || twig_offsets.len() != twigs || tail != meta.tail {
        return Err("twigs that do not line up with the meta".into());
    }
    if twig_offsets
        .iter()
        .any(|&o| o < meta.base_offset || o >= meta.tail_offset)
        || index
            .offsets()
            .any(|o| o < meta.base_offset || o >= meta.tail_offset)
    {
        return Err("an offset outside the held log".into());
    }
    let tree = TwigTree::restore_twigs(meta.base, entry_roots, young, bits, &meta.frontier);
    if tree.root() != meta.root {
        return Err("a tree whose root is not the meta's".into());
    }
    if tree.active_count() != index.len() {
        return Err("an index of another size than the active entries".into());
    }
    Ok(Some(Restored {
        index,
        tree,
        twig_offsets,
    }))
}
