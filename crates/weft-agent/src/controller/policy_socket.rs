//! The agent's side of the CNI ADD's policy wait, on a node whose pods a kubelet runs
//! (`--no-pods` with network policy on). The container runtime starts a pod's process as
//! soon as the plugin's ADD returns, and the API gives the pod's address only after that
//! (its status), so the plugin asks here first: it sends the pod's namespace, name and
//! the addresses IPAM gave (`weft_cni::policy_wait`, one JSON line each way), and this
//! enters the pod, as this node's watch has it, with those addresses into the policy
//! view and answers once the commit that includes it is in the kernel. The pod thus
//! starts isolated, as a pod the agent runs itself does (`policy::before_start`).
//!
//! The socket is root's alone (mode 0600, in the agent's 0700 state directory): whoever
//! can talk to it can make the agent commit. A stale one (a crashed agent's) is replaced
//! at start, and removed when the agent stops (an error return, SIGTERM or SIGINT).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use weft_cni::policy_wait::{parse_request, Answer, Request, MAX_LINE};

use super::lag::Queue;
use super::policy::{commit_starting, Event};
use super::{AgentError, Result};

/// The socket's name in the agent's state directory.
pub const SOCKET_NAME: &str = "policy.sock";
/// A client that connects must send its request within this.
const READ_WAIT: Duration = Duration::from_secs(2);
/// kubelet runs ADD only for a pod already bound to this node, but this node's watch may
/// not have delivered it yet.
const POD_WAIT: Duration = Duration::from_secs(3);
/// The commit's bound. With POD_WAIT, within the plugin's default 10 s, so the runtime
/// gets this side's reason rather than a bare timeout.
const COMMIT_WAIT: Duration = Duration::from_secs(6);
/// How often the watch cache is looked at while a pod is not in it.
const POLL: Duration = Duration::from_millis(25);

/// The listening socket; dropping it removes the file.
pub struct PolicySocket {
    path: PathBuf,
}

impl Drop for PolicySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io(op: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { op, source }
}

/// Removes what a previous agent left at `path`; refuses to remove anything else.
fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io(format!("remove stale {}", path.display())))
        }
        Ok(_) => Err(AgentError::Io {
            op: format!("listen on {}", path.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ),
        }),
        Err(_) => Ok(()),
    }
}

/// Listens on `path` (from within the agent's runtime): each request is answered from
/// `pods` (this node's watch cache) and the policy thread behind `policy`.
pub fn serve(path: PathBuf, pods: Store<Pod>, policy: Queue<Event>) -> Result<PolicySocket> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(format!("create {}", dir.display())))?;
    }
    remove_stale(&path)?;
    let listener =
        UnixListener::bind(&path).map_err(io(format!("listen on {}", path.display())))?;
    let guard = PolicySocket { path: path.clone() };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod 0600 {}", path.display())))?;
    let pods = Arc::new(pods);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    tokio::spawn(answer(conn, pods.clone(), policy.clone()));
                }
                Err(e) => {
                    // Out of descriptors, most likely: the plugin times out and the runtime
                    // retries; back off rather than spin.
                    tracing::warn!("policy socket: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tracing::info!(socket = %path.display(), "CNI ADD waits here for each new pod's network policy");
    Ok(guard)
}

impl PolicySocket {
    /// Where it listens: what the CNI config's `policySocket` names.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SIGTERM and SIGINT would end the process without running destructors: from now on
    /// they take the socket away first, then stop the process as the signal would have.
    pub fn remove_on_signal(&self) {
        remove_on_signal(self.path.clone())
    }
}

fn remove_on_signal(path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("policy socket: no signal handler; a stopped agent leaves the socket, which the next one replaces");
        return;
    };
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = term.recv() => 143,
            _ = int.recv() => 130,
        };
        let _ = std::fs::remove_file(&path);
        std::process::exit(code);
    });
}

/// One request, one answer.
async fn answer(conn: UnixStream, pods: Arc<Store<Pod>>, policy: Queue<Event>) {
    let (r, mut w) = conn.into_split();
    let reply = match tokio::time::timeout(READ_WAIT, read_request(r)).await {
        Err(_) => Answer::refused(format!("no request within {READ_WAIT:?}")),
        Ok(Err(e)) => Answer::refused(e),
        Ok(Ok(req)) => {
            let who = format!("{}/{}", req.namespace, req.name);
            match admit(req, &pods, &policy).await {
                Ok(()) => {
                    tracing::debug!(pod = %who, "policy in force before the pod starts");
                    Answer::ok()
                }
                Err(e) => {
                    tracing::warn!(pod = %who, "CNI ADD's policy wait refused: {e}");
                    Answer::refused(e)
                }
            }
        }
    };
    // The plugin may have given up already; it fails its ADD either way.
    let _ = w.write_all(&reply.to_line()).await;
    let _ = w.shutdown().await;
}

async fn read_request(r: tokio::net::unix::OwnedReadHalf) -> std::result::Result<Request, String> {
    let mut line = Vec::with_capacity(256);
    // One byte over the limit is enough to tell an oversized request.
    BufReader::new(r.take(MAX_LINE as u64 + 1))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("read the request: {e}"))?;
    parse_request(&line).map_err(|e| e.msg)
}

/// The pod from this node's watch, entered with the runtime's addresses and committed.
async fn admit(
    req: Request,
    pods: &Store<Pod>,
    policy: &Queue<Event>,
) -> std::result::Result<(), String> {
    let pod = find(pods, &req).await?;
    let tx = policy.clone();
    tokio::task::spawn_blocking(move || commit_starting(&tx, &pod, req.ips, COMMIT_WAIT))
        .await
        .map_err(|e| format!("the commit's task failed: {e}"))?
}

/// The pod as this node's watch has it, waiting up to POD_WAIT for the watch to catch up
/// (also when it still holds an older pod of the same name: a different uid).
async fn find(pods: &Store<Pod>, req: &Request) -> std::result::Result<Pod, String> {
    let key = ObjectRef::new(&req.name).within(&req.namespace);
    let started = Instant::now();
    loop {
        let found = pods.get(&key);
        let problem = match (&found, &req.uid) {
            (Some(p), Some(uid)) if p.metadata.uid.as_ref() != Some(uid) => format!(
                "pod {}/{} in this node's watch has uid {}, the runtime's has {uid}",
                req.namespace,
                req.name,
                p.metadata.uid.as_deref().unwrap_or("(none)")
            ),
            (Some(p), _) => return Ok((**p).clone()),
            (None, _) => format!(
                "pod {}/{} is not bound to this node (not in its watch of pods with \
                 spec.nodeName set to it)",
                req.namespace, req.name
            ),
        };
        if started.elapsed() >= POD_WAIT {
            return Err(format!("{problem}, after waiting {POD_WAIT:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};
    use std::net::IpAddr;

    fn pod(ns: &str, name: &str, uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p
    }

    /// A policy thread that commits whatever it is sent, and reports what it was sent.
    fn policy_thread() -> (
        Queue<Event>,
        std::sync::mpsc::Receiver<(String, Vec<IpAddr>)>,
    ) {
        let (q, mut rx) = super::super::lag::queue(
            super::super::lag::Registry::default().component("policy"),
            8,
        );
        let (seen_tx, seen) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Event::Starting { pod, ips, done } = e {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let _ = seen_tx.send((name, ips));
                    let _ = done.send(Ok(()));
                }
            }
        });
        (q, seen)
    }

    /// Sends `line` through a socket pair to `answer` and returns its reply.
    async fn ask(line: &[u8], pods: Store<Pod>, q: Queue<Event>) -> Answer {
        let (mut client, server) = UnixStream::pair().unwrap();
        let served = tokio::spawn(answer(server, Arc::new(pods), q));
        client.write_all(line).await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        served.await.unwrap();
        weft_cni::policy_wait::parse_answer(&reply).unwrap()
    }

    fn request(name: &str, uid: Option<&str>) -> Vec<u8> {
        Request {
            version: 1,
            namespace: "np".into(),
            name: name.into(),
            container_id: "c1".into(),
            ips: vec!["10.244.3.2".parse().unwrap()],
            uid: uid.map(str::to_string),
        }
        .to_line()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_pod_is_committed_with_the_runtimes_addresses() {
        let (store, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Apply(pod("np", "web-0", "u1")));
        let (q, seen) = policy_thread();
        let a = ask(&request("web-0", Some("u1")), store.clone(), q.clone()).await;
        assert_eq!(a, Answer::ok());
        let (name, ips) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(name, "web-0");
        assert_eq!(ips, vec!["10.244.3.2".parse::<IpAddr>().unwrap()]);

        // Another pod of that name (a uid the watch does not have yet) is refused.
        let a = ask(&request("web-0", Some("u2")), store, q).await;
        let e = a.error.unwrap_or_default();
        assert!(
            !a.ok && e.contains("has uid u1, the runtime's has u2"),
            "{e}"
        );
        assert!(seen.try_recv().is_err(), "nothing committed for it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_or_unknown_requests_are_refused_with_the_reason() {
        let (store, _writer) = reflector::store::<Pod>();
        let (q, seen) = policy_thread();
        let a = ask(&request("absent", None), store.clone(), q.clone()).await;
        let e = a.error.unwrap_or_default();
        assert!(
            !a.ok && e.contains("pod np/absent is not bound to this node"),
            "{e}"
        );
        // Exactly what the server reads of it: bytes left unread would reset the
        // connection on close, and the client would not see the answer.
        let big = vec![b'x'; MAX_LINE + 1];
        let e = ask(&big, store.clone(), q.clone())
            .await
            .error
            .unwrap_or_default();
        assert!(e.contains("over the limit of 4096"), "{e}");
        let e = ask(b"{\"version\":9}\n", store, q)
            .await
            .error
            .unwrap_or_default();
        assert!(e.contains("unsupported version 9"), "{e}");
        assert!(
            seen.try_recv().is_err(),
            "nothing reached the policy thread"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/policy.sock");
        let (store, _writer) = reflector::store::<Pod>();
        let (q, _seen) = policy_thread();
        let first = serve(path.clone(), store.clone(), q.clone()).unwrap();
        // A crashed agent's socket is still there: the next one takes the path over.
        std::mem::forget(first);
        let second = serve(path.clone(), store.clone(), q.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(second);
        assert!(!path.exists());
        // Never a file that is not a socket.
        std::fs::write(&path, b"mine").unwrap();
        assert!(serve(path.clone(), store, q).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
    }
}
