//! The thread-safe front of an engine: bounded admission and submission.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;

use tm_backend::{BackendError, GenerationEvent, Receipt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::engine::{self, EngineConfig};
use crate::jobs::{Job, Message, SeqRequest};
use crate::metrics::EngineMetrics;
use crate::model::{Model, ModelError};

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
