//! The one place a process follows the notices of the other processes on its database
//! (PostgreSQL `LISTEN`, one connection; nothing on SQLite): Control Plane changes leave
//! this process's caches, other replicas' requests for a user's money are answered from
//! this one's leases.

use std::future::Future;
use std::time::Duration;

use tm_control::Control;
use tm_gateway::Gateway;
use tm_store::notices::Channel;
use tracing::warn;

/// Follows until `stop` resolves. A lost connection is made again; notices may have been
/// missed meanwhile, so the caches they keep fresh are emptied once it is.
pub(crate) async fn follow(control: &Control, gateway: Option<&Gateway>, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut reconnecting = false;
    loop {
        let mut notices = tokio::select! {
            () = &mut stop => return,
            notices = control.store().notices() => match notices {
                Ok(Some(notices)) => notices,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "cannot listen for the other replicas' notices; retrying");
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        if reconnecting {
            // Whatever changed while no listener was up.
            control.forget_cached();
        }
        reconnecting = true;
        loop {
            let next = tokio::select! {
                () = &mut stop => return,
                next = notices.next() => next,
            };
            match next {
                Ok(Some(notice)) => match notice.channel {
                    Channel::Changes => control.apply_notice(&notice.payload),
                    Channel::Leases => {
                        if let Some(gateway) = gateway {
                            gateway.answer_lease_request(&notice.payload).await;
                        }
                    }
                },
                // The connection dropped: listen anew, and forget what may have changed
                // meanwhile once listening again (not now: while the database is away, the
                // caches are what keeps requests served).
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "lost the other replicas' notices; listening again");
                    break;
                }
            }
        }
    }
}
