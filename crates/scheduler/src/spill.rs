//! The spill tier (LMCache's idea on one machine): a cached prefix dropped from the context
//! is first saved, as a snapshot of its sequence, to host memory and/or a file, under byte
//! budgets; a later prompt that starts with it restores the snapshot into a sequence
//! instead of computing it again. Files outlive the process: a restart finds them.
//!
//! Each entry is one token path with up to two copies: in memory (the model's snapshot
//! type) and on disk (`<id>.kv`, the model's own file format, beside `<id>.tokens`, our
//! index of what it holds). An evicted prefix goes to memory; a memory copy pushed out by
//! its budget, least recently used first, moves to a file (or to a file at once when there
//! is no memory tier), and at shutdown whatever the context and memory hold is written
//! too. Files over their budget are deleted oldest first; an entry lives while it has a
//! copy.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::model::{KvSnapshots, SeqId, Tier, Token};
use crate::prefix::common_prefix;

#[derive(Debug, Clone, Default)]
pub struct SpillConfig {
    /// Host memory for snapshots, in bytes (0: no memory tier).
    pub ram_bytes: u64,
    /// Where snapshot files go (None: no disk tier), and their budget in bytes.
    pub dir: Option<PathBuf>,
    pub disk_bytes: u64,
}

/// Paths shorter than this are not worth a snapshot.
pub const MIN_SPILL_TOKENS: usize = 32;

struct Entry<S> {
    tokens: Vec<Token>,
    ram: Option<(S, u64)>,
    /// The id of its files and the `.kv` file's size.
    file: Option<(String, u64)>,
    last_used: u64,
}

pub struct SpillStore<S> {
    config: SpillConfig,
    entries: Vec<Entry<S>>,
    ram_used: u64,
    disk_used: u64,
    clock: u64,
}

/// A spilled prefix that a prompt can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillMatch {
    entry: usize,
    /// Prompt tokens it holds.
    pub len: usize,
    /// Tokens the snapshot holds in all (what restoring it takes, before trimming).
    pub held: usize,
}

/// What a store holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillStats {
    pub ram_bytes: u64,
    pub ram_entries: usize,
    pub disk_bytes: u64,
    pub disk_entries: usize,
}

const INDEX_MAGIC: &[u8; 4] = b"TMKV";
const INDEX_VERSION: u32 = 1;

impl<S> SpillStore<S> {
    /// A store over `config`, with the files a previous process left in its directory.
    pub fn open(config: SpillConfig) -> Self {
        let mut store = SpillStore { config, entries: Vec::new(), ram_used: 0, disk_used: 0, clock: 0 };
        if let Some(dir) = store.disk_dir().map(Path::to_path_buf) {
            if let Err(e) = fs::create_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot create the KV spill directory; no disk tier");
                store.config.dir = None;
            } else {
                store.load_index(&dir);
            }
        }
        store
    }

    fn disk_dir(&self) -> Option<&Path> {
        self.config.dir.as_deref().filter(|_| self.config.disk_bytes > 0)
    }

    pub fn enabled(&self) -> bool {
        self.in_memory() || self.disk_dir().is_some()
    }

    /// Whether snapshots are kept in host memory.
    pub fn in_memory(&self) -> bool {
        self.config.ram_bytes > 0
    }

    /// Indexes the snapshot files in `dir`, oldest first; drops incomplete ones.
    fn load_index(&mut self, dir: &Path) {
        let Ok(listing) = fs::read_dir(dir) else { return };
        let mut found = Vec::new();
        for path in listing.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "tokens") {
                match read_index(&path) {
                    Some((tokens, size)) if kv_size(&path) == Some(size) => {
                        let modified = fs::metadata(&path).and_then(|m| m.modified()).ok();
                        found.push((modified, path, tokens, size));
                    }
                    _ => remove_files(&path.with_extension("")),
                }
            } else if path.extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        found.sort_by_key(|(modified, ..)| *modified);
        for (_, path, tokens, size) in found {
            let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            self.clock += 1;
            self.disk_used += size;
            self.entries.push(Entry { tokens, ram: None, file: Some((id, size)), last_used: self.clock });
        }
        debug!(entries = self.entries.len(), bytes = self.disk_used, "indexed spilled KV snapshots");
        self.trim_files();
    }

    /// The entry holding the longest prefix of `prompt[..limit]`.
    pub fn find(&self, prompt: &[Token], limit: usize) -> Option<SpillMatch> {
        let prompt = &prompt[..limit.min(prompt.len())];
        self.entries
            .iter()
            .enumerate()
            .map(|(entry, e)| SpillMatch { entry, len: common_prefix(&e.tokens, prompt), held: e.tokens.len() })
            .filter(|m| m.len > 0)
            .max_by_key(|m| (m.len, std::cmp::Reverse(m.held)))
    }

    /// Marks entry `m` as just used, so that saving others does not push it out first.
    pub fn touch(&mut self, m: SpillMatch) {
        self.clock += 1;
        self.entries[m.entry].last_used = self.clock;
    }

    /// Saves what `seq` holds (`tokens`, its whole path) before it is dropped: to memory
    /// (to a file when there is no memory tier), unless an entry already covers it. Entries
    /// it extends are replaced. The budgets are the caller's to enforce, once the context
    /// has room again (`enforce_budgets`).
    pub fn save<M: KvSnapshots<Snapshot = S>>(&mut self, model: &mut M, seq: SeqId, tokens: Vec<Token>) {
        if !self.enabled() || tokens.len() < MIN_SPILL_TOKENS {
            return;
        }
        self.clock += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.tokens.starts_with(&tokens)) {
            e.last_used = self.clock;
            return;
        }
        let mut entry = Entry { tokens, ram: None, file: None, last_used: self.clock };
        if self.in_memory() {
            if let Some(snapshot) = model.snapshot(seq) {
                let bytes = M::snapshot_bytes(&snapshot);
                self.ram_used += bytes;
                entry.ram = Some((snapshot, bytes));
            }
        } else if let Some(dir) = self.disk_dir().map(Path::to_path_buf) {
            entry.file = write_files(model, seq, &entry.tokens, &dir);
        }
        self.insert(entry);
    }

    /// Writes what `seq` holds to a file (at shutdown: the cache's content for the next
    /// process), unless a file already covers it.
    pub fn persist<M: KvSnapshots<Snapshot = S>>(&mut self, model: &mut M, seq: SeqId, tokens: Vec<Token>) {
        let Some(dir) = self.disk_dir().map(Path::to_path_buf) else { return };
        if tokens.len() < MIN_SPILL_TOKENS || self.on_disk(&tokens) {
            return;
        }
        self.clock += 1;
        let file = write_files(model, seq, &tokens, &dir);
        self.insert(Entry { tokens, ram: None, file, last_used: self.clock });
        self.trim_files();
    }

    /// Writes every memory copy that has no file yet to one, restoring each into `scratch`
    /// (a sequence that holds nothing) to do so.
    pub fn persist_memory<M: KvSnapshots<Snapshot = S>>(&mut self, model: &mut M, scratch: SeqId) {
        for i in 0..self.entries.len() {
            self.demote(i, model, scratch);
        }
    }

    /// Gives entry `i`'s memory copy a file (through `scratch`); false when it cannot.
    fn demote<M: KvSnapshots<Snapshot = S>>(&mut self, i: usize, model: &mut M, scratch: SeqId) -> bool {
        let Some(dir) = self.disk_dir().map(Path::to_path_buf) else { return false };
        let e = &self.entries[i];
        if e.file.is_some() {
            return true;
        }
        let Some((snapshot, _)) = &e.ram else { return false };
        if !model.restore(snapshot, scratch) {
            return false;
        }
        let file = write_files(model, scratch, &e.tokens, &dir);
        model.remove(scratch, 0);
        if let Some((_, size)) = &file {
            self.disk_used += size;
        }
        let written = file.is_some();
        self.entries[i].file = file;
        written
    }

    fn insert(&mut self, entry: Entry<S>) {
        if entry.ram.is_none() && entry.file.is_none() {
            return;
        }
        if let Some((_, size)) = &entry.file {
            self.disk_used += size;
        }
        // Entries this one extends hold nothing it does not.
        let covered: Vec<usize> =
            (0..self.entries.len()).filter(|&i| entry.tokens.starts_with(&self.entries[i].tokens)).collect();
        for i in covered.into_iter().rev() {
            self.remove(i);
        }
        self.entries.push(entry);
    }

    /// Restores entry `m` into `seq`, from memory when it is there, else from its file.
    /// Returns the tier, or None when neither copy loads (the entry is dropped).
    pub fn restore<M: KvSnapshots<Snapshot = S>>(&mut self, model: &mut M, m: SpillMatch, seq: SeqId) -> Option<Tier> {
        self.clock += 1;
        let e = &mut self.entries[m.entry];
        e.last_used = self.clock;
        if let Some((snapshot, _)) = &e.ram {
            if model.restore(snapshot, seq) {
                return Some(Tier::Ram);
            }
        }
        if let (Some((id, _)), Some(dir)) = (&e.file, self.config.dir.as_deref()) {
            if model.load_file(&dir.join(format!("{id}.kv")), seq, &e.tokens) {
                return Some(Tier::Disk);
            }
        }
        warn!(tokens = e.tokens.len(), "a spilled KV snapshot did not load; dropping it");
        self.remove(m.entry);
        None
    }

    fn remove(&mut self, i: usize) {
        let e = self.entries.swap_remove(i);
        if let Some((_, bytes)) = e.ram {
            self.ram_used -= bytes;
        }
        if let Some((id, size)) = e.file {
            self.disk_used -= size;
            if let Some(dir) = &self.config.dir {
                remove_files(&dir.join(id));
            }
        }
    }

    /// Drops memory copies (moving them to files through `scratch`, a sequence that holds
    /// nothing, when it can), then files, least recently used first, until within budget.
    pub fn enforce_budgets<M: KvSnapshots<Snapshot = S>>(&mut self, model: &mut M, scratch: Option<SeqId>) {
        while self.ram_used > self.config.ram_bytes {
            let Some(i) = self.lru(|e| e.ram.is_some()) else { break };
            if let Some(scratch) = scratch {
                self.demote(i, model, scratch);
            }
            if let Some((_, bytes)) = self.entries[i].ram.take() {
                self.ram_used -= bytes;
            }
        }
        self.trim_files();
    }

    /// Deletes files, least recently used first, until within the disk budget.
    fn trim_files(&mut self) {
        while self.disk_used > self.config.disk_bytes {
            let Some(i) = self.lru(|e| e.file.is_some()) else { break };
            if let Some((id, size)) = self.entries[i].file.take() {
                self.disk_used -= size;
                if let Some(dir) = &self.config.dir {
                    remove_files(&dir.join(id));
                }
            }
        }
        self.entries.retain(|e| e.ram.is_some() || e.file.is_some());
    }

    fn lru(&self, has: impl Fn(&Entry<S>) -> bool) -> Option<usize> {
        self.entries.iter().enumerate().filter(|(_, e)| has(e)).min_by_key(|(_, e)| e.last_used).map(|(i, _)| i)
    }

    /// Whether a file holds `tokens` or a longer path starting with them.
    pub fn on_disk(&self, tokens: &[Token]) -> bool {
        self.entries.iter().any(|e| e.file.is_some() && e.tokens.starts_with(tokens))
    }

    pub fn stats(&self) -> SpillStats {
        SpillStats {
            ram_bytes: self.ram_used,
            ram_entries: self.entries.iter().filter(|e| e.ram.is_some()).count(),
            disk_bytes: self.disk_used,
            disk_entries: self.entries.iter().filter(|e| e.file.is_some()).count(),
        }
    }
}

/// Writes `<id>.kv` (the model's file) and then `<id>.tokens` (our index), each through a
/// temporary file and a rename, so that a crash never leaves an entry that looks whole.
fn write_files<M: KvSnapshots>(model: &mut M, seq: SeqId, tokens: &[Token], dir: &Path) -> Option<(String, u64)> {
    let id = path_id(tokens);
    let base = dir.join(&id);
    let kv_tmp = base.with_extension("kv.tmp");
    let size = model.save_file(seq, tokens, &kv_tmp)?;
    let written = fs::rename(&kv_tmp, base.with_extension("kv")).and_then(|()| {
        let index_tmp = base.with_extension("tokens.tmp");
        // No fsync: a file cut short by a crash fails the size check at the next start.
        fs::write(&index_tmp, encode_index(tokens, size))?;
        fs::rename(&index_tmp, base.with_extension("tokens"))
    });
    match written {
        Ok(()) => Some((id, size)),
        Err(e) => {
            warn!(error = %e, "cannot write a KV snapshot file");
            let _ = fs::remove_file(&kv_tmp);
            remove_files(&base);
            None
        }
    }
}

/// A file name for a token path: the hex SHA-256 of its tokens.
fn path_id(tokens: &[Token]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn encode_index(tokens: &[Token], kv_size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 4 * tokens.len());
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&kv_size.to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out
}

/// The tokens and `.kv` size an index file records.
fn read_index(path: &Path) -> Option<(Vec<Token>, u64)> {
    let bytes = fs::read(path).ok()?;
    let rest = bytes.strip_prefix(INDEX_MAGIC)?;
    let (version, rest) = rest.split_first_chunk::<4>()?;
    let (size, rest) = rest.split_first_chunk::<8>()?;
    let (n, rest) = rest.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != INDEX_VERSION || rest.len() != 4 * u32::from_le_bytes(*n) as usize {
        return None;
    }
    let tokens = rest.chunks_exact(4).map(|c| Token::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Some((tokens, u64::from_le_bytes(*size)))
}

fn kv_size(index: &Path) -> Option<u64> {
    fs::metadata(index.with_extension("kv")).ok().map(|m| m.len())
}

fn remove_files(base: &Path) {
    let _ = fs::remove_file(base.with_extension("kv"));
    let _ = fs::remove_file(base.with_extension("tokens"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tokens");
        fs::write(&path, encode_index(&[1, -2, 300], 77)).unwrap();
        assert_eq!(read_index(&path), Some((vec![1, -2, 300], 77)));
        let mut bytes = encode_index(&[1, 2], 5);
        bytes.pop();
        fs::write(&path, bytes).unwrap();
        assert_eq!(read_index(&path), None);
    }
}
