//! Engine tests against a fake model that keeps a unified KV cache as llama.cpp does (cells
//! with positions and sets of sequences) and checks every decode against it. Its next
//! token is a hash of everything its sequence can see, so a wrong cache hit changes the
//! output.

use std::collections::BTreeSet;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tm_backend::{BackendError, FinishReason, GenerationEvent, Output, Receipt, TokenLogprob, TokenUsage};

use crate::model::{BatchEntry, KvCells, KvSnapshots, Logprobs, Model, ModelError, SeqId, Token};
use crate::{EngineConfig, EngineMetrics, SchedulerHandle, SeqRequest, SpillConfig, Tier};

#[derive(Debug, Clone)]
struct Cell {
    pos: usize,
    token: Token,
    seqs: BTreeSet<SeqId>,
}

/// The fake's KV cache, shared with the test.
#[derive(Debug, Default)]
struct Kv {
    cells: Vec<Option<Cell>>,
    batches: Vec<Vec<BatchEntry>>,
}

impl Kv {
    fn used(&self) -> usize {
        self.cells.iter().flatten().count()
    }

    /// The tokens `seq` sees, in position order; they must be positions 0..n.
    fn visible(&self, seq: SeqId) -> Vec<Token> {
        let mut cells: Vec<&Cell> = self.cells.iter().flatten().filter(|c| c.seqs.contains(&seq)).collect();
        cells.sort_by_key(|c| c.pos);
        for (i, c) in cells.iter().enumerate() {
            assert_eq!(c.pos, i, "sequence {seq} has a gap at {i}");
        }
        cells.iter().map(|c| c.token).collect()
    }
}

/// The fake's distribution: its next token has probability 1/2, each other one of the 26
/// tokens 1/50.
const NEXT_LOGPROB: f32 = -std::f32::consts::LN_2;
fn other_logprob() -> f32 {
    (1.0f32 / 50.0).ln()
}

/// The next token after a context: never 0 (the end-of-generation token).
fn next_token(context: &[Token]) -> Token {
    let h = context.iter().fold(17u64, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64 + 7));
    (h % 25) as Token + 1
}

fn letter(t: Token) -> char {
    (b'a' + (t % 26) as u8) as char
}

/// A model that repeats its context: after a pair of tokens seen before, what followed
/// its latest occurrence (else `next_token`). Drafts from the context are what it says.
fn copying(context: &[Token]) -> Token {
    let n = context.len();
    if n >= 2 {
        let pair = &context[n - 2..];
        if let Some(p) = (0..n - 2).rev().find(|&p| &context[p..p + 2] == pair) {
            return context[p + 2];
        }
    }
    next_token(context)
}

/// What greedy generation of `n` tokens after `prompt` gives, computed directly.
fn reference(prompt: &[Token], n: usize) -> String {
    reference_with(next_token, prompt, n)
}

fn reference_with(predict: fn(&[Token]) -> Token, prompt: &[Token], n: usize) -> String {
    let mut context = prompt.to_vec();
    let mut text = String::new();
    for _ in 0..n {
        let t = predict(&context);
        text.push(letter(t));
        context.push(t);
    }
    text
}

struct FakeModel {
    kv: Arc<Mutex<Kv>>,
    /// Its next token after a context (the likeliest one, when sampling).
    predict: fn(&[Token]) -> Token,
    next: Vec<Token>,
    /// When set, every decode waits for one message (or for the sender to go away).
    gate: Option<std_mpsc::Receiver<()>>,
    /// What a decode of so many tokens takes (so that the engine's measured step costs
    /// grow with the batch, as a real model's do).
    step_cost: Box<dyn Fn(usize) -> Duration + Send>,
}

impl KvCells for FakeModel {
    fn remove(&mut self, seq: SeqId, from: usize) {
        for cell in self.kv.lock().unwrap().cells.iter_mut() {
            if let Some(c) = cell {
                if c.pos >= from {
                    c.seqs.remove(&seq);
                }
                if c.seqs.is_empty() {
                    *cell = None;
                }
            }
        }
    }
    fn copy(&mut self, src: SeqId, dst: SeqId, len: usize) -> bool {
        let mut kv = self.kv.lock().unwrap();
        assert!(kv.visible(dst).is_empty(), "copy into a sequence that holds cells");
        for c in kv.cells.iter_mut().flatten() {
            if c.seqs.contains(&src) && c.pos < len {
                c.seqs.insert(dst);
            }
        }
        true
    }
    fn clear(&mut self) {
        self.kv.lock().unwrap().cells.iter_mut().for_each(|c| *c = None);
    }
}

impl FakeModel {
    /// The cells of `seq` as (position, token).
    fn cells_of(&self, seq: SeqId) -> Vec<(usize, Token)> {
        let kv = self.kv.lock().unwrap();
        kv.visible(seq).into_iter().enumerate().collect()
    }

    /// Gives `seq` new cells holding `cells`; false when there is no room.
    fn insert(&mut self, seq: SeqId, cells: &[(usize, Token)]) -> bool {
        let mut kv = self.kv.lock().unwrap();
        if kv.cells.iter().filter(|c| c.is_none()).count() < cells.len() {
            return false;
        }
        for &(pos, token) in cells {
            let free = kv.cells.iter().position(Option::is_none).unwrap();
            kv.cells[free] = Some(Cell { pos, token, seqs: BTreeSet::from([seq]) });
        }
        true
    }
}

impl KvSnapshots for FakeModel {
    type Snapshot = Vec<(usize, Token)>;
    fn snapshot(&mut self, seq: SeqId) -> Option<Self::Snapshot> {
        Some(self.cells_of(seq))
    }
    fn snapshot_bytes(snapshot: &Self::Snapshot) -> u64 {
        8 * snapshot.len() as u64
    }
    fn restore(&mut self, snapshot: &Self::Snapshot, seq: SeqId) -> bool {
        self.insert(seq, snapshot)
    }
    fn save_file(&mut self, seq: SeqId, tokens: &[Token], path: &std::path::Path) -> Option<u64> {
        let cells = self.cells_of(seq);
        assert_eq!(cells.iter().map(|c| c.1).collect::<Vec<_>>(), tokens);
        let text: Vec<String> = tokens.iter().map(Token::to_string).collect();
        std::fs::write(path, text.join(",")).ok()?;
        Some(std::fs::metadata(path).ok()?.len())
    }
    fn load_file(&mut self, path: &std::path::Path, seq: SeqId, tokens: &[Token]) -> bool {
        let Ok(text) = std::fs::read_to_string(path) else { return false };
        let read: Vec<Token> = text.split(',').filter_map(|t| t.parse().ok()).collect();
        read == tokens && self.insert(seq, &read.into_iter().enumerate().collect::<Vec<_>>())
    }
}

/// Sampling from the fake's distribution when a request has a seed: its prediction with
/// probability `PREDICTED`, else any other of the tokens 1..=25, evenly. Greedy without.
const PREDICTED: f64 = 0.6;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

impl Model for FakeModel {
    type Sampler = Option<u64>;
    type SamplerSpec = Option<u64>;
    fn batch_capacity(&self) -> usize {
        8
    }
    fn kv_capacity(&self) -> usize {
        self.kv.lock().unwrap().cells.len()
    }
    fn new_sampler(&self, seed: Option<u64>) -> Result<Option<u64>, ModelError> {
        Ok(seed.map(|s| s | 1))
    }
    fn decode(&mut self, batch: &[BatchEntry]) -> Result<(), ModelError> {
        if let Some(gate) = &self.gate {
            if gate.recv().is_err() {
                self.gate = None;
            }
        }
        assert!(!batch.is_empty() && batch.len() <= self.batch_capacity());
        let took = (self.step_cost)(batch.len());
        if !took.is_zero() {
            std::thread::sleep(took);
        }
        let mut kv = self.kv.lock().unwrap();
        self.next.clear();
        for e in batch {
            assert_eq!(kv.visible(e.seq).len(), e.pos, "positions must be contiguous per sequence");
            let Some(free) = kv.cells.iter().position(Option::is_none) else { return Err(ModelError::NoKvSpace) };
            kv.cells[free] = Some(Cell { pos: e.pos, token: e.token, seqs: BTreeSet::from([e.seq]) });
            self.next.push((self.predict)(&kv.visible(e.seq)));
        }
        kv.batches.push(batch.to_vec());
        Ok(())
    }
    fn sample(&mut self, rng: &mut Option<u64>, index: usize) -> Token {
        let predicted = self.next[index];
        let Some(state) = rng.as_mut() else { return predicted };
        if (xorshift(state) % 1_000_000) as f64 / 1e6 < PREDICTED {
            return predicted;
        }
        let others: Vec<Token> = (1..=25).filter(|&t| t != predicted).collect();
        others[(xorshift(state) % others.len() as u64) as usize]
    }
    fn logprobs(&self, index: usize, token: Token, top: usize) -> Logprobs {
        let next = self.next[index];
        let chosen = if token == next { NEXT_LOGPROB } else { other_logprob() };
        let others = (0..26).filter(|&t| t != next).map(|t| (t, other_logprob()));
        Logprobs { chosen, top: std::iter::once((next, NEXT_LOGPROB)).chain(others).take(top).collect() }
    }
    fn is_end_of_generation(&self, token: Token) -> bool {
        token == 0
    }
    fn token_bytes(&self, token: Token) -> Vec<u8> {
        vec![letter(token) as u8]
    }
}

struct Harness {
    handle: SchedulerHandle<Option<u64>>,
    kv: Arc<Mutex<Kv>>,
    metrics: EngineMetrics,
}

struct Setup {
    slots: usize,
    queue: usize,
    cells: usize,
    sequences: usize,
    step_tokens: usize,
    prefix_cache: bool,
    spill: SpillConfig,
    idle_tokens: usize,
    gate: Option<std_mpsc::Receiver<()>>,
    speculative: bool,
    predict: fn(&[Token]) -> Token,
    /// What a decode takes: this, plus as much again per 16 tokens...
    step_time: Duration,
    /// ...unless this says otherwise: what a decode of so many tokens takes.
    step_cost: Option<fn(usize) -> Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            slots: 2,
            queue: 4,
            cells: 256,
            sequences: 8,
            step_tokens: 8,
            prefix_cache: true,
            spill: SpillConfig::default(),
            idle_tokens: 1024,
            gate: None,
            speculative: false,
            predict: next_token,
            step_time: Duration::ZERO,
            step_cost: None,
        }
    }
}

fn start(setup: Setup) -> Harness {
    let kv = Arc::new(Mutex::new(Kv { cells: vec![None; setup.cells], batches: Vec::new() }));
    let config = EngineConfig {
        slots: setup.slots,
        queue: setup.queue,
        ctx_per_slot: 64,
        sequences: setup.sequences,
        step_tokens: setup.step_tokens,
        prefix_cache: setup.prefix_cache,
        spill: setup.spill,
        idle_tokens: setup.idle_tokens,
        speculative: setup.speculative,
    };
    let metrics = EngineMetrics::default();
    let (k, gate, predict, step_time) = (kv.clone(), setup.gate, setup.predict, setup.step_time);
    let step_cost: Box<dyn Fn(usize) -> Duration + Send> = match setup.step_cost {
        Some(cost) => Box::new(cost),
        None => Box::new(move |tokens| step_time + step_time * tokens as u32 / 16),
    };
    let handle = SchedulerHandle::spawn("fake", config, metrics.clone(), move || {
        Ok(FakeModel { kv: k, predict, next: Vec::new(), gate, step_cost })
    })
    .unwrap();
    Harness { handle, kv, metrics }
}

impl Harness {
    /// Waits until the engine is idle and checks that its count of used cells is the
    /// fake's.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.handle.in_flight() > 0 || self.metrics.running.get() > 0 {
            assert!(Instant::now() < deadline, "requests did not finish");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(self.metrics.kv_used_cells.get() as usize, self.kv.lock().unwrap().used(), "KV accounting");
    }

    fn decoded_tokens(&self) -> usize {
        self.kv.lock().unwrap().batches.iter().map(Vec::len).sum()
    }
}

fn request(prompt: &[Token], max_tokens: u32, stop: &[&str]) -> SeqRequest<Option<u64>> {
    SeqRequest {
        prompt: prompt.to_vec(),
        sampler: None,
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        ignore_eos: false,
        choice: 0,
        logprobs: None,
        prompt_logprobs: false,
        speculate: true,
    }
}

type Submitted = (tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>, tokio::sync::oneshot::Receiver<Receipt>);

trait SubmitOne {
    /// One request of one choice.
    fn submit_one(&self, request: SeqRequest<Option<u64>>) -> Result<Submitted, BackendError>;
}

impl SubmitOne for SchedulerHandle<Option<u64>> {
    fn submit_one(&self, request: SeqRequest<Option<u64>>) -> Result<Submitted, BackendError> {
        let mut s = self.submit(vec![request])?;
        Ok((s.events, s.receipts.remove(0)))
    }
}

/// Reads a generation to its end; its receipt must agree with the final event.
fn collect((mut rx, receipt): Submitted) -> (String, FinishReason, TokenUsage) {
    let mut text = String::new();
    loop {
        match rx.blocking_recv().expect("stream ended without ChoiceEnded") {
            GenerationEvent::Output { choice: 0, output: Output::Text { text: t, .. } } => text.push_str(&t),
            GenerationEvent::ChoiceEnded { choice: 0, reason } => {
                let receipt = receipt.blocking_recv().unwrap();
                assert_eq!(receipt.finish, Some(reason));
                return (text, reason, receipt.usage);
            }
            GenerationEvent::Failed(e) => panic!("failed: {e}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn run(h: &Harness, prompt: &[Token], max_tokens: u32) -> (String, TokenUsage) {
    let (text, _, usage) = collect(h.handle.submit_one(request(prompt, max_tokens, &[])).unwrap());
    (text, usage)
}

#[test]
fn generates_up_to_max_tokens_with_exact_usage() {
    let h = start(Setup::default());
    let (text, reason, usage) = collect(h.handle.submit_one(request(&[1, 2, 3], 4, &[])).unwrap());
    assert_eq!(text, reference(&[1, 2, 3], 4));
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(usage, TokenUsage { prompt_tokens: 3, cached_tokens: 0, completion_tokens: 4 });
    h.settle();
}

#[test]
fn concurrent_requests_share_decode_batches() {
    // The gate holds the engine's first step until all three are queued: the fake model
    // is instant, so otherwise one request may finish before the next one arrives.
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 4, gate: Some(gate_rx), ..Setup::default() });
    let rxs: Vec<_> = (0..3).map(|i| h.handle.submit_one(request(&[i + 1], 6, &[])).unwrap()).collect();
    drop(gate_tx);
    for (i, rx) in rxs.into_iter().enumerate() {
        let (text, reason, _) = collect(rx);
        assert_eq!((text.as_str(), reason), (reference(&[i as Token + 1], 6).as_str(), FinishReason::Length));
    }
    let kv = h.kv.lock().unwrap();
    let max_seqs = kv.batches.iter().map(|b| b.iter().map(|e| e.seq).collect::<BTreeSet<_>>().len()).max().unwrap();
    assert!(max_seqs >= 2, "no batch mixed sequences: {:?}", kv.batches);
}

#[test]
fn long_prompts_are_prefilled_in_chunks_within_capacity() {
    let h = start(Setup { slots: 1, ..Setup::default() });
    let prompt: Vec<Token> = (1..=20).collect();
    let (text, usage) = run(&h, &prompt, 2);
    assert_eq!(text, reference(&prompt, 2));
    assert_eq!(usage.prompt_tokens, 20);
    let kv = h.kv.lock().unwrap();
    assert!(kv.batches.iter().all(|b| b.len() <= 8));
    assert_eq!(kv.batches.iter().map(Vec::len).sum::<usize>(), 20 + 1);
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let h = start(Setup { slots: 1, ..Setup::default() });
    let full = reference(&[3], 10);
    // A stop string across two tokens: the third and fourth letters.
    let stop = &full[2..4];
    let (text, reason, usage) = collect(h.handle.submit_one(request(&[3], 10, &[stop])).unwrap());
    assert_eq!(text, full[..full.find(stop).unwrap()]);
    assert_eq!(reason, FinishReason::Stop);
    assert!(usage.completion_tokens >= 4);
}

#[test]
fn a_repeated_or_extended_prompt_reuses_its_kv_and_gives_the_same_output() {
    let h = start(Setup::default());
    let first = run(&h, &[5, 6, 7, 8], 3);
    assert_eq!(first.1.cached_tokens, 0);
    let again = run(&h, &[5, 6, 7, 8], 3);
    // All but the last prompt token come from the cache.
    assert_eq!(again.1.cached_tokens, 3);
    assert_eq!(again.0, first.0);
    // Generated tokens were fed back and are cached too: a follow-up turn that contains
    // the first answer reuses it.
    let answer: Vec<Token> = first.0.bytes().map(|b| Token::from(b - b'a')).collect();
    let turn = [&[5, 6, 7, 8][..], &answer[..2], &[20, 21]].concat();
    let follow = run(&h, &turn, 3);
    assert_eq!(follow.1.cached_tokens, 6);
    assert_eq!(follow.0, reference(&turn, 3));
    let other = run(&h, &[9, 9], 3);
    assert_eq!(other.1.cached_tokens, 0);
    assert_eq!(h.metrics.hit_tokens(Tier::Kv), 9);
    h.settle();
}

#[test]
fn prefixes_are_shared_across_sequences_running_or_finished() {
    let system: Vec<Token> = (1..=20).collect();
    let ask = |q: Token| [&system[..], &[q, q + 1]].concat();
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 3, gate: Some(gate_rx), ..Setup::default() });
    // The first request is mid-way through its answer (its prompt computed) when two
    // more arrive: they copy the system prompt from its running sequence.
    let (mut long, long_receipt) = h.handle.submit_one(request(&ask(30), 40, &[])).unwrap();
    for _ in 0..5 {
        gate_tx.send(()).unwrap();
    }
    let mut long_text = match long.blocking_recv() {
        Some(GenerationEvent::Output { output: Output::Text { text, .. }, .. }) => text,
        other => panic!("{other:?}"),
    };
    let (a, b) = (
        h.handle.submit_one(request(&ask(31), 5, &[])).unwrap(),
        h.handle.submit_one(request(&ask(32), 5, &[])).unwrap(),
    );
    drop(gate_tx);
    let (a, b) = (collect(a), collect(b));
    assert_eq!((a.2.cached_tokens, b.2.cached_tokens), (20, 20));
    assert_eq!((a.0, b.0), (reference(&ask(31), 5), reference(&ask(32), 5)));
    long_text += &collect((long, long_receipt)).0;
    assert_eq!(long_text, reference(&ask(30), 40));
    // And from finished ones.
    let c = run(&h, &ask(33), 5);
    assert_eq!((c.0, c.1.cached_tokens), (reference(&ask(33), 5), 20));
    h.settle();
    // The system prompt's cells are shared: 20 + four tails, not four copies.
    let used = h.kv.lock().unwrap().used();
    assert_eq!(used, 20 + (2 + 39) + 3 * (2 + 4), "{used}");
}

#[test]
fn a_prompt_waits_for_a_running_prefill_of_its_prefix_instead_of_repeating_it() {
    let shared: Vec<Token> = (1..=40).collect();
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 4, gate: Some(gate_rx), ..Setup::default() });
    let prompts: Vec<Vec<Token>> = (0..3).map(|q| [&shared[..], &[50 + q, 60]].concat()).collect();
    let rxs: Vec<_> = prompts.iter().map(|p| h.handle.submit_one(request(p, 2, &[])).unwrap()).collect();
    drop(gate_tx);
    let results: Vec<_> = rxs.into_iter().map(collect).collect();
    for (p, (text, _, usage)) in prompts.iter().zip(&results) {
        assert_eq!(*text, reference(p, 2));
        assert!(usage.cached_tokens == 0 || usage.cached_tokens == 40, "{usage:?}");
    }
    assert_eq!(results.iter().filter(|r| r.2.cached_tokens == 40).count(), 2);
    // The shared 40 tokens were computed once: 42 + 2 + 2 prompt tokens and 3 fed tokens.
    assert_eq!(h.decoded_tokens(), 42 + 2 + 2 + 3);
}

#[test]
fn cache_off_computes_every_prompt_and_gives_the_same_output() {
    let on = start(Setup::default());
    let off = start(Setup { prefix_cache: false, ..Setup::default() });
    let prompts: [&[Token]; 3] = [&[4, 5, 6, 7], &[4, 5, 6, 7], &[4, 5, 6, 9, 9]];
    for p in prompts {
        let (a, b) = (run(&on, p, 4), run(&off, p, 4));
        assert_eq!(a.0, b.0);
        assert_eq!(b.1.cached_tokens, 0);
    }
    off.settle();
    assert_eq!(off.kv.lock().unwrap().used(), 0, "nothing is kept with the cache off");
}

#[test]
fn a_tiny_kv_budget_evicts_least_recently_used_prefixes_and_stays_correct() {
    // 40 cells, requests of up to 24: most prefixes are evicted soon after they are made.
    let h = start(Setup { slots: 2, cells: 40, sequences: 4, ..Setup::default() });
    let mut rng = 7u64;
    let mut next = || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    let bases: Vec<Vec<Token>> = (0..4).map(|b| (0..10).map(|i| (b * 10 + i + 1) as Token).collect()).collect();
    for round in 0..40 {
        let base = &bases[next() % bases.len()];
        let prompt: Vec<Token> =
            base.iter().copied().chain((0..next() % 6).map(|i| (round * 7 + i) as Token)).collect();
        let max = 1 + (next() % 8) as u32;
        let rxs: Vec<_> = (0..2).map(|_| h.handle.submit_one(request(&prompt, max, &[])).unwrap()).collect();
        for rx in rxs {
            let (text, _, usage) = collect(rx);
            assert_eq!(text, reference(&prompt, max as usize), "round {round}");
            assert!(usage.cached_tokens < prompt.len() as u64);
        }
    }
    h.settle();
    assert!(h.metrics.evicted_tokens.get() > 0, "the budget never forced an eviction");
    assert!(h.metrics.hit_tokens(Tier::Kv) > 0, "nothing was reused");
    assert!(h.kv.lock().unwrap().used() <= 40);
}

/// Lets the engine take `steps` steps, reads the first text, then leaves as a client that
/// disconnects does; returns the receipt, which says the request was cancelled.
fn leave_after_first_text(gate: std_mpsc::Sender<()>, steps: usize, (mut events, receipt): Submitted) -> Receipt {
    for _ in 0..steps {
        gate.send(()).unwrap();
    }
    assert!(matches!(events.blocking_recv(), Some(GenerationEvent::Output { .. })));
    drop(events);
    drop(gate);
    let receipt = receipt.blocking_recv().unwrap();
    assert_eq!(receipt.finish, Some(FinishReason::Cancelled));
    receipt
}

#[test]
fn disconnected_streams_leave_reusable_kv_and_no_leak() {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 2, cells: 64, sequences: 3, gate: Some(gate_rx), ..Setup::default() });
    let prompt: Vec<Token> = (1..=10).collect();
    let submitted = h.handle.submit_one(request(&prompt, 50, &[])).unwrap();
    leave_after_first_text(gate_tx, 4, submitted);
    h.settle();
    // What the dropped stream computed is cached, and a request needing the whole budget
    // still runs (the cached cells are freed for it).
    let again = run(&h, &prompt, 3);
    assert_eq!(again.1.cached_tokens, 9);
    let big: Vec<Token> = (100..140).collect();
    assert_eq!(run(&h, &big, 20).0, reference(&big, 20));
    h.settle();
    assert_eq!(h.handle.in_flight(), 0);
}

#[test]
fn prompt_chunks_go_to_the_oldest_request_and_respect_the_step_budget() {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 3, step_tokens: 4, gate: Some(gate_rx), ..Setup::default() });
    let decoding = h.handle.submit_one(request(&[1], 30, &[])).unwrap();
    gate_tx.send(()).unwrap();
    gate_tx.send(()).unwrap();
    let a: Vec<Token> = (10..30).collect();
    let b: Vec<Token> = (40..60).collect();
    let (ra, rb) =
        (h.handle.submit_one(request(&a, 1, &[])).unwrap(), h.handle.submit_one(request(&b, 1, &[])).unwrap());
    drop(gate_tx);
    let (first_a, first_b) = (collect(ra), collect(rb));
    assert_eq!((first_a.0, first_b.0), (reference(&a, 1), reference(&b, 1)));
    collect(decoding);
    let kv = h.kv.lock().unwrap();
    let first_with = |seq_tokens: &[Token]| {
        kv.batches.iter().position(|batch| batch.iter().any(|e| seq_tokens.contains(&e.token))).unwrap()
    };
    // The older prompt is computed first; while the first request decodes, a step holds
    // its one token and at most 4 - 1 prompt tokens.
    assert!(first_with(&a) < first_with(&b));
    for batch in &kv.batches {
        // Sequence 0 is the first request's; from position 1 on, its entries are decodes.
        if batch.iter().any(|e| e.seq == 0 && e.pos >= 1) {
            assert!(batch.len() <= 4, "{batch:?}");
        }
    }
}

#[test]
fn overload_is_refused_and_cancellation_frees_the_sequence() {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 1, queue: 0, gate: Some(gate_rx), ..Setup::default() });
    let first = h.handle.submit_one(request(&[1], 1000, &[])).unwrap();
    match h.handle.submit_one(request(&[1], 1, &[])) {
        Err(BackendError::Overloaded { capacity: 1, .. }) => {}
        other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
    }
    // Once it runs, the client leaves; the engine notices at the next step and releases
    // the permit.
    // The receipt still tells what was computed: the prompt and the tokens made so far.
    let receipt = leave_after_first_text(gate_tx, 2, first);
    assert_eq!(receipt.usage.prompt_tokens, 1);
    assert!((1..100).contains(&receipt.usage.completion_tokens), "{receipt:?}");
    h.settle();
    let (_, reason, _) = collect(h.handle.submit_one(request(&[2], 2, &[])).unwrap());
    assert_eq!(reason, FinishReason::Length);
    // The cancelled request stopped long before its 1000 tokens.
    assert!(h.decoded_tokens() < 100, "decoded {} tokens after cancel", h.decoded_tokens());
}

#[test]
fn a_request_that_leaves_while_queued_used_nothing() {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(Setup { slots: 1, queue: 1, gate: Some(gate_rx), ..Setup::default() });
    let running = h.handle.submit_one(request(&[1], 5, &[])).unwrap();
    let (events, receipt) = h.handle.submit_one(request(&[2, 3], 5, &[])).unwrap();
    drop(events);
    drop(gate_tx);
    assert_eq!(
        receipt.blocking_recv().unwrap(),
        Receipt { finish: Some(FinishReason::Cancelled), ..Default::default() }
    );
    assert_eq!(collect(running).1, FinishReason::Length);
}

#[test]
fn waiting_requests_get_a_sequence_when_one_frees() {
    let h = start(Setup { slots: 1, queue: 3, ..Setup::default() });
    let rxs: Vec<_> = (0..4).map(|i| h.handle.submit_one(request(&[i + 1], 3, &[])).unwrap()).collect();
    for rx in rxs {
        assert_eq!(collect(rx).1, FinishReason::Length);
    }
    h.settle();
    assert_eq!(h.handle.in_flight(), 0);
    let mut registry = prometheus_client::registry::Registry::default();
    h.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("time_to_first_token_seconds_count 4\n"), "{text}");
    assert!(text.contains("inter_token_latency_seconds_count 8\n"), "{text}");
    assert!(text.contains("prefix_cache_hit_tokens_total{tier=\"kv\"} 0\n"), "{text}");
}

#[test]
fn a_request_larger_than_the_whole_cache_fails_instead_of_waiting_forever() {
    let h = start(Setup { cells: 16, ..Setup::default() });
    let prompt: Vec<Token> = (1..=20).collect();
    let (mut events, receipt) = h.handle.submit_one(request(&prompt, 2, &[])).unwrap();
    match events.blocking_recv() {
        Some(GenerationEvent::Failed(e)) => assert!(e.contains("KV cache"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(receipt.blocking_recv().unwrap().usage, TokenUsage::default());
    // Smaller ones still run.
    assert_eq!(run(&h, &[1, 2, 3], 4).0, reference(&[1, 2, 3], 4));
}

/// Fills a tiny cache with `others` so that `first` is evicted.
fn push_out(h: &Harness, others: &[Vec<Token>]) {
    for p in others {
        assert_eq!(run(h, p, 4).0, reference(p, 4));
    }
}

fn prompt_from(start: Token, n: usize) -> Vec<Token> {
    (start..start + n as Token).collect()
}

#[test]
fn an_evicted_prefix_is_restored_from_memory() {
    let spill = SpillConfig { ram_bytes: 1 << 20, dir: None, disk_bytes: 0 };
    let h = start(Setup { cells: 60, spill, ..Setup::default() });
    let first = prompt_from(1, 40);
    let cold = run(&h, &first, 4);
    push_out(&h, &[prompt_from(100, 40), prompt_from(200, 40)]);
    let again = run(&h, &first, 4);
    assert_eq!(again, (cold.0.clone(), TokenUsage { prompt_tokens: 40, cached_tokens: 39, completion_tokens: 4 }));
    assert_eq!(h.metrics.hit_tokens(Tier::Ram), 39);
    // A longer prompt starting with it restores it too.
    let longer = [&first[..], &[7, 7, 7]].concat();
    let (text, usage) = run(&h, &longer, 4);
    assert_eq!(text, reference(&longer, 4));
    assert!(usage.cached_tokens >= 40, "{usage:?}");
    h.settle();
}

#[test]
fn spilled_prefixes_survive_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let spill = SpillConfig { ram_bytes: 0, dir: Some(dir.path().to_path_buf()), disk_bytes: 1 << 20 };
    let first = prompt_from(1, 40);
    let second = prompt_from(300, 36);
    let cold = {
        let h = start(Setup { cells: 60, spill: spill.clone(), ..Setup::default() });
        let cold = run(&h, &first, 4);
        push_out(&h, &[prompt_from(100, 40)]); // evicted: written at once
        assert_eq!(run(&h, &second, 2).0, reference(&second, 2)); // still cached at shutdown
        futures_block_on(h.handle.shutdown());
        cold
    };
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files >= 4, "expected .kv and .tokens files, found {files}");
    // A damaged index is dropped at start, not trusted.
    std::fs::write(dir.path().join("junk.tokens"), b"TMKV").unwrap();
    let h = start(Setup { cells: 60, spill, ..Setup::default() });
    assert!(!dir.path().join("junk.tokens").exists());
    let again = run(&h, &first, 4);
    assert_eq!((again.0, again.1.cached_tokens), (cold.0, 39));
    let (text, usage) = run(&h, &second, 2);
    assert_eq!((text, usage.cached_tokens), (reference(&second, 2), 35));
    assert_eq!(h.metrics.hit_tokens(Tier::Disk), 39 + 35);
}

#[test]
fn spill_budgets_drop_the_least_recently_used_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about two 40-token snapshots in each tier (fake: 8 bytes a token in memory,
    // ~3 bytes a token on disk).
    let spill = SpillConfig { ram_bytes: 700, dir: Some(dir.path().to_path_buf()), disk_bytes: 300 };
    let h = start(Setup { cells: 60, spill, ..Setup::default() });
    let prompts: Vec<Vec<Token>> = (0..6).map(|i| prompt_from(1 + 100 * i, 40)).collect();
    push_out(&h, &prompts);
    h.settle();
    let text = {
        let mut registry = prometheus_client::registry::Registry::default();
        h.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name}\n{text}"))
    };
    assert!(value("kv_spill_bytes{tier=\"ram\"}") <= 700.0);
    assert!(value("kv_spill_bytes{tier=\"disk\"}") <= 300.0);
    assert!(value("kv_spill_entries{tier=\"ram\"}") >= 1.0);
    // The oldest are gone, the newest evicted one comes back.
    assert_eq!(run(&h, &prompts[0], 4).1.cached_tokens, 0);
    assert_eq!(run(&h, &prompts[4], 4).1.cached_tokens, 39);
}

fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn while_requests_run_idle_prefixes_beyond_the_budget_move_to_memory() {
    let spill = SpillConfig { ram_bytes: 1 << 20, dir: None, disk_bytes: 0 };
    let h = start(Setup { spill, idle_tokens: 8, ..Setup::default() });
    let first = prompt_from(1, 40);
    let cold = run(&h, &first, 4);
    // While another request runs, the first one's 43 cells are not kept in the context.
    let other = prompt_from(500, 10);
    assert_eq!(run(&h, &other, 4).0, reference(&other, 4));
    h.settle();
    assert!(h.kv.lock().unwrap().used() <= 13 + 8, "{} cells in use", h.kv.lock().unwrap().used());
    // And it comes back from memory.
    let again = run(&h, &first, 4);
    assert_eq!((again.0, again.1.cached_tokens), (cold.0, 39));
    assert_eq!(h.metrics.hit_tokens(Tier::Ram), 39);
}

#[test]
fn memory_copies_pushed_out_by_the_budget_and_left_at_shutdown_go_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Memory holds about two 40-token snapshots; the disk, all of them.
    let spill = SpillConfig { ram_bytes: 700, dir: Some(dir.path().to_path_buf()), disk_bytes: 1 << 20 };
    let prompts: Vec<Vec<Token>> = (0..6).map(|i| prompt_from(1 + 100 * i, 40)).collect();
    let colds = {
        let h = start(Setup { cells: 60, spill: spill.clone(), ..Setup::default() });
        let colds: Vec<String> = prompts.iter().map(|p| run(&h, p, 4).0).collect();
        h.settle();
        // The oldest was pushed out of memory to a file, not lost.
        let oldest = run(&h, &prompts[0], 4);
        assert_eq!((oldest.0.as_str(), oldest.1.cached_tokens), (colds[0].as_str(), 39));
        assert_eq!(h.metrics.hit_tokens(Tier::Disk), 39);
        futures_block_on(h.handle.shutdown());
        colds
    };
    // After a restart every prefix, whether it was in the context, in memory or on disk,
    // comes back from its file.
    let h = start(Setup { cells: 60, spill, ..Setup::default() });
    for (p, cold) in prompts.iter().zip(&colds).rev() {
        let again = run(&h, p, 4);
        assert_eq!((&again.0, again.1.cached_tokens), (cold, 39));
    }
    assert_eq!(h.metrics.hit_tokens(Tier::Disk), 6 * 39);
}

/// Reads every choice of a request to its end: each choice's text and finish, and the
/// receipts.
fn collect_choices(submitted: crate::Submitted) -> (Vec<(String, FinishReason)>, Vec<Receipt>) {
    let crate::Submitted { mut events, receipts } = submitted;
    let mut choices = vec![(String::new(), None); receipts.len()];
    while let Some(event) = events.blocking_recv() {
        match event {
            GenerationEvent::Output { choice, output: Output::Text { text, .. } } => {
                choices[choice as usize].0.push_str(&text)
            }
            GenerationEvent::ChoiceEnded { choice, reason } => choices[choice as usize].1 = Some(reason),
            other => panic!("unexpected {other:?}"),
        }
    }
    let receipts = receipts.into_iter().map(|r| r.blocking_recv().unwrap()).collect();
    (choices.into_iter().map(|(text, reason)| (text, reason.expect("every choice ends"))).collect(), receipts)
}

#[test]
fn the_choices_of_a_request_compute_its_prompt_once() {
    let h = start(Setup { slots: 4, ..Setup::default() });
    let prompt: Vec<Token> = (1..=20).collect();
    let choices = (0..3).map(|choice| SeqRequest { choice, ..request(&prompt, 4, &[]) }).collect();
    let (outputs, receipts) = collect_choices(h.handle.submit(choices).unwrap());
    for (text, reason) in &outputs {
        assert_eq!((text.as_str(), *reason), (reference(&prompt, 4).as_str(), FinishReason::Length));
    }
    // The first computes the prompt; the others copy all of it but the last token, whose
    // logits start their own generation.
    let cached: Vec<u64> = receipts.iter().map(|r| r.usage.cached_tokens).collect();
    assert_eq!(cached, vec![0, 19, 19]);
    assert_eq!(h.decoded_tokens(), 20 + 2 + 3 * 3, "prompt once, 2 last tokens again, 3 fed tokens each");
    assert_eq!(
        Receipt::of_choices(&receipts).usage,
        TokenUsage { prompt_tokens: 20, cached_tokens: 0, completion_tokens: 12 }
    );
    h.settle();
}

#[test]
fn a_request_too_large_for_the_admission_is_refused_whole() {
    let h = start(Setup { slots: 1, queue: 1, ..Setup::default() });
    let choices = (0..3).map(|choice| SeqRequest { choice, ..request(&[1], 2, &[]) }).collect();
    assert!(matches!(h.handle.submit(choices), Err(BackendError::Overloaded { capacity: 2, .. })));
    assert_eq!(h.handle.in_flight(), 0, "no choice was left admitted");
}

/// Every output event's text and log-probabilities, in order.
fn text_and_logprobs(
    mut events: tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>,
) -> Vec<(String, Vec<TokenLogprob>)> {
    let mut out = Vec::new();
    while let Some(event) = events.blocking_recv() {
        match event {
            GenerationEvent::Output { output: Output::Text { text, logprobs }, .. } => out.push((text, logprobs)),
            GenerationEvent::ChoiceEnded { .. } => return out,
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[test]
fn logprobs_travel_with_their_text_and_a_stop_string_drops_its_own() {
    let h = start(Setup::default());
    let expected = reference(&[3], 10);
    let with_logprobs = |stop: &[&str]| SeqRequest { logprobs: Some(3), ..request(&[3], 10, stop) };
    let (events, _) = h.handle.submit_one(with_logprobs(&[])).unwrap();
    let pieces = text_and_logprobs(events);
    let entries: Vec<&TokenLogprob> = pieces.iter().flat_map(|(_, lps)| lps).collect();
    assert_eq!(entries.len(), 10);
    let tokens: String = entries.iter().map(|e| e.token.as_str()).collect();
    assert_eq!(tokens, expected, "one entry per token, in order");
    for e in &entries {
        assert_eq!(e.logprob, Some(NEXT_LOGPROB));
        assert_eq!(e.top.len(), 3);
        let top = (e.top[0].token.as_str(), e.top[0].logprob);
        assert_eq!(top, (e.token.as_str(), NEXT_LOGPROB), "greedy: the top one");
        assert!(e.top.windows(2).all(|w| w[0].logprob >= w[1].logprob), "likeliest first");
    }
    // Each event carries the entries of the tokens whose text it completes.
    for (text, lps) in &pieces {
        assert_eq!(text.len(), lps.len(), "{pieces:?}");
    }
    // A stop string is not output, and neither are its tokens' entries.
    let stop = &expected[5..7];
    let at = expected.find(stop).unwrap();
    let (events, _) = h.handle.submit_one(with_logprobs(&[stop])).unwrap();
    let pieces = text_and_logprobs(events);
    let text: String = pieces.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(text, expected[..at]);
    assert_eq!(pieces.iter().map(|(_, l)| l.len()).sum::<usize>(), at);
}

#[test]
fn prompt_logprobs_come_first_and_are_computed_not_reused() {
    let h = start(Setup::default());
    let prompt = vec![5, next_token(&[5]), 9, 9];
    run(&h, &prompt, 2); // now cached
    let asked = SeqRequest { logprobs: Some(2), prompt_logprobs: true, ..request(&prompt, 2, &[]) };
    let (mut events, receipt) = h.handle.submit_one(asked).unwrap();
    let Some(GenerationEvent::Output { output: Output::Prompt { logprobs }, .. }) = events.blocking_recv() else {
        panic!("the prompt's log-probabilities come first")
    };
    let expected: Vec<Option<f32>> = (0..prompt.len())
        .map(|k| (k > 0).then(|| if prompt[k] == next_token(&prompt[..k]) { NEXT_LOGPROB } else { other_logprob() }))
        .collect();
    assert_eq!(logprobs.iter().map(|e| e.logprob).collect::<Vec<_>>(), expected);
    assert_eq!(expected[1], Some(NEXT_LOGPROB), "the test prompt has a predicted token");
    assert!(logprobs[1..].iter().all(|e| e.top.len() == 2));
    let (text, _, usage) = collect((events, receipt));
    assert_eq!(text, reference(&prompt, 2));
    assert_eq!(usage.cached_tokens, 0, "a cached prefix has no logits");
}

/// A decode step of the fake in speculation tests (the engine prices draft lengths by
/// what steps take).
const SPEC_STEP: Duration = Duration::from_micros(200);

/// A prompt that repeats itself: the copying model continues the cycle, so drafts from
/// the context are accepted.
fn cyclic_prompt() -> Vec<Token> {
    [(1..=12).collect::<Vec<Token>>(), vec![1, 2]].concat()
}

#[test]
fn speculation_gives_the_same_greedy_output_in_fewer_steps() {
    let prompt = cyclic_prompt();
    let expected = reference_with(copying, &prompt, 30);
    let mut steps = Vec::new();
    for speculative in [false, true] {
        let h = start(Setup { speculative, predict: copying, step_time: SPEC_STEP, ..Setup::default() });
        let (text, reason, usage) = collect(h.handle.submit_one(request(&prompt, 30, &[])).unwrap());
        assert_eq!((text.as_str(), reason), (expected.as_str(), FinishReason::Length), "speculative: {speculative}");
        assert_eq!(usage.completion_tokens, 30, "only what was returned is counted");
        h.settle();
        steps.push(h.kv.lock().unwrap().batches.len());
        if speculative {
            assert!(h.metrics.accepted_tokens.get() > 10, "drafts were accepted");
        }
    }
    assert!(steps[1] * 2 < steps[0], "decode steps without and with drafts: {steps:?}");
}

#[test]
fn refused_drafts_leave_no_trace() {
    // The hash model rarely repeats its context: most drafts are refused, their KV cells
    // dropped (the fake checks every sequence's positions at each decode; `settle` checks
    // the cell count), and the output is the model's own.
    let h = start(Setup { speculative: true, step_time: SPEC_STEP, ..Setup::default() });
    let prompts: Vec<Vec<Token>> = (0..6).map(|i| [cyclic_prompt(), vec![i + 3, 4, 5, 6]].concat()).collect();
    for prompt in &prompts {
        assert_eq!(run(&h, prompt, 40).0, reference(prompt, 40));
    }
    h.settle();
    let (drafted, accepted) = (h.metrics.drafted_tokens.get(), h.metrics.accepted_tokens.get());
    assert!(drafted > 0 && accepted < drafted, "drafted {drafted}, accepted {accepted}");
}

#[test]
fn drafts_end_at_an_end_of_generation() {
    // The prompt holds an earlier message that ended (0), then more; the answer copies
    // that message to its end. Its drafts copy up to the 0 and no further: every drafted
    // token is one the model agrees with, the 0 included (it ends the answer).
    let h = start(Setup { speculative: true, predict: copying, step_time: SPEC_STEP, ..Setup::default() });
    let prompt: Vec<Token> = [(1..=5).collect(), vec![0, 20, 21, 22, 23, 24, 25, 1, 2]].concat();
    let (text, reason, _) = collect(h.handle.submit_one(request(&prompt, 30, &[])).unwrap());
    assert_eq!((text.as_str(), reason), (reference_with(copying, &prompt, 3).as_str(), FinishReason::Stop));
    h.settle();
    let (drafted, accepted) = (h.metrics.drafted_tokens.get(), h.metrics.accepted_tokens.get());
    assert!(drafted > 0 && accepted == drafted, "drafted {drafted}, accepted {accepted}");
}

/// Whether the first decode step after `prompt` (the step that feeds the token at
/// position `prompt.len()`) verified a draft, among the steps from `from` on.
fn first_step_drafts(h: &Harness, prompt: &[Token], from: usize) -> bool {
    let kv = h.kv.lock().unwrap();
    let step = kv.batches[from..].iter().find(|b| b.iter().any(|e| e.pos == prompt.len())).expect("a decode step");
    step.len() > 1
}

#[test]
fn drafts_too_dear_to_verify_are_judged_by_the_output_and_verified_once_shown_right() {
    // Steps cost as on a CPU whose one-token steps are fast: a second token triples the
    // cost, more add little. A draft after a long match (prior acceptance 0.85) is worth
    // a step, one after a 3-token match (prior 0.6) is not.
    let h = start(Setup {
        speculative: true,
        predict: copying,
        step_cost: Some(|tokens| Duration::from_micros(if tokens == 1 { 3_000 } else { 9_000 + 100 * tokens as u64 })),
        ..Setup::default()
    });
    // Warm-ups copying a long run measure what steps cost: the first drafts nothing, the
    // second has room for a draft of one token, the third for longer ones.
    let text: Vec<Token> = (1..=20).collect();
    let warm_up = [text.clone(), text[..18].to_vec()].concat();
    let (_, _, usage) =
        collect(h.handle.submit_one(SeqRequest { speculate: false, ..request(&warm_up, 5, &[]) }).unwrap());
    assert_eq!(usage.completion_tokens, 5);
    for max_tokens in [3, 20] {
        assert_eq!(run(&h, &warm_up, max_tokens).0, reference_with(copying, &warm_up, max_tokens as usize));
    }
    // Two answers continuing a cycle: each starts after a 3-token match. The first leaves
    // its early drafts unverified, but its output shows them right; the second drafts at
    // its first step.
    let prompts: Vec<Vec<Token>> =
        [13, 1].iter().map(|&k| [(k..k + 12).collect::<Vec<Token>>(), vec![k, k + 1]].concat()).collect();
    let mut first_steps = Vec::new();
    for prompt in &prompts {
        let from = h.kv.lock().unwrap().batches.len();
        assert_eq!(run(&h, prompt, 40).0, reference_with(copying, prompt, 40));
        first_steps.push(first_step_drafts(&h, prompt, from));
    }
    h.settle();
    assert_eq!(first_steps, [false, true], "whether each answer's first decode step drafted");
}

#[test]
fn stop_strings_max_tokens_and_logprobs_hold_inside_an_accepted_draft() {
    let h = start(Setup { speculative: true, predict: copying, step_time: SPEC_STEP, ..Setup::default() });
    let prompt = cyclic_prompt();
    let expected = reference_with(copying, &prompt, 30);
    // A stop string in the middle of a copied run.
    let stop = &expected[17..19];
    let at = expected.find(stop).unwrap();
    let (text, reason, _) = collect(h.handle.submit_one(request(&prompt, 30, &[stop])).unwrap());
    assert_eq!((text.as_str(), reason), (&expected[..at], FinishReason::Stop));
    // Exactly max_tokens, however long the drafts.
    let (text, _, usage) = collect(h.handle.submit_one(request(&prompt, 11, &[])).unwrap());
    assert_eq!((text.as_str(), usage.completion_tokens), (&expected[..11], 11));
    // One log-probability entry per returned token.
    let (events, _) = h.handle.submit_one(SeqRequest { logprobs: Some(1), ..request(&prompt, 25, &[]) }).unwrap();
    let pieces = text_and_logprobs(events);
    assert_eq!(pieces.iter().map(|(_, l)| l.len()).sum::<usize>(), 25);
    h.settle();
    assert!(h.metrics.accepted_tokens.get() > 0);
}

/// The accept rule keeps the model's distribution: with random sampling and drafts from
/// the context, every generated token after the first (each verified against a draft) is
/// the model's prediction with probability 0.6 and any other token evenly, by a
/// chi-square test over at least 2,000 requests (fixed seeds), until 2,000 draft tokens
/// were verified. A rule that accepted draft tokens the sample did not agree with would
/// push the first bin far up. How long the drafts are depends on step times as measured,
/// so on what else the machine runs: a loaded machine drafts less per request and the
/// test then makes more requests rather than lose its power.
#[test]
fn sampling_with_drafts_keeps_the_models_distribution() {
    let setup =
        Setup { speculative: true, predict: copying, slots: 4, queue: 8, step_time: SPEC_STEP, ..Setup::default() };
    let h = start(setup);
    let prompt: Vec<Token> = [vec![1, 2, 3, 4, 5, 6, 7, 8], vec![1, 2]].concat();
    // Bin 0: the prediction; bins 1..=24: the other tokens, in order.
    let mut bins = [0u64; 25];
    for seed in 0u64.. {
        if seed >= 2_000 && h.metrics.drafted_tokens.get() > 2_000 {
            break;
        }
        assert!(seed < 10_000, "drafted only {} tokens", h.metrics.drafted_tokens.get());
        let asked = SeqRequest { sampler: Some(seed * 7919 + 1), ..request(&prompt, 5, &[]) };
        let (text, _, _) = collect(h.handle.submit_one(asked).unwrap());
        let tokens: Vec<Token> = text.bytes().map(|b| (b - b'a') as Token).collect();
        let mut context = prompt.clone();
        for (i, &t) in tokens.iter().enumerate() {
            let predicted = copying(&context);
            if i > 0 {
                let bin = if t == predicted {
                    0
                } else {
                    1 + (1..=25).filter(|&o| o != predicted).position(|o| o == t).unwrap()
                };
                bins[bin] += 1;
            }
            context.push(t);
        }
    }
    let n: u64 = bins.iter().sum();
    let expected = |bin: usize| if bin == 0 { n as f64 * PREDICTED } else { n as f64 * (1.0 - PREDICTED) / 24.0 };
    let chi2: f64 = bins.iter().enumerate().map(|(b, &o)| (o as f64 - expected(b)).powi(2) / expected(b)).sum();
    // 24 degrees of freedom: P(chi2 > 51.2) = 0.001.
    assert!(chi2 < 51.2, "chi-square {chi2:.1} over {bins:?}");
    let (drafted, accepted) = (h.metrics.drafted_tokens.get(), h.metrics.accepted_tokens.get());
    assert!(drafted > 2_000 && accepted > 500, "drafted {drafted}, accepted {accepted}");
}
