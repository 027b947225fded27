//! A running generation that settles itself exactly once however it ends, and the
//! per-user concurrency slot it holds while it runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tm_backend::{Generation, GenerationEvent};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::settler::{Bill, Pending};

/// A generation's place among its user's running ones, given back when dropped.
pub(crate) struct UserSlot {
    pub(crate) user_id: String,
    pub(crate) running: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.user_id);
            }
        }
    }
}

/// A running generation that settles itself: when it is dropped (read to the end, failed,
/// or abandoned by a client that left), its receipt goes to the settler, which records
/// the usage and charges it exactly once.
pub struct Metered {
    events: mpsc::UnboundedReceiver<GenerationEvent>,
    pending: Option<Pending>,
    settle: mpsc::UnboundedSender<Pending>,
    stop: CancellationToken,
    stopped: bool,
    running: Arc<AtomicUsize>,
    _user_slot: UserSlot,
}

impl Metered {
    /// `running`: the gateway's count of running generations (this one is in it until
    /// dropped); `stop`: cancelled at the end of a shutdown's drain.
    pub(crate) fn new(
        generation: Generation,
        bill: Bill,
        settle: mpsc::UnboundedSender<Pending>,
        stop: CancellationToken,
        running: Arc<AtomicUsize>,
        user_slot: UserSlot,
    ) -> Metered {
        let Generation { events, receipt, .. } = generation;
        running.fetch_add(1, Ordering::AcqRel);
        Metered {
            events,
            pending: Some(Pending { bill, receipt, waived: false, written: None }),
            settle,
            stop,
            stopped: false,
            running,
            _user_slot: user_slot,
        }
    }

    /// The client will receive nothing of this generation (it failed before a non-streamed
    /// answer was complete): the usage is recorded, the request is not charged.
    pub fn waive(&mut self) {
        if let Some(pending) = self.pending.as_mut() {
            pending.waived = true;
        }
    }

    /// Settles the request now and waits until its bill is written: called once it has
    /// `Finished`, before the response's last bytes (the `[DONE]`, the JSON body). So a
    /// response the client received whole is billed even if the process is killed right
    /// after; a kill can only lose the bill of a response that was not complete.
    pub async fn seal(&mut self) {
        let Some(mut pending) = self.pending.take() else { return };
        let (written, was_written) = oneshot::channel();
        pending.written = Some(written);
        match self.settle.send(pending) {
            Ok(()) => {
                let _ = was_written.await;
            }
            Err(lost) => warn!(request_id = %lost.0.bill.request_id, "settler gone; request left unsettled"),
        }
    }

    /// The next event; after [`Gateway::stop_generations`], a last `Failed` instead.
    pub async fn recv(&mut self) -> Option<GenerationEvent> {
        if self.stopped {
            return None;
        }
        tokio::select! {
            biased;
            event = self.events.recv() => event,
            () = self.stop.cancelled() => {
                self.stopped = true;
                Some(GenerationEvent::Failed("the server is shutting down".into()))
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        if let Some(pending) = self.pending.take() {
            if let Err(lost) = self.settle.send(pending) {
                // Only when the settler is gone (shutdown past its deadline): the hold stays
                // is voided when the replica retires, so the request is not charged.
                warn!(request_id = %lost.0.bill.request_id, "settler gone; request left unsettled");
            }
        }
    }
}
