//! Loading GGUF models.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

/// llama.cpp's global state, initialised once per process.
pub fn llama_backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor at load; route it through tracing (debug level).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Loads a model for the life of the process. Models are leaked on purpose: each engine
/// thread's llama.cpp context borrows its model, and both live until the process exits.
pub fn load_model(path: &Path, show_progress: bool) -> Result<&'static LlamaModel, String> {
    if !path.is_file() {
        return Err(format!("model file not found: {}", path.display()));
    }
    let backend = llama_backend()?;
    let label = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut last = -1i32;
    let params = LlamaModelParams::default().with_progress_callback(move |p: f32| {
        let pct = (p * 100.0) as i32;
        if show_progress && pct / 10 != last / 10 {
            last = pct;
            let mut err = std::io::stderr();
            let _ = write!(err, "\rloading {label}: {pct:3}%");
            if pct >= 100 {
                let _ = writeln!(err);
            }
        }
        true
    });
    let model = LlamaModel::load_from_file(backend, path, &params)
        .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    Ok(Box::leak(Box::new(model)))
}
