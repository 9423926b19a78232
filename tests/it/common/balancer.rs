//! A TCP load balancer on loopback, the way replicas sit behind one address
//! in production: connections go round robin to the backends, skipping one
//! that refuses connections (a replica that died).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    pub url: String,
    accepting: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn spawn(backends: Vec<u16>) -> Self {
        Self::spawn_on(0, backends).await
    }

    /// Listens on `port` (0 for any free one): a test can hand out the address before anything answers there.
    pub async fn spawn_on(port: u16, backends: Vec<u16>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (next, backends) = (next.clone(), backends.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for offset in 0..backends.len() {
                        let port = backends[(first + offset) % backends.len()];
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { url, accepting }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
