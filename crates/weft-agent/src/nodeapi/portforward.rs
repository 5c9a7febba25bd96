//! `portForward`: TCP to a pod's ports, the protocol kubectl 1.31+ speaks: a WebSocket
//! with the subprotocol `SPDY/3.1+portforward.k8s.io` whose binary messages carry a SPDY
//! connection ([`super::spdy`]). For each local connection kubectl opens two streams
//! with the same `requestID` and `port`: `streamType: error` and `streamType: data`. The
//! data stream is spliced to `127.0.0.1:<port>` inside the pod's network namespace; a
//! failure to connect is written on the error stream. Either stream ends with a FIN from
//! its sender; this side closes both once the pod's end of the connection is done.
//! Any number of connections share one session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Frame};
use super::{status_response, Shared};
use crate::launch::find_recorded;

pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

pub(crate) async fn handle(
    State(s): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let dir = s.cfg.pods_state_dir.clone();
    let (ns, name) = (namespace.clone(), pod.clone());
    let found = tokio::task::spawn_blocking(move || {
        find_recorded(&dir, &ns, &name)
            .ok()
            .flatten()
            .map(|r| (r.rec.netns_name, r.rec.ips, r.plan.uid))
    })
    .await
    .ok()
    .flatten();
    let Some((netns, ips, uid)) = found else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod {namespace}/{pod} is not running on this node"),
        );
    };
    let offered = super::offers_subprotocol(&headers, PROTOCOL);
    let (Ok(ws), true) = (ws, offered) else {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "port-forward is a WebSocket upgrade speaking SPDY/3.1+portforward.k8s.io (kubectl 1.31 or later); plain SPDY is not served",
        );
    };
    let target = Target {
        netns,
        pod_ip: ips.first().copied(),
        who: format!("{namespace}/{pod}, uid {uid}"),
    };
    tracing::info!(pod = %format!("{namespace}/{pod}"), "port-forward");
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| session(socket, Arc::new(target)))
}

struct Target {
    netns: String,
    pod_ip: Option<std::net::IpAddr>,
    who: String,
}

/// One half of a forwarded connection while its other stream is awaited.
#[derive(Default)]
struct Pending {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Option<Vec<u8>>>)>,
    port: u16,
}

async fn session(socket: WebSocket, target: Arc<Target>) {
    let (mut sink, mut incoming) = socket.split();
    // Bounded both ways: a slow reader on either side slows its sender down instead of
    // growing a queue (SPDY here has no flow control of its own).
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // The messages' payloads are one byte stream.
    let (mut feed, mut reader) = tokio::io::duplex(256 * 1024);
    let feeder = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            match m {
                Message::Binary(b) if feed.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let mut enc = spdy::HeaderEncoder::default();
    let mut dec = spdy::HeaderDecoder::default();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    loop {
        let frame = match spdy::read_frame(&mut reader).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("port-forward: {e}");
                break;
            }
        };
        match frame {
            Frame::Control {
                kind: spdy::SYN_STREAM,
                payload,
                ..
            } if payload.len() >= 10 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                let headers = match dec.decode(&payload[10..]) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!("port-forward: {e}");
                        break;
                    }
                };
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let _ = out_tx.send(enc.syn_reply(id)).await;
                let port: u16 = match get("port").parse() {
                    Ok(p) => p,
                    Err(_) => {
                        let _ = out_tx.send(spdy::rst_stream(id, 1)).await;
                        continue;
                    }
                };
                let request = get("requestid");
                let p = pending.entry(request.clone()).or_default();
                p.port = port;
                match get("streamtype").as_str() {
                    "error" => p.error = Some(id),
                    "data" => {
                        let (tx, rx) = mpsc::channel(64);
                        to_pod.insert(id, tx);
                        p.data = Some((id, rx));
                    }
                    _ => {
                        let _ = out_tx.send(spdy::rst_stream(id, 1)).await;
                        continue;
                    }
                }
                if p.error.is_some() && p.data.is_some() {
                    if let Some(Pending {
                        error: Some(error),
                        data: Some((data, rx)),
                        port,
                    }) = pending.remove(&request)
                    {
                        tokio::spawn(forward(
                            target.clone(),
                            port,
                            error,
                            data,
                            rx,
                            out_tx.clone(),
                        ));
                    }
                }
            }
            Frame::Control {
                kind: spdy::PING,
                flags,
                payload,
            } => {
                let _ = out_tx
                    .send(spdy::control(spdy::PING, flags, &payload))
                    .await;
            }
            Frame::Control {
                kind: spdy::RST_STREAM,
                payload,
                ..
            } if payload.len() >= 4 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                to_pod.remove(&id);
            }
            Frame::Control {
                kind: spdy::GOAWAY, ..
            } => break,
            Frame::Control { .. } => {}
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if let Some(tx) = to_pod.get(&stream) {
                    if !data.is_empty() {
                        let _ = tx.send(Some(data)).await;
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        let _ = tx.send(None).await;
                        to_pod.remove(&stream);
                    }
                }
            }
        }
    }
    drop(to_pod);
    drop(out_tx);
    feeder.abort();
    let _ = writer.await;
}

/// Connects to the pod's port from inside its network namespace: localhost first, as a
/// container runtime does, else the pod's address.
async fn connect(target: &Target, port: u16) -> Result<tokio::net::TcpStream, String> {
    let netns = target.netns.clone();
    let pod_ip = target.pod_ip;
    let std_stream = tokio::task::spawn_blocking(move || {
        let ns = weft_netlink::Netns::from_name(&netns).map_err(|e| e.to_string())?;
        ns.run_in(|| {
            let timeout = std::time::Duration::from_secs(5);
            let local = SocketAddr::from(([127, 0, 0, 1], port));
            std::net::TcpStream::connect_timeout(&local, timeout).or_else(|e| match pod_ip {
                Some(ip) => {
                    std::net::TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout)
                }
                None => Err(e),
            })
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    std_stream
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(std_stream).map_err(|e| e.to_string())
}

async fn forward(
    target: Arc<Target>,
    port: u16,
    error: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let tcp = match connect(&target, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {}: {e}", target.who);
            let _ = out.send(spdy::data(error, false, msg.as_bytes())).await;
            let _ = out.send(spdy::data(error, true, &[])).await;
            let _ = out.send(spdy::data(data, true, &[])).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let up = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            match chunk {
                Some(b) => {
                    if wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
                None => break,
            }
        }
        // The client finished sending (or left): the pod sees the end of its input.
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(spdy::data(data, false, &buf[..n])).await.is_err() {
                    up.abort();
                    return;
                }
            }
        }
    }
    let _ = out.send(spdy::data(data, true, &[])).await;
    let _ = out.send(spdy::data(error, true, &[])).await;
    up.abort();
}
