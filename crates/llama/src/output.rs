//! From the engine's sequences to one generation: the choices of a request report on one
//! channel; this task reads each choice's text for tool calls (when the request declared
//! tools) and, once every choice has ended, sends what the request used and its receipt.
//! A client that leaves is noticed here: dropping the engine's channel cancels every
//! choice still running.

use futures::future::join_all;
use tm_backend::{FinishReason, Generation, GenerationEvent, Output, Receipt};
use tm_scheduler::Submitted;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::tool_parser::{CallParser, Piece};

/// How a request's output may hold tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// None: text passes as it is.
    None,
    /// Tagged calls.
    Tagged,
    /// Tagged calls, or bare call objects at the start of the answer.
    TaggedOrBare,
}

/// Starts the task (on `tasks`) that turns a submitted request's sequences into its
/// generation.
pub fn join(tasks: &TaskTracker, submitted: Submitted, prompt_tokens: u64, calls: Calls) -> Generation {
    let (events, rx) = mpsc::unbounded_channel();
    let (receipt, receipt_rx) = oneshot::channel();
    tasks.spawn(relay(submitted, calls, events, receipt));
    Generation { prompt_tokens, events: rx, receipt: receipt_rx }
}

/// One choice's calls as they are read.
struct Choice {
    parser: CallParser,
    /// Calls begun (the next one's index).
    calls: u32,
}

impl Choice {
    fn events(
        &mut self,
        choice: u32,
        pieces: Vec<Piece>,
        logprobs: Vec<tm_backend::TokenLogprob>,
    ) -> Vec<GenerationEvent> {
        // The log-probabilities go with the content; a call's tokens have none to show.
        let mut logprobs = Some(logprobs);
        pieces
            .into_iter()
            .map(|piece| {
                let output = match piece {
                    Piece::Text(text) => Output::Text { text, logprobs: logprobs.take().unwrap_or_default() },
                    Piece::Call { name } => {
                        self.calls += 1;
                        Output::ToolCall { index: self.calls - 1, id: call_id(), name }
                    }
                    Piece::Arguments(fragment) => {
                        Output::ToolArguments { index: self.calls.saturating_sub(1), fragment }
                    }
                };
                GenerationEvent::Output { choice, output }
            })
            .collect()
    }
}

/// OpenAI's shape of a call id.
fn call_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &hex[..24])
}

async fn relay(
    submitted: Submitted,
    calls: Calls,
    client: mpsc::UnboundedSender<GenerationEvent>,
    receipt: oneshot::Sender<Receipt>,
) {
    let Submitted { mut events, receipts } = submitted;
    let parse_calls = calls != Calls::None;
    let mut choices: Vec<Choice> =
        receipts.iter().map(|_| Choice { parser: CallParser::new(calls == Calls::TaggedOrBare), calls: 0 }).collect();
    let mut first_reason = None;
    let (mut failed, mut left) = (false, false);
    loop {
        let event = tokio::select! {
            () = client.closed() => { left = true; break; }
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        let out = match event {
            GenerationEvent::Output { choice, output: Output::Text { text, logprobs } } if parse_calls => {
                let Some(c) = choices.get_mut(choice as usize) else { continue };
                let pieces = c.parser.push(&text);
                c.events(choice, pieces, logprobs)
            }
            GenerationEvent::ChoiceEnded { choice, reason } => {
                let Some(c) = choices.get_mut(choice as usize) else { continue };
                let pieces = c.parser.finish();
                let mut out = c.events(choice, pieces, Vec::new());
                let reason = if c.calls > 0 && reason == FinishReason::Stop { FinishReason::ToolCalls } else { reason };
                if choice == 0 {
                    first_reason = Some(reason);
                }
                out.push(GenerationEvent::ChoiceEnded { choice, reason });
                out
            }
            GenerationEvent::Failed(e) => {
                // The request failed: the client hears it once, and the other choices stop.
                failed = true;
                let _ = client.send(GenerationEvent::Failed(e));
                break;
            }
            other => vec![other],
        };
        if out.into_iter().any(|e| client.send(e).is_err()) {
            left = true;
            break;
        }
    }
    // Choices still running are cancelled now; each reports what it computed.
    drop(events);
    let receipts: Vec<Receipt> = join_all(receipts)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(Receipt { finish: None, ..Receipt::default() }))
        .collect();
    let mut total = Receipt::of_choices(&receipts);
    if total.finish == Some(FinishReason::Stop) && first_reason == Some(FinishReason::ToolCalls) {
        total.finish = first_reason;
    }
    if !failed && !left {
        let _ = client.send(match total.finish {
            Some(_) => GenerationEvent::Finished { usage: total.usage },
            None => GenerationEvent::Failed("the engine stopped".into()),
        });
    }
    let _ = receipt.send(total);
}
