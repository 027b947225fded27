//! The batching loop. Each step builds one batch from every running sequence (its next
//! decode token, or a chunk of its prompt) so that many requests share one forward pass,
//! and new requests join between steps with the longest cached prefix of their prompt.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use tm_backend::{FinishReason, GenerationEvent, Output, Receipt, TokenLogprob, TokenUsage, TopLogprob};
use tracing::{debug, trace, warn, Level};

use crate::draft::{DraftPlan, DraftStats, Drafter, From, NgramTable, Outcome, Source, StepCosts};
use crate::jobs::{Job, Message, SeqRequest};
use crate::metrics::EngineMetrics;
use crate::model::{BatchEntry, Model, ModelError, SeqId, Tier, Token};
use crate::prefix::{common_prefix, Match, NodeId, PrefixTree};
use crate::spill::{SpillConfig, SpillMatch, SpillStore, MIN_SPILL_TOKENS};
use crate::text::{StopMatcher, Utf8Decoder};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Requests decoded together.
    pub slots: usize,
    /// Requests admitted beyond the slots, waiting for one.
    pub queue: usize,
    /// Tokens one request may hold (prompt + completion).
    pub ctx_per_slot: usize,
    /// Sequence ids: `slots` for running requests and the rest for cached prefixes.
    pub sequences: usize,
    /// Prompt tokens per step while other sequences decode: a long prompt is computed in
    /// chunks of this size so that running streams keep going between them. With nothing
    /// decoding, a step takes as many as the model's batch holds.
    pub step_tokens: usize,
    /// Reuse the KV of earlier prompts (off: every prompt is computed in full).
    pub prefix_cache: bool,
    /// Where evicted prefixes go (with the prefix cache on).
    pub spill: SpillConfig,
    /// Cached tokens that no running request reads, kept in the context while requests
    /// run; beyond it they move to the host-memory tier (when it is on). Every cell in the
    /// context costs each step's attention a look (llama.cpp scans the whole used range of
    /// the unified cache, masked), while restoring a snapshot costs a few milliseconds.
    pub idle_tokens: usize,
    /// Speculative decoding with drafts from each sequence's own context (see `draft`).
    pub speculative: bool,
}

/// A spilled prefix is restored rather than the context's shorter one used when it holds
/// at least this many more prompt tokens (restoring costs milliseconds, computing tokens
/// tens of milliseconds each).
const RESTORE_GAIN: usize = 16;

/// Draft tokens per step, at most: each needs its logits kept (a vocabulary's worth of
/// floats: 64 of Qwen's are 39 MB, held twice by llama.cpp), and a long step delays every
/// stream and every prompt waiting for its first token. On 2 cores a 64-token step costs
/// about what a 32-token one does, and twice as long a draft gains nothing per token.
const MAX_STEP_DRAFTS: usize = 64;

/// Prompt tokens per step of a request that wants their log-probabilities: each needs
/// its logits kept (a vocabulary's worth of floats).
const PROMPT_LOGPROBS_CHUNK: usize = 64;

/// A request that holds a sequence.
struct Active<M: Model> {
    job: Job<M::SamplerSpec>,
    sampler: M::Sampler,
    seq: SeqId,
    /// Its leaf in the prefix tree.
    leaf: NodeId,
    /// Tokens the sequence holds in the KV cache (its next position).
    len: usize,
    /// Next prompt index to feed; equals the prompt length once prefill is done.
    next_prompt: usize,
    /// The sampled token to feed next step, once prefill is done.
    pending: Option<Token>,
    /// Index of this sequence's logits in the last batch.
    logits_at: Option<usize>,
    generated: u32,
    cached_tokens: usize,
    /// When the last token was sampled (or the request submitted).
    last_token: Instant,
    decoder: Utf8Decoder,
    stop: StopMatcher,
    /// Log-probabilities of sampled tokens whose text has not been sent, with the byte
    /// range of the token's text in the decoded output.
    logprobs: VecDeque<(TokenLogprob, usize, usize)>,
    /// Bytes of token text decoded, and of text sent.
    decoded_bytes: usize,
    sent_bytes: usize,
    /// The prompt's log-probabilities, gathered while it is computed (when asked for).
    prompt_logprobs: Option<Vec<TokenLogprob>>,
    /// This step's prompt logits: (batch index, the prompt position they predict).
    prompt_logits: Vec<(usize, usize)>,
    /// Drafting state (with speculation on).
    drafter: Option<Drafter>,
    /// This step's draft, fed after the pending token, where its logits start, and where
    /// it came from.
    drafted: Vec<Token>,
    draft_logits_at: usize,
    draft_source: Source,
}

impl<M: Model> Active<M> {
    /// What the request has used so far: a prompt is counted once it holds a sequence.
    fn usage(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.job.request.prompt.len() as u64,
            cached_tokens: self.cached_tokens as u64,
            completion_tokens: u64::from(self.generated),
        }
    }

    /// Cells it may still add: the rest of its prompt and every token it may generate.
    fn cells_to_come(&self, ctx_per_slot: usize) -> usize {
        worst_case(&self.job.request, ctx_per_slot).saturating_sub(self.len)
    }

    fn prefilling(&self) -> bool {
        self.next_prompt < self.job.request.prompt.len()
    }
}

pub(crate) struct Engine<M: Model> {
    model: M,
    config: EngineConfig,
    tree: PrefixTree,
    /// Running requests, oldest first: prompt chunks go to the oldest.
    running: Vec<Active<M>>,
    waiting: VecDeque<Job<M::SamplerSpec>>,
    batch: Vec<BatchEntry>,
    metrics: EngineMetrics,
    spill: SpillStore<M::Snapshot>,
    /// What earlier requests read and wrote, for drafts (with speculation on).
    ngrams: Option<NgramTable>,
    /// What decode steps cost by batch size, and how drafts fare, for their length.
    costs: StepCosts,
    draft_stats: DraftStats,
    /// Whether a token's text ends a paragraph (has a blank line), as looked up so far.
    paragraph_ends: HashMap<Token, bool>,
    /// Draft tokens accepted in the current step (for the step's debug line).
    step_accepted: usize,
    /// Whether this step's batch has a logit for every token (no prompt chunk): its time
    /// then prices a decode step of its size.
    all_logits: bool,
}

/// Where a new request's cached prefix comes from.
enum Begin {
    Cached(Match),
    /// A snapshot to restore into the sequence.
    Spilled(SpillMatch),
    /// Restored: the sequence holds the prompt's first `len` tokens.
    Restored {
        len: usize,
        tier: Tier,
    },
}

/// The engine state for `model`, with the spill tier's files indexed.
pub(crate) fn new<M: Model>(model: M, config: EngineConfig, metrics: EngineMetrics) -> Engine<M> {
    let batch = Vec::with_capacity(model.batch_capacity());
    let tree = PrefixTree::new(config.sequences.max(config.slots));
    let spill = SpillStore::open(if config.prefix_cache { config.spill.clone() } else { SpillConfig::default() });
    let ngrams = config.speculative.then(NgramTable::default);
    let costs = StepCosts::new(model.batch_capacity());
    let engine = Engine {
        model,
        config,
        tree,
        running: Vec::new(),
        waiting: VecDeque::new(),
        batch,
        metrics,
        spill,
        ngrams,
        costs,
        draft_stats: DraftStats::default(),
        paragraph_ends: HashMap::new(),
        step_accepted: 0,
        all_logits: false,
    };
    engine.report();
    engine
}

/// The engine thread's loop, until shutdown or until every handle is gone.
pub(crate) fn run<M: Model>(mut engine: Engine<M>, jobs: std_mpsc::Receiver<Message<M::SamplerSpec>>) {
    loop {
        let next = if engine.running.is_empty() && engine.waiting.is_empty() {
            jobs.recv().ok()
        } else {
            jobs.try_recv().ok()
        };
        match next {
            Some(Message::Job(job)) => {
                engine.waiting.push_back(job);
                continue; // take every queued message before the step
            }
            Some(Message::Shutdown(done)) => {
                engine.shut_down();
                let _ = done.send(());
                return;
            }
            // Every handle is gone (when idle) or nothing is queued (when busy).
            None if engine.running.is_empty() && engine.waiting.is_empty() => return,
            None => {}
        }
        engine.step();
        engine.report();
    }
}

impl<M: Model> Engine<M> {
    fn step(&mut self) {
        // Departed clients are never scheduled, and running ones stop here.
        self.waiting.retain(|j| !j.events.is_closed());
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].job.events.is_closed() {
                self.finish(i, FinishReason::Cancelled);
            } else {
                i += 1;
            }
        }
        self.admit();
        self.spill_idle();
        self.build_batch();
        if self.batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut decoded = self.model.decode(&self.batch);
        if decoded.is_ok() && self.all_logits {
            self.costs.observe(self.batch.len(), started.elapsed());
        }
        // The model may pack cells less tightly than the count of tokens: make room.
        while decoded == Err(ModelError::NoKvSpace) {
            let Some(victim) = self.tree.lru_idle_leaf(None) else { break };
            self.evict(victim);
            decoded = self.model.decode(&self.batch);
        }
        if let Err(e) = decoded {
            warn!(error = %e, tokens = self.batch.len(), "decode failed; failing the batch");
            self.fail_all(&e);
            return;
        }
        let decode_time = started.elapsed();
        self.read_prompt_logprobs();
        // One line per step at debug level: where the time goes per token (a profile of
        // speculation is these lines summed, see docs/benchmarks.md).
        let drafted: usize = self.running.iter().map(|a| a.drafted.len()).sum();
        let sequences = self.running.iter().filter(|a| a.logits_at.is_some()).count();
        self.step_accepted = 0;
        let mut i = 0;
        while i < self.running.len() {
            if !self.sample_and_emit(i) {
                i += 1;
            }
        }
        debug!(
            tokens = self.batch.len(),
            sequences,
            drafted,
            accepted = self.step_accepted,
            decode_us = decode_time.as_micros() as u64,
            sample_us = (started.elapsed() - decode_time).as_micros() as u64,
            "step"
        );
    }

    /// Takes this step's prompt log-probabilities, and sends a prompt's once it is computed.
    fn read_prompt_logprobs(&mut self) {
        for a in &mut self.running {
            let Some(gathered) = a.prompt_logprobs.as_mut() else { continue };
            let prompt = &a.job.request.prompt;
            let top = usize::from(a.job.request.logprobs.unwrap_or(0));
            for (index, pos) in a.prompt_logits.drain(..) {
                gathered.push(token_logprob(&self.model, index, prompt[pos], top));
            }
            if !a.prefilling() {
                let logprobs = a.prompt_logprobs.take().unwrap_or_default();
                let _ = a.job.events.send(GenerationEvent::Output {
                    choice: a.job.request.choice,
                    output: Output::Prompt { logprobs },
                });
            }
        }
    }

    fn report(&self) {
        let m = &self.metrics;
        m.kv(self.tree.cells(), self.tree.idle_cells(), self.model.kv_capacity());
        m.spill(self.spill.stats());
        m.queue_depth.set(self.waiting.len() as i64);
        m.running.set(self.running.len() as i64);
        #[cfg(test)]
        self.tree.check();
    }

    /// Moves waiting requests into sequences, oldest first, while slots and KV cells
    /// allow. A request that shares a long prefix with a prompt still being computed waits
    /// for it instead of computing the same tokens alongside.
    fn admit(&mut self) {
        let mut i = 0;
        while self.running.len() < self.config.slots && i < self.waiting.len() {
            let request = &self.waiting[i].request;
            let prompt = &request.prompt;
            let limit = prompt.len().saturating_sub(1); // the last token's logits start generation
            if self.config.prefix_cache && !request.prompt_logprobs {
                let cached = self.tree.find(prompt, limit).len;
                if self.running.iter().any(|a| a.prefilling() && worth_waiting_for(a, prompt, limit, cached)) {
                    i += 1;
                    continue;
                }
            }
            match self.make_room(i) {
                Room::Ready(seq, Begin::Spilled(s)) => {
                    // A snapshot that does not load is dropped: then look again.
                    if let Some(tier) = self.spill.restore(&mut self.model, s, seq) {
                        self.model.remove(seq, s.len);
                        let Some(job) = self.waiting.remove(i) else { return };
                        self.start(job, seq, Begin::Restored { len: s.len, tier });
                    }
                }
                Room::Ready(seq, begin) => {
                    let Some(job) = self.waiting.remove(i) else { return };
                    self.start(job, seq, begin);
                }
                Room::Later => return,
                Room::Never => {
                    let Some(job) = self.waiting.remove(i) else { return };
                    job.refuse("the request does not fit in the KV cache (raise the KV cache size)".into());
                }
            }
        }
    }

    /// Finds the cached prefix of waiting request `i` and a sequence for it, dropping idle
    /// cached prefixes (least recently used first) until its worst case fits in the KV
    /// cells beside what running requests may still add.
    fn make_room(&mut self, i: usize) -> Room {
        let request = &self.waiting[i].request;
        // A prompt whose log-probabilities are wanted is computed whole: a cached prefix
        // has no logits.
        let reuse = self.config.prefix_cache && !request.prompt_logprobs;
        let limit = if reuse { request.prompt.len().saturating_sub(1) } else { 0 };
        let capacity = self.model.kv_capacity();
        let ctx = self.config.ctx_per_slot;
        let promised: usize = self.running.iter().map(|a| a.cells_to_come(ctx)).sum();
        loop {
            // Dropping a leaf may merge nodes on the path: find the prefix again each time.
            let m = self.tree.find(&request.prompt, limit);
            let worst = worst_case(request, ctx);
            let spilled = self.spill.find(&request.prompt, limit).filter(|s| s.len >= m.len + RESTORE_GAIN);
            if let Some(s) = spilled {
                // The evictions below spill too; they must not push out what this restores.
                self.spill.touch(s);
            }
            let (seq, need, begin) = match spilled {
                // A snapshot is restored whole before it is trimmed to the prompt.
                Some(s) => (self.tree.free_sequence(), worst.max(s.held), Begin::Spilled(s)),
                None => (
                    self.tree.idle_owner_at_end(m).or_else(|| self.tree.free_sequence()),
                    worst - m.len,
                    Begin::Cached(m),
                ),
            };
            if let Some(seq) = seq.filter(|_| self.tree.cells() + promised + need <= capacity) {
                return Room::Ready(seq, begin);
            }
            // With nothing running, even the prefix itself may go: there is no one to wait for.
            let victim = self.tree.lru_idle_leaf(Some(m)).or_else(|| {
                if self.running.is_empty() {
                    self.tree.lru_idle_leaf(None)
                } else {
                    None
                }
            });
            let Some(victim) = victim else {
                return if self.running.is_empty() { Room::Never } else { Room::Later };
            };
            evict(&mut self.tree, &mut self.spill, &mut self.model, &self.metrics, victim);
        }
    }

    /// While requests run, moves cached prefixes beyond `idle_tokens` out of the context
    /// to the host-memory tier, least recently used first.
    fn spill_idle(&mut self) {
        // Idle cells are a part of all cells: nothing to count while all fit.
        if self.running.is_empty() || !self.spill.in_memory() || self.tree.cells() <= self.config.idle_tokens {
            return;
        }
        while self.tree.idle_cells() > self.config.idle_tokens {
            let Some(victim) = self.tree.lru_idle_leaf(None) else { break };
            self.evict(victim);
        }
    }

    /// Drops an idle cached prefix, saving it to the spill tier first.
    fn evict(&mut self, victim: NodeId) {
        evict(&mut self.tree, &mut self.spill, &mut self.model, &self.metrics, victim);
    }

    /// Ends the engine: requests still running are cancelled and what the cache holds (in
    /// the context and in memory) is written to the disk tier, so that the next process
    /// starts warm.
    fn shut_down(&mut self) {
        while !self.running.is_empty() {
            self.finish(0, FinishReason::Cancelled);
        }
        self.waiting.clear();
        for leaf in self.tree.idle_leaves() {
            if let (Some(owner), tokens) = self.tree.leaf_path(leaf) {
                self.spill.persist(&mut self.model, owner, tokens);
            }
        }
        // Then the memory tier, through an emptied context.
        self.model.clear();
        self.tree.clear();
        self.spill.persist_memory(&mut self.model, 0);
        self.report();
    }

    /// Starts `job` on sequence `seq` from its cached prefix.
    fn start(&mut self, mut job: Job<M::SamplerSpec>, seq: SeqId, begin: Begin) {
        let sampler = match job.request.sampler.take().map(|spec| self.model.new_sampler(spec)) {
            Some(Ok(s)) => s,
            failed => {
                let message = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => "the request has no sampler".into(),
                };
                job.refuse(message);
                if matches!(begin, Begin::Restored { .. }) {
                    self.model.remove(seq, 0);
                }
                return;
            }
        };
        let (leaf, reused, tier) = match begin {
            Begin::Cached(m) => {
                self.tree.touch(m);
                let (leaf, reused) = self.tree.start(seq, m, &mut self.model);
                (leaf, reused, Tier::Kv)
            }
            Begin::Restored { len, tier } => (self.tree.adopt(seq, &job.request.prompt[..len]), len, tier),
            Begin::Spilled(_) => unreachable!("a snapshot is restored before its request starts"),
        };
        debug!(seq, prompt = job.request.prompt.len(), reused, tier = tier.label(), "admitted");
        self.metrics.admitted(job.request.prompt.len(), reused, tier);
        let last_token = job.submitted;
        let stop = StopMatcher::new(job.request.stop.clone());
        let drafter = (self.config.speculative && job.request.speculate).then(|| Drafter::new(&job.request.prompt));
        if let Some(table) = self.ngrams.as_mut() {
            table.learn(&job.request.prompt);
        }
        // Nothing predicts a prompt's first token: its entry has no log-probability.
        let prompt_logprobs = job.request.prompt_logprobs.then(|| {
            let bytes = self.model.token_label(job.request.prompt[0]);
            vec![TokenLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob: None,
                top: vec![],
            }]
        });
        self.running.push(Active {
            job,
            sampler,
            seq,
            leaf,
            len: reused,
            next_prompt: reused,
            pending: None,
            logits_at: None,
            generated: 0,
            cached_tokens: reused,
            last_token,
            decoder: Utf8Decoder::default(),
            stop,
            logprobs: VecDeque::new(),
            decoded_bytes: 0,
            sent_bytes: 0,
            prompt_logprobs,
            prompt_logits: Vec::new(),
            drafter,
            drafted: Vec::new(),
            draft_logits_at: 0,
            draft_source: Source { from: From::Table, after: Outcome::None },
        });
    }

    /// One token per decoding sequence first (they are latency-bound), then prompt chunks,
    /// oldest request first, within the step's budget.
    fn build_batch(&mut self) {
        let capacity = self.model.batch_capacity();
        self.batch.clear();
        for a in &mut self.running {
            a.logits_at = None;
            a.drafted.clear();
            if let Some(token) = a.pending.take() {
                a.logits_at = Some(self.batch.len());
                self.batch.push(BatchEntry { token, pos: a.len, seq: a.seq, logits: true });
                self.tree.extend(a.leaf, &[token]);
                a.len += 1;
            }
        }
        let decoding = self.batch.len();
        let prefilling = self.running.iter().any(Active::prefilling);
        self.all_logits = !prefilling;
        let mut budget = if decoding == 0 {
            capacity
        } else {
            // A quarter of the step at least, so that prompts progress under many streams.
            let step = self.config.step_tokens.max(4);
            step.saturating_sub(decoding).max(step / 4).min(capacity - decoding)
        };
        // Drafts never take a prompt's share of the step: a request waiting for its first
        // token is not slowed by others' drafts.
        let draft_room = MAX_STEP_DRAFTS.min(capacity - decoding - if prefilling { budget } else { 0 });
        self.add_drafts(draft_room);
        budget = budget.min(capacity - self.batch.len());
        for a in &mut self.running {
            let prompt = &a.job.request.prompt;
            let every_logit = a.prompt_logprobs.is_some();
            let cap = if every_logit { PROMPT_LOGPROBS_CHUNK } else { usize::MAX };
            let take = (prompt.len() - a.next_prompt).min(budget).min(cap);
            if take == 0 {
                continue;
            }
            budget -= take;
            let chunk = &prompt[a.next_prompt..a.next_prompt + take];
            for (k, &token) in chunk.iter().enumerate() {
                let at = a.next_prompt + k;
                let last = at + 1 == prompt.len();
                if last {
                    a.logits_at = Some(self.batch.len());
                } else if every_logit {
                    a.prompt_logits.push((self.batch.len(), at + 1));
                }
                self.batch.push(BatchEntry { token, pos: a.len + k, seq: a.seq, logits: last || every_logit });
            }
            self.tree.extend(a.leaf, chunk);
            a.next_prompt += take;
            a.len += take;
        }
    }

    /// After each decoding sequence's token, its draft: from its own context, else from
    /// the n-gram table, cut to the step's draft lengths (see `draft::DraftPlan`), within
    /// `room` tokens for all.
    fn add_drafts(&mut self, room: usize) {
        let Some(table) = self.ngrams.as_ref() else { return };
        let decoding = self.batch.len();
        let mut room_left = room;
        let (model, paragraph_ends) = (&self.model, &mut self.paragraph_ends);
        let mut ends_paragraph = |token: Token| {
            *paragraph_ends.entry(token).or_insert_with(|| crate::draft::ends_paragraph(&model.token_bytes(token)))
        };
        for a in &mut self.running {
            let (Some(drafter), Some(_)) = (a.drafter.as_mut(), a.logits_at) else { continue };
            // Every accepted draft token is one more sampled token and one more cell: the
            // sampled ones stay within `max_tokens`, the cells within the context.
            let room = ((a.job.request.max_tokens - a.generated).saturating_sub(1) as usize)
                .min(self.config.ctx_per_slot.saturating_sub(a.len + 1))
                .min(room_left)
                .min(crate::draft::MAX_DRAFT);
            let (mut own, matched) = drafter.lookup(room);
            let mut from_table = if own.len() < room { table.chain(drafter.context(), room) } else { Vec::new() };
            drafter.end_at_paragraph(&mut own, &mut ends_paragraph);
            drafter.end_at_paragraph(&mut from_table, &mut ends_paragraph);
            (a.drafted, a.draft_source) = if from_table.len() > own.len() {
                (from_table, drafter.source(From::Table))
            } else {
                (own, drafter.source(From::Context(matched)))
            };
            // Nothing after an end of generation is ever accepted (sampling stops there):
            // a draft copied past the end of an earlier message ends with it.
            if let Some(end) = a.drafted.iter().position(|&t| model.is_end_of_generation(t)) {
                a.drafted.truncate(end + 1);
            }
            room_left -= a.drafted.len();
        }
        let stats = &self.draft_stats;
        let drafting: Vec<usize> = (0..self.running.len()).filter(|&i| !self.running[i].drafted.is_empty()).collect();
        let proposals: Vec<(usize, f64)> = drafting
            .iter()
            .map(|&i| (self.running[i].drafted.len(), stats.acceptance(self.running[i].draft_source)))
            .collect();
        let lengths = if proposals.is_empty() { vec![] } else { DraftPlan::lengths(&proposals, decoding, &self.costs) };
        for (&i, &length) in drafting.iter().zip(&lengths) {
            let a = &mut self.running[i];
            match (length, a.drafter.as_mut()) {
                (0, Some(drafter)) => drafter.shadow(a.draft_source, std::mem::take(&mut a.drafted)),
                _ => a.drafted.truncate(length),
            }
        }
        for a in &mut self.running {
            a.draft_logits_at = self.batch.len();
            for (k, &token) in a.drafted.iter().enumerate() {
                self.batch.push(BatchEntry { token, pos: a.len + k, seq: a.seq, logits: true });
            }
        }
    }

    /// Samples running request `i`'s next tokens and emits their text: one, or with a
    /// draft, one more for each draft token the samples agree with. Each sample is drawn as
    /// without a draft, given the tokens before it, so the output's distribution is the
    /// model's; a draft token that agrees with the sample is context already computed, the
    /// rest of the draft is dropped from the KV cache. Returns true when the request ended
    /// (and was removed).
    fn sample_and_emit(&mut self, i: usize) -> bool {
        let a = &mut self.running[i];
        let Some(mut index) = a.logits_at.take() else { return false };
        let drafted = std::mem::take(&mut a.drafted);
        let top = a.job.request.logprobs.map(usize::from);
        let mut sampled: Vec<(Token, Option<TokenLogprob>)> = Vec::with_capacity(drafted.len() + 1);
        loop {
            let token = self.model.sample(&mut a.sampler, index);
            sampled.push((token, top.map(|top| token_logprob(&self.model, index, token, top))));
            let k = sampled.len() - 1;
            if drafted.get(k) != Some(&token) || self.model.is_end_of_generation(token) {
                break;
            }
            index = a.draft_logits_at + k;
        }
        if !drafted.is_empty() {
            // Draft tokens now in the sequence's KV; the last sampled token is not, even
            // when it is the draft's (an end of generation ends the loop above).
            let accepted = sampled.len() - 1;
            // Draft tokens the model agreed with, that one included: what the draft is
            // judged by.
            let agreed = accepted + usize::from(drafted.get(accepted) == Some(&sampled[accepted].0));
            self.tree.extend(a.leaf, &drafted[..accepted]);
            a.len += accepted;
            if accepted < drafted.len() {
                self.model.remove(a.seq, a.len);
            }
            if agreed < drafted.len() && tracing::enabled!(Level::TRACE) {
                let context = a.drafter.as_ref().map_or(&[][..], |d| d.context());
                trace_refused(&self.model, a.seq, context, &drafted, agreed, sampled[accepted].0);
            }
            self.draft_stats.record(a.draft_source, drafted.len(), agreed);
            if let Some(d) = a.drafter.as_mut() {
                d.record(drafted.len(), agreed);
            }
            self.metrics.drafted(drafted.len(), agreed);
            self.step_accepted += agreed;
        }
        let last = sampled.len() - 1;
        for (k, (token, logprob)) in sampled.into_iter().enumerate() {
            if let Some(reason) = self.emit(i, token, logprob, k == last) {
                self.finish(i, reason);
                return true;
            }
            if k == last {
                self.running[i].pending = Some(token);
            }
        }
        false
    }

    /// Emits one sampled token of running request `i`: its text, unless it ends the
    /// request (then how). `to_feed`: the token is not in the KV cache yet, so it needs a
    /// free position in the context.
    fn emit(&mut self, i: usize, token: Token, logprob: Option<TokenLogprob>, to_feed: bool) -> Option<FinishReason> {
        let a = &mut self.running[i];
        let now = Instant::now();
        self.metrics.token(now - a.last_token, a.generated == 0);
        a.last_token = now;
        a.generated += 1;
        if let Some(shadowed) = a.drafter.as_mut().and_then(|d| d.push(token)) {
            self.draft_stats.record(shadowed.source, shadowed.drafted, shadowed.agreed);
        }
        if self.model.is_end_of_generation(token) && !a.job.request.ignore_eos {
            flush(a);
            return Some(FinishReason::Stop);
        }
        let bytes = self.model.token_bytes(token);
        if let Some(lp) = logprob {
            let start = a.decoded_bytes;
            a.decoded_bytes += bytes.len();
            a.logprobs.push_back((lp, start, a.decoded_bytes));
        }
        let text = a.decoder.push(&bytes);
        let matched = a.stop.push(&text);
        if matched.stopped {
            send_text(a, matched.text, Release::Begun);
            return Some(FinishReason::Stop);
        }
        send_text(a, matched.text, Release::Sent);
        if a.generated >= a.job.request.max_tokens || (to_feed && a.len + 1 >= self.config.ctx_per_slot) {
            flush(a);
            return Some(FinishReason::Length);
        }
        None
    }

    /// Ends running request `i`; what its sequence computed stays cached (unless the cache
    /// is off).
    fn finish(&mut self, i: usize, reason: FinishReason) {
        let mut a = self.running.remove(i);
        if let (Some(table), Some(drafter)) = (self.ngrams.as_mut(), a.drafter.as_ref()) {
            // What it wrote (and the n-grams reaching back into its prompt).
            let from = a.job.request.prompt.len().saturating_sub(crate::draft::NGRAM);
            table.learn(&drafter.context()[from..]);
        }
        let usage = a.usage();
        debug!(seq = a.seq, ?reason, ?usage, "finished");
        let _ = a.job.events.send(GenerationEvent::ChoiceEnded { choice: a.job.request.choice, reason });
        a.job.send_receipt(Receipt { usage, finish: Some(reason), ..Default::default() });
        self.tree.park(a.leaf, &mut self.model);
        if !self.config.prefix_cache {
            while let Some(leaf) = self.tree.lru_idle_leaf(None) {
                let _ = self.tree.release(leaf, &mut self.model);
            }
        }
    }

    /// A failed decode leaves the KV state unknown: every running request fails and the
    /// cache starts over.
    fn fail_all(&mut self, error: &ModelError) {
        for mut a in self.running.drain(..) {
            let _ = a.job.events.send(GenerationEvent::Failed(error.to_string()));
            let usage = a.usage();
            a.job.send_receipt(Receipt { usage, finish: None, ..Default::default() });
        }
        self.model.clear();
        self.tree.clear();
    }
}

/// Drops an idle cached prefix from `tree`, saving it to `spill` first. (A function of the
/// fields it needs, so that callers may hold a borrow of the waiting queue.)
fn evict<M: Model>(
    tree: &mut PrefixTree,
    spill: &mut SpillStore<M::Snapshot>,
    model: &mut M,
    metrics: &EngineMetrics,
    victim: NodeId,
) {
    // A short leaf is an answer's tail or a question after a shared prefix: not worth a
    // snapshot of the whole path (the prefix is saved when its own turn comes).
    if spill.enabled() && tree.own_tokens(victim) >= MIN_SPILL_TOKENS {
        if let (Some(owner), tokens) = tree.leaf_path(victim) {
            spill.save(model, owner, tokens);
        }
    }
    let freed = tree.release(victim, model);
    // With the victim's cells free, a memory copy over budget can pass through the
    // context on its way to a file.
    spill.enforce_budgets(model, tree.free_sequence());
    metrics.evicted_tokens.inc_by(freed as u64);
}

/// Whether a waiting request can start.
enum Room {
    Ready(SeqId, Begin),
    /// Not before running requests end.
    Later,
    /// Not even in an empty cache.
    Never,
}

/// The most cells a request's sequence may hold: generation stops at the context's end.
fn worst_case<S>(request: &SeqRequest<S>, ctx_per_slot: usize) -> usize {
    (request.prompt.len() + request.max_tokens as usize).min(ctx_per_slot.max(request.prompt.len() + 1))
}

/// Whether a prompt should wait for running request `a`'s prefill: `a` is about to compute
/// more of this prompt than is cached. Waiting costs nothing: `a` is older, so its prompt
/// gets each step's budget first, and the tokens would be computed twice otherwise.
fn worth_waiting_for<M: Model>(a: &Active<M>, prompt: &[Token], limit: usize, cached: usize) -> bool {
    let shared = common_prefix(&a.job.request.prompt, prompt).min(limit);
    shared > a.len.max(cached)
}

/// Which pending log-probabilities go with text being sent.
enum Release {
    /// Those of tokens whose text has been sent whole.
    Sent,
    /// Those of tokens whose text has begun to be sent (a stop string cut the rest).
    Begun,
    /// All: generation ended.
    All,
}

fn send_text<M: Model>(active: &mut Active<M>, text: String, release: Release) {
    active.sent_bytes += text.len();
    let mut logprobs = Vec::new();
    while let Some(&(_, start, end)) = active.logprobs.front() {
        let released = match release {
            Release::Sent => end <= active.sent_bytes,
            Release::Begun => start < active.sent_bytes,
            Release::All => true,
        };
        if !released {
            break;
        }
        if let Some((lp, _, _)) = active.logprobs.pop_front() {
            logprobs.push(lp);
        }
    }
    if matches!(release, Release::Begun) {
        active.logprobs.clear();
    }
    if !text.is_empty() || !logprobs.is_empty() {
        let output = Output::Text { text, logprobs };
        let _ = active.job.events.send(GenerationEvent::Output { choice: active.job.request.choice, output });
    }
}

/// Emits text held back by the decoder or the stop matcher when generation ends for
/// another reason than a stop string.
fn flush<M: Model>(active: &mut Active<M>) {
    let tail = active.decoder.finish();
    let matched = active.stop.push(&tail);
    let mut text = matched.text;
    if matched.stopped {
        send_text(active, text, Release::Begun);
        return;
    }
    text.push_str(&active.stop.finish());
    send_text(active, text, Release::All);
}

/// `token`'s log-probability entry at batch entry `index`.
fn token_logprob<M: Model>(model: &M, index: usize, token: Token, top: usize) -> TokenLogprob {
    let lp = model.logprobs(index, token, top);
    let label = |t: Token| {
        let bytes = model.token_label(t);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (text, bytes) = label(token);
    TokenLogprob {
        token: text,
        bytes,
        logprob: Some(lp.chosen),
        top: lp
            .top
            .into_iter()
            .map(|(t, logprob)| {
                let (token, bytes) = label(t);
                TopLogprob { token, bytes, logprob }
            })
            .collect(),
    }
}

/// Where a draft was refused, at trace level (profiling drafts): the text before it, the
/// part the model agreed with, what the draft wanted next and what the model wrote.
fn trace_refused<M: Model>(model: &M, seq: SeqId, context: &[Token], drafted: &[Token], agreed: usize, wrote: Token) {
    let text = |tokens: &[Token]| {
        String::from_utf8_lossy(&tokens.iter().flat_map(|&t| model.token_bytes(t)).collect::<Vec<_>>()).into_owned()
    };
    trace!(
        seq,
        drafted = drafted.len(),
        agreed,
        before = ?text(&context[context.len().saturating_sub(12)..]),
        kept = ?text(&drafted[..agreed]),
        wanted = ?text(&drafted[agreed..]),
        wrote = ?text(&[wrote]),
        "draft refused"
    );
}
