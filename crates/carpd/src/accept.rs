//! The accept loop of carpd's local servers (control socket, metrics): a
//! bounded number of clients, and no busy loop when accepting fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// A listening socket that hands out connected streams.
pub trait Listener {
    type Stream: Send + 'static;

    fn accept_stream(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept_stream(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;

    async fn accept_stream(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Serve each client with `client` until the task is aborted (aborting also
/// ends every connection). Beyond `max_clients` at once, a new connection
/// is closed at once. `what` names the server in the log.
pub async fn serve<L, F>(
    what: &str,
    listener: L,
    max_clients: usize,
    mut client: impl FnMut(L::Stream) -> F,
) where
    L: Listener,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_clients));
    let mut clients = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept_stream() => a,
            Some(_) = clients.join_next() => continue,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "{what}: accept failed");
                // e.g. out of file descriptors: do not spin
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("{what}: too many clients, connection closed");
            continue;
        };
        let served = client(stream);
        clients.spawn(async move {
            served.await;
            drop(slot);
        });
    }
}
