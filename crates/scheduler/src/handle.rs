//! The thread-safe front of an engine: bounded admission and submission.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;

use tm_backend::{BackendError, FinishReason, GenerationEvent, Receipt, SamplingParams};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::{self, EngineConfig};
use crate::metrics::EngineMetrics;
use crate::model::{Model, ModelError, Token};

/// A tokenized request for the engine.
#[derive(Debug, Clone)]
pub struct SeqRequest {
    pub prompt: Vec<Token>,
    pub sampling: SamplingParams,
    /// Already clamped to the context by the caller.
    pub max_tokens: u32,
    pub stop: Vec<String>,
}

/// A request on its way to the engine thread. The permit is its place in the bounded
/// admission: it is released when the engine drops the job (finished or cancelled).
pub(crate) struct Job {
    pub request: SeqRequest,
    pub events: mpsc::UnboundedSender<GenerationEvent>,
    /// Taken when the engine reports what the request used; a job dropped with it still
    /// here never ran (its client left while it waited), and reports nothing used.
    pub receipt: Option<oneshot::Sender<Receipt>>,
    pub submitted: Instant,
    pub _permit: OwnedSemaphorePermit,
}

impl Job {
    pub fn send_receipt(&mut self, receipt: Receipt) {
        if let Some(tx) = self.receipt.take() {
            let _ = tx.send(receipt);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.send_receipt(Receipt { finish: Some(FinishReason::Cancelled), ..Default::default() });
    }
}

/// What the engine thread receives.
pub(crate) enum Message {
    Job(Job),
    /// Stop: save what the cache holds (to the disk tier) and say so.
    Shutdown(oneshot::Sender<()>),
}

/// Submits requests to one engine thread. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    jobs: std_mpsc::Sender<Message>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl SchedulerHandle {
    /// Starts the engine thread. `make_model` runs on that thread (a llama.cpp context
    /// must be created and used on one thread); this returns once it has succeeded.
    pub fn spawn<M, F>(
        name: &str,
        config: EngineConfig,
        metrics: EngineMetrics,
        make_model: F,
    ) -> Result<Self, ModelError>
    where
        M: Model,
        F: FnOnce() -> Result<M, ModelError> + Send + 'static,
    {
        let (jobs, job_rx) = std_mpsc::channel::<Message>();
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

    /// Queues a request, or refuses it at once when slots and queue are full. Returns its
    /// events and its receipt.
    pub fn submit(
        &self,
        request: SeqRequest,
    ) -> Result<(mpsc::UnboundedReceiver<GenerationEvent>, oneshot::Receiver<Receipt>), BackendError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| BackendError::Overloaded { capacity: self.capacity, retry_after_secs: 1 })?;
        let (events, rx) = mpsc::unbounded_channel();
        let (receipt, receipt_rx) = oneshot::channel();
        let job = Job { request, events, receipt: Some(receipt), submitted: Instant::now(), _permit: permit };
        self.jobs.send(Message::Job(job)).map_err(|_| BackendError::Unavailable)?;
        Ok((rx, receipt_rx))
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
}
