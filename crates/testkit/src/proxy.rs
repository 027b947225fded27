//! A TCP proxy on loopback that a test can cut and restore, to take a server (PostgreSQL)
//! away from a process under test and give it back, as an outage or a partition would.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection to its address to the target while up.
pub struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    /// Starts forwarding to `target`, on the caller's runtime (it lives as long as that).
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (up, watching) = watch::channel(true);
        #[allow(clippy::disallowed_methods)] // test furniture: lives as long as the test's runtime
        tokio::spawn(serve(listener, addr, target, watching));
        Proxy { addr, up }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every forwarded connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

async fn serve(listener: TcpListener, addr: SocketAddr, target: SocketAddr, mut up: watch::Receiver<bool>) {
    let mut listener = Some(listener);
    loop {
        while !*up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
        }
        let current = match listener.take() {
            Some(l) => l,
            None => match bind_again(addr).await {
                Some(l) => l,
                None => return,
            },
        };
        // Connections of this period end with it.
        let (period, _) = watch::channel(());
        loop {
            tokio::select! {
                accepted = current.accept() => {
                    let Ok((client, _)) = accepted else { continue };
                    let mut ended = period.subscribe();
                    #[allow(clippy::disallowed_methods)] // ends with its period
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else { return };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = ended.changed() => {}
                        }
                    });
                }
                changed = up.changed() => {
                    if changed.is_err() || !*up.borrow() {
                        break;
                    }
                }
            }
        }
        // Dropping the sender ends every connection of the period; dropping the listener
        // makes new connections fail at once (refused).
        drop(period);
        drop(current);
    }
}

/// The same address again (the port was just released).
async fn bind_again(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
