//! Several backends behind one seam, each request going to the one serving its model
//! (the embedded engine's models and the upstream fleets' side by side).

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Backend, BackendError, GenerateRequest, ModelInfo, Prepared, TokenizeInput, Tokenized};

pub struct ByModel {
    backends: Vec<Arc<dyn Backend>>,
}

impl ByModel {
    /// Fails when two backends serve a model of the same name.
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Result<ByModel, String> {
        let mut seen = std::collections::HashSet::new();
        for b in &backends {
            for m in b.models() {
                if !seen.insert(m.id.clone()) {
                    return Err(format!("the model `{}` is declared twice (a model name serves one backend)", m.id));
                }
            }
        }
        Ok(ByModel { backends })
    }

    fn serving(&self, model: &str) -> Result<&Arc<dyn Backend>, BackendError> {
        self.backends
            .iter()
            .find(|b| b.models().iter().any(|m| m.id == model))
            .ok_or_else(|| BackendError::ModelNotFound(model.to_owned()))
    }
}

#[async_trait]
impl Backend for ByModel {
    fn models(&self) -> Vec<ModelInfo> {
        self.backends.iter().flat_map(|b| b.models()).collect()
    }

    async fn prepare(&self, request: GenerateRequest) -> Result<Prepared, BackendError> {
        self.serving(&request.model)?.prepare(request).await
    }

    async fn tokenize(&self, request: TokenizeInput) -> Result<Tokenized, BackendError> {
        self.serving(&request.model)?.tokenize(request).await
    }

    async fn detokenize(&self, model: &str, tokens: &[i64]) -> Result<String, BackendError> {
        self.serving(model)?.detokenize(model, tokens).await
    }

    fn healthy(&self) -> bool {
        self.backends.iter().all(|b| b.healthy())
    }

    fn model_healthy(&self, model: &str) -> bool {
        self.serving(model).is_ok_and(|b| b.model_healthy(model))
    }

    fn in_flight(&self) -> usize {
        self.backends.iter().map(|b| b.in_flight()).sum()
    }

    async fn shutdown(&self) {
        futures::future::join_all(self.backends.iter().map(|b| b.shutdown())).await;
    }
}
