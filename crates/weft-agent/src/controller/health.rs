//! The HTTP servers behind `healthCheckNodePort`s: one listener per port, answering from
//! state the service controller updates (see `weft_proxy::health`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use weft_proxy::health::Health;

#[derive(Default)]
pub struct HealthServers {
    running: BTreeMap<u16, (JoinHandle<()>, Arc<RwLock<Health>>)>,
}

impl HealthServers {
    /// Serves exactly `want`: new ports start, gone ones stop, the rest report anew.
    /// Returns whether every wanted port is being served.
    pub fn sync(&mut self, want: BTreeMap<u16, Health>) -> bool {
        let mut all = true;
        self.running.retain(|port, (task, _)| {
            let keep = want.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, health) in want {
            if let Some((_, state)) = self.running.get(&port) {
                // Replaced whole, so a panic elsewhere cannot have left it half-written:
                // a poisoned lock is taken over rather than freezing what the port says.
                *state.write().unwrap_or_else(|p| p.into_inner()) = health;
                continue;
            }
            match std::net::TcpListener::bind(("0.0.0.0", port)).and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(listener) => {
                    let state = Arc::new(RwLock::new(health));
                    let task = tokio::spawn(serve(listener, state.clone()));
                    self.running.insert(port, (task, state));
                }
                Err(e) => {
                    tracing::warn!(port, "health check port: {e}; retrying");
                    all = false;
                }
            }
        }
        all
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for (task, _) in self.running.values() {
            task.abort();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<RwLock<Health>>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            // Any request gets the answer; read what the client sent first (bounded), so
            // closing does not reset a request still arriving.
            let mut buf = [0u8; 2048];
            let mut seen = Vec::new();
            let read = async {
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
            let (status, body) = {
                let h = state.read().unwrap_or_else(|p| p.into_inner());
                (h.status(), h.body())
            };
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let reply = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
