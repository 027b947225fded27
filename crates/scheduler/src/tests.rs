//! Engine tests against a fake model whose KV bookkeeping is checked on every decode.

use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use tm_backend::{BackendError, FinishReason, GenerationEvent, Receipt, SamplingParams, TokenUsage};

use crate::model::{BatchEntry, Model, ModelError, SeqId, Token};
use crate::{EngineConfig, SchedulerHandle, SeqRequest};

/// Token 0 ends generation; token t renders as the letter `a + t % 26`; the next token
/// after t is `t % 25 + 1`, so output is deterministic and never ends by itself.
struct FakeModel {
    kv: HashMap<SeqId, Vec<Token>>,
    next: Vec<Token>,
    batches: Arc<Mutex<Vec<Vec<BatchEntry>>>>,
    /// When set, every decode waits for one message (or for the sender to go away).
    gate: Option<std_mpsc::Receiver<()>>,
}

impl Model for FakeModel {
    type Sampler = ();
    fn batch_capacity(&self) -> usize {
        8
    }
    fn new_sampler(&self, _: &SamplingParams) -> Result<(), ModelError> {
        Ok(())
    }
    fn decode(&mut self, batch: &[BatchEntry]) -> Result<(), ModelError> {
        if let Some(gate) = &self.gate {
            if gate.recv().is_err() {
                self.gate = None;
            }
        }
        assert!(batch.len() <= self.batch_capacity());
        self.next.clear();
        for e in batch {
            let kv = self.kv.entry(e.seq).or_default();
            assert_eq!(e.pos, kv.len(), "positions must be contiguous per sequence");
            kv.push(e.token);
            self.next.push(e.token % 25 + 1);
        }
        self.batches.lock().unwrap().push(batch.to_vec());
        Ok(())
    }
    fn sample(&mut self, _: &mut (), index: usize) -> Token {
        self.next[index]
    }
    fn is_end_of_generation(&self, token: Token) -> bool {
        token == 0
    }
    fn token_bytes(&self, token: Token) -> Vec<u8> {
        vec![b'a' + (token % 26) as u8]
    }
    fn truncate(&mut self, seq: SeqId, from: usize) -> bool {
        self.kv.entry(seq).or_default().truncate(from);
        true
    }
}

struct Harness {
    handle: SchedulerHandle,
    batches: Arc<Mutex<Vec<Vec<BatchEntry>>>>,
}

fn start(slots: usize, queue: usize, gate: Option<std_mpsc::Receiver<()>>) -> Harness {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let b = batches.clone();
    let config = EngineConfig { slots, queue, ctx_per_slot: 64 };
    let handle = SchedulerHandle::spawn("fake", config, move || {
        Ok(FakeModel { kv: HashMap::new(), next: Vec::new(), batches: b, gate })
    })
    .unwrap();
    Harness { handle, batches }
}

fn request(prompt: &[Token], max_tokens: u32, stop: &[&str]) -> SeqRequest {
    SeqRequest {
        prompt: prompt.to_vec(),
        sampling: SamplingParams::default(),
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
    }
}

type Submitted = (tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>, tokio::sync::oneshot::Receiver<Receipt>);

/// Reads a generation to its end; its receipt must agree with the final event.
fn collect((mut rx, receipt): Submitted) -> (String, FinishReason, TokenUsage) {
    let mut text = String::new();
    loop {
        match rx.blocking_recv().expect("stream ended without Finished") {
            GenerationEvent::Text(t) => text.push_str(&t),
            GenerationEvent::Finished { reason, usage } => {
                assert_eq!(receipt.blocking_recv().unwrap(), Receipt { usage, finish: Some(reason) });
                return (text, reason, usage);
            }
            GenerationEvent::Failed(e) => panic!("failed: {e}"),
        }
    }
}

#[test]
fn generates_up_to_max_tokens_with_exact_usage() {
    let h = start(2, 2, None);
    let (text, reason, usage) = collect(h.handle.submit(request(&[1, 2, 3], 4, &[])).unwrap());
    // After token 3 comes 4, 5, 6, 7: letters e f g h.
    assert_eq!(text, "efgh");
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(usage, TokenUsage { prompt_tokens: 3, cached_tokens: 0, completion_tokens: 4 });
}

#[test]
fn concurrent_requests_share_decode_batches() {
    // The gate holds the engine's first step until all three are queued: the fake model
    // is instant, so otherwise one request may finish before the next one arrives.
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(4, 4, Some(gate_rx));
    let rxs: Vec<_> = (0..3).map(|i| h.handle.submit(request(&[i + 1], 6, &[])).unwrap()).collect();
    drop(gate_tx);
    for rx in rxs {
        assert_eq!(collect(rx).1, FinishReason::Length);
    }
    let batches = h.batches.lock().unwrap();
    let max_seqs =
        batches.iter().map(|b| b.iter().map(|e| e.seq).collect::<std::collections::HashSet<_>>().len()).max().unwrap();
    assert!(max_seqs >= 2, "no batch mixed sequences: {batches:?}");
}

#[test]
fn long_prompts_are_prefilled_in_chunks_within_capacity() {
    let h = start(1, 1, None);
    let prompt: Vec<Token> = (1..=20).collect();
    let (_, _, usage) = collect(h.handle.submit(request(&prompt, 2, &[])).unwrap());
    assert_eq!(usage.prompt_tokens, 20);
    let batches = h.batches.lock().unwrap();
    assert!(batches.iter().all(|b| b.len() <= 8));
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 20 + 1);
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let h = start(1, 1, None);
    // Output letters: e f g h i j ...; stop on "gh" spans two tokens.
    let (text, reason, usage) = collect(h.handle.submit(request(&[3], 10, &["gh"])).unwrap());
    assert_eq!(text, "ef");
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(usage.completion_tokens, 4);
}

#[test]
fn prefix_is_reused_and_does_not_change_output() {
    let h = start(2, 2, None);
    let first = collect(h.handle.submit(request(&[5, 6, 7, 8], 3, &[])).unwrap());
    assert_eq!(first.2.cached_tokens, 0);
    let again = collect(h.handle.submit(request(&[5, 6, 7, 8], 3, &[])).unwrap());
    // All but the last prompt token come from the cache.
    assert_eq!(again.2.cached_tokens, 3);
    assert_eq!(again.0, first.0);
    // Generated tokens fed back are cached too, so diverge right after the prompt.
    let extended = collect(h.handle.submit(request(&[5, 6, 7, 8, 20, 21], 3, &[])).unwrap());
    assert_eq!(extended.2.cached_tokens, 4);
    let other = collect(h.handle.submit(request(&[9, 9], 3, &[])).unwrap());
    assert_eq!(other.2.cached_tokens, 0);
}

#[test]
fn overload_is_refused_and_cancellation_frees_the_slot() {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(1, 0, Some(gate_rx));
    let first = h.handle.submit(request(&[1], 1000, &[])).unwrap();
    match h.handle.submit(request(&[1], 1, &[])) {
        Err(BackendError::Overloaded { capacity: 1, .. }) => {}
        other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
    }
    // Once it runs, the client leaves; the engine notices at the next step and releases
    // the permit.
    let (mut events, receipt) = first;
    gate_tx.send(()).unwrap();
    gate_tx.send(()).unwrap();
    assert!(matches!(events.blocking_recv(), Some(GenerationEvent::Text(_))));
    drop(events);
    drop(gate_tx);
    // The receipt still tells what was computed: the prompt and the tokens made so far.
    let receipt = receipt.blocking_recv().unwrap();
    assert_eq!(receipt.finish, Some(FinishReason::Cancelled));
    assert_eq!(receipt.usage.prompt_tokens, 1);
    assert!((1..100).contains(&receipt.usage.completion_tokens), "{receipt:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.handle.in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "slot was not freed");
        std::thread::yield_now();
    }
    let (_, reason, _) = collect(h.handle.submit(request(&[1], 2, &[])).unwrap());
    assert_eq!(reason, FinishReason::Length);
    // The cancelled request stopped long before its 1000 tokens.
    let decoded: usize = h.batches.lock().unwrap().iter().map(Vec::len).sum();
    assert!(decoded < 100, "decoded {decoded} tokens after cancel");
}

#[test]
fn a_request_that_leaves_while_queued_used_nothing() {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let h = start(1, 1, Some(gate_rx));
    let running = h.handle.submit(request(&[1], 5, &[])).unwrap();
    let (events, receipt) = h.handle.submit(request(&[2, 3], 5, &[])).unwrap();
    drop(events);
    drop(gate_tx);
    assert_eq!(
        receipt.blocking_recv().unwrap(),
        Receipt { usage: TokenUsage::default(), finish: Some(FinishReason::Cancelled) }
    );
    assert_eq!(collect(running).1, FinishReason::Length);
}

#[test]
fn waiting_requests_get_a_slot_when_one_frees() {
    let h = start(1, 3, None);
    let rxs: Vec<_> = (0..4).map(|i| h.handle.submit(request(&[i + 1], 3, &[])).unwrap()).collect();
    for rx in rxs {
        assert_eq!(collect(rx).1, FinishReason::Length);
    }
    assert_eq!(h.handle.in_flight(), 0);
}
