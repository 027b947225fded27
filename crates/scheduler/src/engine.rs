//! The batching loop. Each step builds one batch from every running sequence (its next
//! decode token, or a chunk of its prompt) so that many requests share one forward pass,
//! and new requests join between steps.

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;

use tm_backend::{FinishReason, GenerationEvent, Receipt, TokenUsage};
use tracing::{debug, warn};

use crate::handle::Job;
use crate::model::{BatchEntry, Model, SeqId, Token};
use crate::text::{StopMatcher, Utf8Decoder};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together (KV-cache sequence ids).
    pub slots: usize,
    /// Requests admitted beyond the slots, waiting for one.
    pub queue: usize,
    /// Tokens one sequence may hold in the KV cache (prompt + completion).
    pub ctx_per_slot: usize,
}

/// A KV-cache sequence and what it holds.
struct Slot<S> {
    seq: SeqId,
    /// Tokens whose KV entries are in the cache, in position order. Kept after a request
    /// ends so that the next request sharing the prefix skips recomputing it.
    cached: Vec<Token>,
    active: Option<Active<S>>,
}

/// A request that holds a slot.
struct Active<S> {
    job: Job,
    sampler: S,
    /// Next prompt index to feed; equals the prompt length once prefill is done.
    next_prompt: usize,
    /// The sampled token to feed next step, once prefill is done.
    pending: Option<Token>,
    /// Index of this sequence's logits in the last batch.
    logits_at: Option<usize>,
    generated: u32,
    cached_tokens: usize,
    decoder: Utf8Decoder,
    stop: StopMatcher,
}

impl<S> Active<S> {
    /// What the request has used so far: a prompt is counted once it holds a slot.
    fn usage(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.job.request.prompt.len() as u64,
            cached_tokens: self.cached_tokens as u64,
            completion_tokens: u64::from(self.generated),
        }
    }
}

pub(crate) fn run<M: Model>(mut model: M, config: EngineConfig, jobs: std_mpsc::Receiver<Job>) {
    let mut slots: Vec<Slot<M::Sampler>> =
        (0..config.slots).map(|i| Slot { seq: i as SeqId, cached: Vec::new(), active: None }).collect();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut batch: Vec<BatchEntry> = Vec::with_capacity(model.batch_capacity());
    loop {
        let busy = slots.iter().any(|s| s.active.is_some()) || !waiting.is_empty();
        if !busy {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return, // every handle is gone: shut down
            }
        }
        while let Ok(job) = jobs.try_recv() {
            waiting.push_back(job);
        }
        // Departed clients are never scheduled.
        waiting.retain(|j| !j.events.is_closed());
        for slot in &mut slots {
            if slot.active.as_ref().is_some_and(|a| a.job.events.is_closed()) {
                finish(slot, FinishReason::Cancelled);
            }
        }
        admit(&mut slots, &mut waiting, &mut model);

        build_batch(&mut slots, &mut batch, model.batch_capacity());
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = model.decode(&batch) {
            warn!(error = %e, tokens = batch.len(), "decode failed; failing the batch");
            for slot in slots.iter_mut().filter(|s| s.active.is_some()) {
                fail(slot, &e.0, &mut model);
            }
            continue;
        }
        for slot in &mut slots {
            sample_and_emit(slot, &mut model, config.ctx_per_slot);
        }
    }
}

/// Moves waiting requests into free slots, preferring the slot whose cached tokens share
/// the longest prefix with the prompt.
fn admit<M: Model>(slots: &mut [Slot<M::Sampler>], waiting: &mut VecDeque<Job>, model: &mut M) {
    while let Some(job) = waiting.front() {
        let prompt = &job.request.prompt;
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| (i, common_prefix(&s.cached, prompt)))
            .max_by_key(|&(i, len)| (len, std::cmp::Reverse(i)));
        let Some((index, prefix)) = best else { return };
        let Some(mut job) = waiting.pop_front() else { return };
        let slot = &mut slots[index];
        let sampler = match model.new_sampler(&job.request.sampling) {
            Ok(s) => s,
            Err(e) => {
                let _ = job.events.send(GenerationEvent::Failed(e.0));
                job.send_receipt(Receipt { usage: TokenUsage::default(), finish: None });
                continue;
            }
        };
        // Keep at least one prompt token to compute: its logits start the generation.
        let mut reuse = prefix.min(job.request.prompt.len().saturating_sub(1));
        if reuse < slot.cached.len() && !model.truncate(slot.seq, reuse) {
            reuse = 0;
            model.truncate(slot.seq, 0);
        }
        slot.cached.truncate(reuse);
        debug!(seq = slot.seq, prompt = job.request.prompt.len(), reused = reuse, "admitted");
        let stop = StopMatcher::new(job.request.stop.clone());
        slot.active = Some(Active {
            job,
            sampler,
            next_prompt: reuse,
            pending: None,
            logits_at: None,
            generated: 0,
            cached_tokens: reuse,
            decoder: Utf8Decoder::default(),
            stop,
        });
    }
}

fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One token per decoding sequence first (they are latency-bound), then prompt chunks in
/// the remaining budget.
fn build_batch<S>(slots: &mut [Slot<S>], batch: &mut Vec<BatchEntry>, capacity: usize) {
    batch.clear();
    for slot in slots.iter_mut() {
        let Some(active) = slot.active.as_mut() else { continue };
        active.logits_at = None;
        if let Some(token) = active.pending.take() {
            active.logits_at = Some(batch.len());
            batch.push(BatchEntry { token, pos: slot.cached.len(), seq: slot.seq, logits: true });
            slot.cached.push(token);
        }
    }
    for slot in slots.iter_mut() {
        let Some(active) = slot.active.as_mut() else { continue };
        let prompt = &active.job.request.prompt;
        while active.next_prompt < prompt.len() && batch.len() < capacity {
            let token = prompt[active.next_prompt];
            active.next_prompt += 1;
            let last = active.next_prompt == prompt.len();
            if last {
                active.logits_at = Some(batch.len());
            }
            batch.push(BatchEntry { token, pos: slot.cached.len(), seq: slot.seq, logits: last });
            slot.cached.push(token);
        }
    }
}

fn sample_and_emit<M: Model>(slot: &mut Slot<M::Sampler>, model: &mut M, ctx_per_slot: usize) {
    let Some(active) = slot.active.as_mut() else { return };
    let Some(index) = active.logits_at.take() else { return };
    let token = model.sample(&mut active.sampler, index);
    active.generated += 1;
    if model.is_end_of_generation(token) && !active.job.request.sampling.ignore_eos {
        flush(active);
        return finish(slot, FinishReason::Stop);
    }
    let text = active.decoder.push(&model.token_bytes(token));
    let matched = active.stop.push(&text);
    send_text(active, matched.text);
    if matched.stopped {
        return finish(slot, FinishReason::Stop);
    }
    // The sampled token still has to be fed, so it needs a free position in the context.
    if active.generated >= active.job.request.max_tokens || slot.cached.len() + 1 >= ctx_per_slot {
        flush(active);
        return finish(slot, FinishReason::Length);
    }
    active.pending = Some(token);
}

fn send_text<S>(active: &Active<S>, text: String) {
    if !text.is_empty() {
        let _ = active.job.events.send(GenerationEvent::Text(text));
    }
}

/// Emits text held back by the decoder or the stop matcher when generation ends for
/// another reason than a stop string.
fn flush<S>(active: &mut Active<S>) {
    let tail = active.decoder.finish();
    let matched = active.stop.push(&tail);
    let mut text = matched.text;
    if !matched.stopped {
        text.push_str(&active.stop.finish());
    }
    send_text(active, text);
}

/// Ends the slot's request; the slot keeps its cached tokens for prefix reuse.
fn finish<S>(slot: &mut Slot<S>, reason: FinishReason) {
    let Some(mut active) = slot.active.take() else { return };
    let usage = active.usage();
    debug!(seq = slot.seq, ?reason, ?usage, "finished");
    let _ = active.job.events.send(GenerationEvent::Finished { reason, usage });
    active.job.send_receipt(Receipt { usage, finish: Some(reason) });
}

fn fail<M: Model>(slot: &mut Slot<M::Sampler>, error: &str, model: &mut M) {
    if let Some(mut active) = slot.active.take() {
        let _ = active.job.events.send(GenerationEvent::Failed(error.to_owned()));
        let usage = active.usage();
        active.job.send_receipt(Receipt { usage, finish: None });
    }
    // The KV state of a failed batch is unknown: forget it.
    model.truncate(slot.seq, 0);
    slot.cached.clear();
}
