//! The settlement journal: usage the database could not take yet, kept in a local file
//! (`DATA_DIR/settlements.jsonl`, one JSON object per line, fsync'd) until it does. A
//! batch whose write fails is appended before its responses' last bytes go out; the
//! settler retries it with backoff for as long as it takes, and rewrites the file with what
//! is still missing after each success. A process killed meanwhile leaves the file, and the
//! next start on the same data dir settles it before anything else ([`replay`]). The
//! request id (the usage record's key) keeps it exactly once: an entry whose first write
//! did commit after all is a no-op the second time.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tm_store::ledger::UsageRow;
use tm_store::{Store, StoreError};

/// The journal's file name in the data dir.
pub const JOURNAL_FILE: &str = "settlements.jsonl";

/// One request's usage, and the replica id its money was held under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub held_under: String,
    #[serde(flatten)]
    pub usage: UsageRow,
}

impl Entry {
    pub fn new(held_under: &str, usage: &UsageRow) -> Entry {
        Entry { held_under: held_under.to_owned(), usage: usage.clone() }
    }
}

/// The journal file of one data dir.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(data_dir: &Path) -> Journal {
        Journal { path: data_dir.join(JOURNAL_FILE) }
    }

    /// Appends `entries` and waits until they are on disk.
    pub async fn append(&self, entries: Vec<Entry>) -> std::io::Result<()> {
        let path = self.path.clone();
        blocking(move || {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            file.write_all(&lines(&entries)?)?;
            file.sync_all()
        })
        .await
    }

    /// Replaces the journal with `entries` (what is still unsettled); removes it when none.
    pub async fn rewrite(&self, entries: Vec<Entry>) -> std::io::Result<()> {
        let path = self.path.clone();
        blocking(move || {
            if entries.is_empty() {
                return match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            let fresh = path.with_extension("jsonl.tmp");
            let mut file = std::fs::File::create(&fresh)?;
            file.write_all(&lines(&entries)?)?;
            file.sync_all()?;
            std::fs::rename(&fresh, &path)
        })
        .await
    }
}

fn lines(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut out, entry)?;
        out.push(b'\n');
    }
    Ok(out)
}

async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<()> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Settles what the journal in `data_dir` holds (left by a process that could not write it
/// before it stopped or was killed) and removes it. Returns how many requests it named.
/// Run it at start, before the previous process's holds are voided: then each entry is
/// charged from the money held for it. A line cut short by a crash mid-write is skipped
/// (its batch's responses had not been released yet).
pub async fn replay(store: &Store, data_dir: &Path) -> Result<usize, ReplayError> {
    let path = data_dir.join(JOURNAL_FILE);
    let entries = read(&path).map_err(ReplayError::Io)?;
    if entries.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ReplayError::Io(e)),
            _ => Ok(0),
        };
    }
    let mut holders: Vec<&str> = entries.iter().map(|e| e.held_under.as_str()).collect();
    holders.sort_unstable();
    holders.dedup();
    for holder in holders {
        let rows: Vec<UsageRow> = entries.iter().filter(|e| e.held_under == holder).map(|e| e.usage.clone()).collect();
        for chunk in rows.chunks(256) {
            store.ledger().settle(holder, chunk, &[]).await.map_err(ReplayError::Store)?;
        }
    }
    std::fs::remove_file(&path).map_err(ReplayError::Io)?;
    Ok(entries.len())
}

/// The entries of the journal at `path` (none when there is no file), skipping a line cut
/// short by a crash mid-write.
fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str(&line) {
            Ok(entry) => entries.push(entry),
            Err(e) if !line.trim().is_empty() => tracing::warn!(error = %e, "skipping a torn journal line"),
            Err(_) => {}
        }
    }
    Ok(entries)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the settlement journal: {0}")]
    Io(std::io::Error),
    #[error("cannot settle the settlement journal: {0}")]
    Store(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(request_id: &str) -> Entry {
        let row = UsageRow {
            request_id: request_id.into(),
            user_id: "u".into(),
            api_key_id: "k".into(),
            model: "m".into(),
            prompt_tokens: 10,
            cached_tokens: 2,
            completion_tokens: 5,
            cost_nanos: 1_234,
            cache_saving_nanos: 7,
            status: "stop".into(),
            started_at: 1,
            finished_at: 2,
            usage_source: "engine".into(),
        };
        Entry::new("replica-a", &row)
    }

    /// Appends accumulate, a rewrite keeps what is still owed (and an empty one removes
    /// the file), and a line torn by a crash mid-write is skipped, not fatal.
    #[tokio::test]
    async fn the_journal_keeps_what_is_owed_and_survives_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("tm-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let journal = Journal::new(&dir);
        let path = dir.join(JOURNAL_FILE);
        journal.append(vec![entry("r1"), entry("r2")]).await.unwrap();
        journal.append(vec![entry("r3")]).await.unwrap();
        assert_eq!(read(&path).unwrap(), vec![entry("r1"), entry("r2"), entry("r3")]);
        assert_eq!(read(&path).unwrap()[0].usage, entry("r1").usage, "round trip");

        journal.rewrite(vec![entry("r2")]).await.unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"held_under":"replica-a","request_id":"r4","us"#).unwrap();
        assert_eq!(read(&path).unwrap(), vec![entry("r2")]);

        journal.rewrite(Vec::new()).await.unwrap();
        assert!(!path.exists());
        assert_eq!(read(&path).unwrap(), Vec::new());
    }
}
