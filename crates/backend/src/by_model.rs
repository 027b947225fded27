//! Several backends behind one seam, each request going to the one serving its model
//! (the embedded engine's models and the upstream fleets' side by side).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Backend, BackendError, GenerateRequest, ModelInfo, Prepared, TokenizeInput, Tokenized};

pub struct ByModel {
    backends: Vec<Arc<dyn Backend>>,
    /// Model name -> index in `backends` (a backend's models are fixed when it is built).
    serving: HashMap<String, usize>,
}

impl ByModel {
    /// Fails when two backends serve a model of the same name.
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Result<ByModel, String> {
        let mut serving = HashMap::new();
        for (i, b) in backends.iter().enumerate() {
            for m in b.models() {
                if serving.insert(m.id.clone(), i).is_some() {
                    return Err(format!("the model `{}` is declared twice (a model name serves one backend)", m.id));
                }
            }
        }
        Ok(ByModel { backends, serving })
    }

    fn serving(&self, model: &str) -> Result<&Arc<dyn Backend>, BackendError> {
        self.serving.get(model).map(|&i| &self.backends[i]).ok_or_else(|| BackendError::ModelNotFound(model.to_owned()))
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
