//! `attach`: a running container's output as it is written, over the same WebSocket
//! protocol as exec (`v5.channel.k8s.io`): stdout on channel 1, stderr on 2, read back
//! from the container's CRI log as the log writer appends to it. Containers here run with
//! stdin closed and without a terminal, so `-i` and `-t` are refused (as a kubelet refuses
//! them for a container without `stdin: true` / `tty: true`). The session ends with a
//! `Success` status when the container ends (its log becomes the previous one) or the pod
//! stops running here.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::exec::PROTOCOL;
use super::logs::{parse, Entry};
use super::{query_pairs, query_true, status_response, Shared};
use crate::launch::find_recorded;

pub(crate) async fn handle(
    State(s): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let q = query_pairs(q.as_deref());
    let log = match super::find_container(&s, &namespace, &pod, &container).await {
        Ok(dir) => dir.log(&container),
        Err(status) => return *status,
    };
    if query_true(&q, "stdin") || query_true(&q, "tty") {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("container {container} runs with stdin closed and no terminal: attach shows its output only (drop -i and -t)"),
        );
    }
    let offered = super::offers_subprotocol(&headers, PROTOCOL);
    let (Ok(ws), true) = (ws, offered) else {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "attach is a WebSocket upgrade speaking v5.channel.k8s.io (kubectl 1.30 or later); SPDY is not served",
        );
    };
    let (stdout, stderr) = (query_true(&q, "stdout"), query_true(&q, "stderr"));
    let follow = (s.cfg.pods_state_dir.clone(), namespace, pod);
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| session(socket, log, stdout, stderr, follow))
}

async fn session(
    socket: WebSocket,
    log: PathBuf,
    stdout: bool,
    stderr: bool,
    follow: (PathBuf, String, String),
) {
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || tail(log, follow, tx));
    loop {
        tokio::select! {
            entry = rx.recv() => match entry {
                Some(frame) => {
                    let wanted = match frame.first() { Some(1) => stdout, Some(2) => stderr, _ => false };
                    if wanted && sink.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            m = incoming.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                _ => {}
            },
        }
    }
    let mut status = vec![3u8];
    status.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
    let _ = sink.send(Message::Binary(status.into())).await;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}

/// Follows the log from its current end, sending each entry as a channel frame, until
/// the container starts over, the pod is gone or the receiver leaves.
fn tail(log: PathBuf, follow: (PathBuf, String, String), tx: mpsc::Sender<Vec<u8>>) {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let (state_dir, ns, name) = follow;
    let Ok(mut file) = std::fs::File::open(&log) else {
        return;
    };
    let _ = file.seek(SeekFrom::End(0));
    let mut inode = file.metadata().ok().map(|m| m.ino());
    let mut carry: Vec<u8> = Vec::new();
    let mut partial: Option<Entry> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut checked = std::time::Instant::now();
    loop {
        let mut got = false;
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            carry.extend_from_slice(&buf[..n]);
            got = true;
        }
        if got {
            let cut = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let rest = carry.split_off(cut);
            let mut entries = Vec::new();
            parse(&carry, &mut partial, &mut entries);
            carry = rest;
            for e in entries {
                let mut frame = vec![if e.stream == "stderr" { 2u8 } else { 1u8 }];
                frame.extend_from_slice(&e.text);
                frame.push(b'\n');
                if tx.blocking_send(frame).is_err() {
                    return;
                }
            }
            continue;
        }
        if tx.is_closed() {
            return;
        }
        let now = std::fs::metadata(&log).ok().map(|m| m.ino());
        if now != inode {
            let previous = log.with_file_name(format!(
                "{}.previous.log",
                log.file_stem().and_then(|s| s.to_str()).unwrap_or_default()
            ));
            if std::fs::metadata(&previous).ok().map(|m| m.ino()) == inode {
                return; // the container ended and started over
            }
            match std::fs::File::open(&log) {
                Ok(f) => {
                    file = f;
                    inode = now;
                }
                Err(_) => return,
            }
            continue;
        }
        if checked.elapsed() > Duration::from_secs(1) {
            checked = std::time::Instant::now();
            if !matches!(find_recorded(&state_dir, &ns, &name), Ok(Some(_))) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
