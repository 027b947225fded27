//! The thread-safe front of an engine: bounded admission and submission.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;

use tm_backend::{BackendError, FinishReason, GenerationEvent, Receipt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::{self, EngineConfig};
use crate::metrics::EngineMetrics;
use crate::model::{Model, ModelError, Token};

/// A tokenized request for the engine: one choice of a client's request. `S` is the
/// model's [`Model::SamplerSpec`].
#[derive(Debug, Clone)]
pub struct SeqRequest<S> {
    pub prompt: Vec<Token>,
    pub sampler: S,
    /// Already clamped to the context by the caller.
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// Generation goes on past end-of-generation tokens (which the sampler must then
    /// never pick).
    pub ignore_eos: bool,
    /// Which choice of its request this is: its events carry it.
    pub choice: u32,
    /// Log-probabilities of each output token, with this many alternatives.
    pub logprobs: Option<u8>,
    /// Log-probabilities of the prompt's tokens too (its prefix is then computed, not
    /// reused from the cache: a cached prefix has no logits).
    pub prompt_logprobs: bool,
    /// Drafts may be verified for it (with speculative decoding on). Off for a request
    /// that must give the same text each time: drafts change the batch, and floats round
    /// differently at other batch sizes.
    pub speculate: bool,
}

impl<S> SeqRequest<S> {
    fn map_sampler<T>(self, f: impl FnOnce(S) -> T) -> SeqRequest<T> {
        let SeqRequest { prompt, sampler, max_tokens, stop, ignore_eos, choice, logprobs, prompt_logprobs, speculate } =
            self;
        SeqRequest {
            prompt,
            sampler: f(sampler),
            max_tokens,
            stop,
            ignore_eos,
            choice,
            logprobs,
            prompt_logprobs,
            speculate,
        }
    }
}

/// A request on its way to the engine thread. The permit is its place in the bounded
/// admission: it is released when the engine drops the job (finished or cancelled).
pub(crate) struct Job<S> {
    /// Its sampler spec is taken when the request starts.
    pub request: SeqRequest<Option<S>>,
    /// Shared by the choices of one request.
    pub events: mpsc::UnboundedSender<GenerationEvent>,
    /// Taken when the engine reports what the request used; a job dropped with it still
    /// here never ran (its client left while it waited), and reports nothing used.
    pub receipt: Option<oneshot::Sender<Receipt>>,
    pub submitted: Instant,
    pub _permit: OwnedSemaphorePermit,
}

impl<S> Job<S> {
    pub fn send_receipt(&mut self, receipt: Receipt) {
        if let Some(tx) = self.receipt.take() {
            let _ = tx.send(receipt);
        }
    }

    /// Ends a job that never got to run: a `Failed` event and an empty receipt.
    pub fn refuse(mut self, message: String) {
        let _ = self.events.send(GenerationEvent::Failed(message));
        self.send_receipt(Receipt::default());
    }
}

impl<S> Drop for Job<S> {
    fn drop(&mut self) {
        self.send_receipt(Receipt { finish: Some(FinishReason::Cancelled), ..Default::default() });
    }
}

/// What the engine thread receives.
pub(crate) enum Message<S> {
    Job(Job<S>),
    /// Stop: save what the cache holds (to the disk tier) and say so.
    Shutdown(oneshot::Sender<()>),
}

/// A submitted request: the events of all its choices, and each choice's receipt.
pub struct Submitted {
    pub events: mpsc::UnboundedReceiver<GenerationEvent>,
    pub receipts: Vec<oneshot::Receiver<Receipt>>,
}

/// Submits requests to one engine thread. Cheap to clone.
pub struct SchedulerHandle<S> {
    jobs: std_mpsc::Sender<Message<S>>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl<S> Clone for SchedulerHandle<S> {
    fn clone(&self) -> Self {
        SchedulerHandle { jobs: self.jobs.clone(), permits: self.permits.clone(), capacity: self.capacity }
    }
}

impl<S: Send + 'static> SchedulerHandle<S> {
    /// Starts the engine thread. `make_model` runs on that thread (a llama.cpp context
    /// must be created and used on one thread); this returns once it has succeeded.
    pub fn spawn<M, F>(
        name: &str,
        config: EngineConfig,
        metrics: EngineMetrics,
        make_model: F,
    ) -> Result<Self, ModelError>
    where
        M: Model<SamplerSpec = S>,
        F: FnOnce() -> Result<M, ModelError> + Send + 'static,
    {
        let (jobs, job_rx) = std_mpsc::channel::<Message<S>>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let capacity = config.slots + config.queue;
        std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || match make_model() {
                Ok(model) => {
                    let engine = engine::new(model, config, metrics);
                    let _ = ready_tx.send(Ok(()));
                    engine::run(engine, job_rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| ModelError::other(format!("cannot start engine thread: {e}")))?;
        ready_rx.recv().map_err(|_| ModelError::other("engine thread exited during start"))??;
        Ok(SchedulerHandle { jobs, permits: Arc::new(Semaphore::new(capacity)), capacity })
    }

    /// Queues the choices of one request (each a sequence of its own, all reporting on one
    /// event channel), or refuses them all at once when slots and queue cannot take them.
    pub fn submit(&self, choices: Vec<SeqRequest<S>>) -> Result<Submitted, BackendError> {
        let overloaded = || BackendError::Overloaded { capacity: self.capacity, retry_after_secs: 1 };
        // All places first: a request is never half admitted.
        let permits = (0..choices.len())
            .map(|_| self.permits.clone().try_acquire_owned().map_err(|_| overloaded()))
            .collect::<Result<Vec<_>, _>>()?;
        let (events, rx) = mpsc::unbounded_channel();
        let mut receipts = Vec::with_capacity(choices.len());
        for (request, permit) in choices.into_iter().zip(permits) {
            let (receipt, receipt_rx) = oneshot::channel();
            receipts.push(receipt_rx);
            let job = Job {
                request: request.map_sampler(Some),
                events: events.clone(),
                receipt: Some(receipt),
                submitted: Instant::now(),
                _permit: permit,
            };
            self.jobs.send(Message::Job(job)).map_err(|_| BackendError::Unavailable)?;
        }
        Ok(Submitted { events: rx, receipts })
    }

    /// Stops the engine once it has saved its cached prefixes to the disk tier (running
    /// requests are cancelled first). Later submissions are refused.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.jobs.send(Message::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Requests admitted and not yet finished (running + waiting).
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Choices that may be admitted at once (slots + queue): more are never admitted.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
