//! Where the CLI keeps its state (`$TM_CONFIG_HOME` or `~/.config/tensormesh`), and atomic
//! 0600 writes (temp file in the same directory, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{CliError, Result};

pub fn home() -> PathBuf {
    match std::env::var("TM_CONFIG_HOME").ok().filter(|v| !v.trim().is_empty()) {
        Some(h) => expand(&h),
        None => expand("~/.config/tensormesh"),
    }
}

/// `~` expanded; relative paths kept as given.
pub fn expand(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}

pub fn auth_path() -> PathBuf {
    home().join("auth.json")
}

pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The saved login (`auth.json`), as the server sent it.
pub fn read_auth() -> Result<Option<serde_json::Map<String, Value>>> {
    let path = auth_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::failed(format!("Failed to read token file: {}: {e}", path.display()))),
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::failed(format!("Invalid token file JSON: {}: {e}", path.display())))?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(CliError::failed(format!("Invalid token file JSON: expected a JSON object: {}", path.display()))),
    }
}

/// The access token, or the usage error every Control Plane command gives without one.
pub fn access_token() -> Result<String> {
    let Some(auth) = read_auth()? else {
        return Err(CliError::usage("No control plane access token found. Run `tm auth login` first."));
    };
    match auth.get("access_token").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) {
        Some(t) => Ok(t.to_owned()),
        None => Err(CliError::failed(format!(
            "Invalid token file: missing or invalid 'access_token': {}",
            auth_path().display()
        ))),
    }
}

pub fn save_auth(tokens: &serde_json::Map<String, Value>) -> Result<PathBuf> {
    let path = auth_path();
    let text = format!("{}\n", serde_json::to_string_pretty(tokens).unwrap_or_default());
    write_private(&path, &text)
        .map_err(|e| CliError::failed(format!("Failed to write token file: {}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn private_files_are_written_whole_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("auth.json");
        super::write_private(&path, "one").unwrap();
        super::write_private(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp file left");
    }
}
