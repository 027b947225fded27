//! A stand-in engine (a mock: no model runs). Words are tokens; a generation emits
//! `max_tokens` words (default 16), one every `token_delay`, stops at once when its
//! receiver goes away, and reports an exact receipt. Like the real engine it admits a
//! bounded number of requests (503 beyond) and reuses the previous prompt's prefix (so
//! cached-token pricing is exercised). It lets gateway tests and the gateway benchmark run
//! thousands of requests in seconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tm_backend::{
    Backend, BackendError, FinishReason, GenerateRequest, Generation, GenerationEvent, ModelInfo, Prepared,
    PromptInput, Receipt, TokenUsage, TokenizeInput, Tokenized,
};
use tokio::sync::{mpsc, oneshot};

pub const FAKE_MODEL: &str = "fake/echo-1";
const MAX_CONTEXT: u64 = 4096;
const DEFAULT_MAX_TOKENS: u64 = 16;

pub struct FakeEngine {
    token_delay: Duration,
    capacity: usize,
    in_flight: Arc<AtomicUsize>,
    last_prompt: Mutex<Vec<String>>,
    prepared: AtomicUsize,
}

impl FakeEngine {
    /// At most `capacity` generations at once; each token takes `token_delay`.
    pub fn new(token_delay: Duration, capacity: usize) -> FakeEngine {
        FakeEngine {
            token_delay,
            capacity,
            in_flight: Arc::default(),
            last_prompt: Mutex::default(),
            prepared: AtomicUsize::new(0),
        }
    }

    /// How many requests reached `prepare` (the tokenizer, in a real engine).
    pub fn prepared(&self) -> usize {
        self.prepared.load(Ordering::SeqCst)
    }

    fn words(prompt: &PromptInput) -> Vec<String> {
        let text = match prompt {
            PromptInput::Text(t) => t.clone(),
            PromptInput::Chat(messages) => messages
                .iter()
                .map(|m| format!("<{}> {}", m["role"].as_str().unwrap_or(""), m["content"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" "),
        };
        text.split_whitespace().map(str::to_owned).collect()
    }
}

/// Gives back the admission slot when the generation ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for FakeEngine {
    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: FAKE_MODEL.into(),
            max_context: MAX_CONTEXT,
            owned_by: "testkit".into(),
            memory: None,
            endpoints: Vec::new(),
        }]
    }

    async fn prepare(&self, req: GenerateRequest) -> Result<Prepared, BackendError> {
        if req.model != FAKE_MODEL {
            return Err(BackendError::ModelNotFound(req.model));
        }
        self.prepared.fetch_add(1, Ordering::SeqCst);
        let words = Self::words(&req.prompt);
        if words.is_empty() {
            return Err(BackendError::invalid("prompt", "the prompt is empty"));
        }
        let prompt_tokens = words.len() as u64;
        let max = req.max_tokens.map_or(DEFAULT_MAX_TOKENS, u64::from);
        if prompt_tokens + max > MAX_CONTEXT {
            return Err(BackendError::ContextLengthExceeded {
                max_context: MAX_CONTEXT,
                requested: prompt_tokens + max,
                prompt: prompt_tokens,
                completion: max,
            });
        }
        let cached = {
            let mut last = self.last_prompt.lock().map_err(|_| BackendError::Unavailable)?;
            let common = last.iter().zip(&words).take_while(|(a, b)| a == b).count() as u64;
            *last = words;
            common.min(prompt_tokens - 1)
        };
        let (delay, capacity, in_flight) = (self.token_delay, self.capacity, self.in_flight.clone());
        Ok(Prepared::new(req.model, prompt_tokens, max, async move {
            if in_flight.fetch_add(1, Ordering::SeqCst) >= capacity {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                return Err(BackendError::Overloaded { capacity, retry_after_secs: 1 });
            }
            let slot = Slot(in_flight);
            let (events, rx) = mpsc::unbounded_channel();
            let (receipt_tx, receipt) = oneshot::channel();
            let generate = move || {
                let _slot = slot;
                let mut usage = TokenUsage { prompt_tokens, cached_tokens: cached, completion_tokens: 0 };
                let mut finish = FinishReason::Length;
                for i in 0..max {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    if events.send(GenerationEvent::text(0, format!("w{i} "))).is_err() {
                        finish = FinishReason::Cancelled;
                        break;
                    }
                    usage.completion_tokens += 1;
                }
                let _ = events.send(GenerationEvent::ChoiceEnded { choice: 0, reason: finish });
                let _ = events.send(GenerationEvent::Finished { usage });
                let _ = receipt_tx.send(Receipt { usage, finish: Some(finish), ..Default::default() });
            };
            if delay.is_zero() {
                // Instant: everything is queued before the caller reads (a trivial backend).
                generate();
            } else {
                // Paced: a thread per generation; the gateway under test owns the runtime.
                std::thread::spawn(generate);
            }
            Ok(Generation { prompt_tokens, events: rx, receipt })
        }))
    }

    async fn tokenize(&self, req: TokenizeInput) -> Result<Tokenized, BackendError> {
        let words = Self::words(&req.prompt);
        Ok(Tokenized { tokens: (0..words.len() as i64).collect(), token_strs: words, max_context: MAX_CONTEXT })
    }

    async fn detokenize(&self, _model: &str, tokens: &[i64]) -> Result<String, BackendError> {
        Ok(tokens.iter().map(|t| format!("w{t}")).collect::<Vec<_>>().join(" "))
    }

    fn healthy(&self) -> bool {
        true
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}
