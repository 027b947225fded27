//! What goes from the handle to the engine thread: a request, the job carrying it (with
//! its events channel, receipt and admission permit), and the messages the thread reads.
//! Both sides depend on this module; neither depends on the other's internals.

use std::time::Instant;

use tm_backend::{FinishReason, GenerationEvent, Receipt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::model::Token;

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
    pub(crate) fn map_sampler<T>(self, f: impl FnOnce(S) -> T) -> SeqRequest<T> {
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
