//! `exec` over WebSocket, the `v5.channel.k8s.io` protocol kubectl 1.30+ speaks.
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr (client
//! to server: 0, 4 and 255), 3 the final `Status` (JSON: `Success`, or `Failure` with
//! reason `NonZeroExitCode` and the code as the `ExitCode` cause), 4 a terminal resize
//! (`{"Width":W,"Height":H}`), and 255 a stream's close (`[255, channel]`: the client's
//! stdin is at its end). The server sends the status last, then closes the WebSocket
//! normally; kubectl then exits with the command's code. With `tty=true` the command
//! gets a pseudo-terminal (stdout carries its output, there is no stderr) in a session of
//! its own, whose controlling terminal it is.
//!
//! The command is built exactly as `weft lab exec` builds it (the pod's network
//! namespace, a private mount namespace with the pod's resolv.conf and hosts, its host
//! name, the container's environment), here in the agent of the pod's node.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{query_pairs, query_true, status_response, Shared};
use crate::error::Error;

pub const PROTOCOL: &str = "v5.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy)]
struct Opts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

pub(crate) async fn handle(
    State(s): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let q = query_pairs(q.as_deref());
    let argv: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let opts = Opts {
        stdin: query_true(&q, "stdin"),
        stdout: query_true(&q, "stdout"),
        stderr: query_true(&q, "stderr"),
        tty: query_true(&q, "tty"),
    };
    if argv.is_empty() {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one command for the container",
        );
    }
    let (dir, bin) = (s.cfg.pods_state_dir.clone(), s.cfg.weft_bin.clone());
    let (ns, name, c, a) = (
        namespace.clone(),
        pod.clone(),
        container.clone(),
        argv.clone(),
    );
    let built = tokio::task::spawn_blocking(move || {
        crate::launch::exec_in_container(&dir, &bin, &ns, &name, Some(&c), &a, opts.tty)
    })
    .await;
    let cmd = match built {
        Ok(Ok(cmd)) => Ok(cmd),
        Ok(Err(Error::UnknownPod(_))) => {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("pod {namespace}/{pod} is not running on this node"),
            )
        }
        Ok(Err(Error::InvalidPod { field, reason, .. })) if field == "container" => {
            return status_response(StatusCode::BAD_REQUEST, "BadRequest", &reason)
        }
        // Found, but the command cannot start (no such program...): as a runtime does, the
        // session opens and ends at once with the reason.
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("exec: {e}")),
    };
    let Ok(ws) = ws else {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "exec is a WebSocket upgrade speaking v5.channel.k8s.io (kubectl 1.30 or later); SPDY is not served",
        );
    };
    let offered = super::offers_subprotocol(&headers, PROTOCOL);
    if !offered {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "exec speaks the v5.channel.k8s.io subprotocol only (kubectl 1.30 or later)",
        );
    }
    tracing::info!(pod = %format!("{namespace}/{pod}"), %container, command = ?argv, tty = opts.tty, "exec");
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| session(socket, cmd, opts))
}

async fn session(socket: WebSocket, cmd: Result<std::process::Command, String>, opts: Opts) {
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let status = match cmd {
        Ok(cmd) => match run(cmd, opts, &tx, &mut incoming).await {
            Ok(Some(code)) => exit_status(code),
            // The client went away: nobody to tell.
            Ok(None) => {
                drop(tx);
                let _ = writer.await;
                return;
            }
            Err(msg) => failure(&msg),
        },
        Err(msg) => failure(&msg),
    };
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    let _ = tx.send(Message::Binary(frame.into())).await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    drop(tx);
    let _ = writer.await;
}

/// The final status for an exit code (128+N for signal N).
pub(crate) fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn failure(message: &str) -> Value {
    json!({
        "metadata": {}, "status": "Failure", "reason": "InternalError",
        "message": format!("error executing command in container: {message}"),
    })
}

type Incoming = futures::stream::SplitStream<WebSocket>;

/// What the client sent, decoded.
enum Input {
    Stdin(bytes::Bytes),
    StdinClosed,
    Resize(u16, u16),
    Gone,
    Other,
}

fn decode(m: Option<Result<Message, axum::Error>>) -> Input {
    match m {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Input::Gone,
        Some(Ok(Message::Binary(b))) => match b.first().copied() {
            Some(STDIN) => Input::Stdin(b.slice(1..)),
            Some(CLOSE) if b.get(1) == Some(&STDIN) => Input::StdinClosed,
            Some(RESIZE) => {
                let v: Value = serde_json::from_slice(&b[1..]).unwrap_or_default();
                match (v["Width"].as_u64(), v["Height"].as_u64()) {
                    (Some(w), Some(h)) => Input::Resize(w as u16, h as u16),
                    _ => Input::Other,
                }
            }
            _ => Input::Other,
        },
        Some(Ok(_)) => Input::Other,
    }
}

/// Copies `r` to the client on `channel` until its end.
async fn pump(mut r: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf[0] = channel;
                if tx
                    .send(Message::Binary(bytes::Bytes::copy_from_slice(
                        &buf[..n + 1],
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn code_of(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Runs the command with the session's streams; its exit code, None if the client left
/// first (the command is then killed).
async fn run(
    mut cmd: std::process::Command,
    opts: Opts,
    tx: &mpsc::Sender<Message>,
    incoming: &mut Incoming,
) -> Result<Option<i32>, String> {
    let mut master: Option<OwnedFd> = None;
    if opts.tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("pty: {e}"));
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave))
            .env("TERM", "xterm");
        // SAFETY: one ioctl between fork and exec, after the session was created by the
        // pod's isolation step (registered earlier, so it runs first).
        unsafe {
            cmd.pre_exec(|| {
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        master = Some(pty.master);
    } else {
        let pipe_or_null = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe_or_null(opts.stdin))
            .stdout(pipe_or_null(opts.stdout))
            .stderr(pipe_or_null(opts.stderr));
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let spawned = cmd.spawn();
    // The command holds the terminal's other end until dropped: the master only sees the
    // end of the output once every copy of it is closed.
    drop(cmd);
    let mut child = spawned.map_err(|e| e.to_string())?;

    let mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> = None;
    let mut pumps = Vec::new();
    let mut resize_fd: Option<OwnedFd> = None;
    if let Some(m) = master {
        let f = std::fs::File::from(m);
        let reader = f.try_clone().map_err(|e| e.to_string())?;
        resize_fd = Some(OwnedFd::from(f.try_clone().map_err(|e| e.to_string())?));
        pumps.push(tokio::spawn(pump(
            tokio::fs::File::from_std(reader),
            STDOUT,
            tx.clone(),
        )));
        if opts.stdin {
            stdin = Some(Box::new(tokio::fs::File::from_std(f)));
        }
    } else {
        if let Some(o) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(o, STDOUT, tx.clone())));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(e, STDERR, tx.clone())));
        }
        if let Some(i) = child.stdin.take() {
            stdin = Some(Box::new(i));
        }
    }

    let input = async {
        loop {
            match decode(incoming.next().await) {
                Input::Stdin(data) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Input::StdinClosed => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                        if opts.tty {
                            // A terminal has no end of file of its own: ^D at a line's
                            // start is what a program on it reads as one.
                            let _ = w.write_all(&[4]).await;
                            let _ = w.flush().await;
                        }
                    }
                }
                Input::Resize(w, h) => {
                    if let Some(fd) = &resize_fd {
                        let ws = libc::winsize {
                            ws_row: h,
                            ws_col: w,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ on the terminal's master with a valid winsize.
                        unsafe {
                            libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws);
                        }
                    }
                }
                Input::Gone => return,
                Input::Other => {}
            }
        }
    };
    let code = tokio::select! {
        st = child.wait() => code_of(st.map_err(|e| e.to_string())?),
        _ = input => {
            let _ = child.kill().await;
            return Ok(None);
        }
    };
    // What the command wrote before it ended still goes out; a background process that
    // keeps the output open does not hold the session forever.
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_kubectl_reads_them() {
        assert_eq!(exit_status(0)["status"], "Success");
        let s = exit_status(3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
