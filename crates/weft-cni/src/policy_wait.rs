//! The ADD's wait for the node's NetworkPolicy. A runtime starts the pod's process as soon
//! as ADD returns, so a pod whose policy is not yet in the kernel would run unprotected
//! until the node agent learns its address from the API (the pod's status, written after
//! the sandbox is up). With `policySocket` in the network config, ADD instead asks the
//! agent, once the network is set up, to commit the policy of this pod with the
//! addresses IPAM gave, and returns only after the agent says it is in force. Anything
//! else (an error answer, no agent listening, no answer in time) fails the ADD, which
//! then undoes what it set up, so the runtime retries with nothing leaked.
//!
//! The wire format (version 1) is one JSON line each way over a unix stream socket, each
//! at most [`MAX_LINE`] bytes:
//!
//! ```text
//! -> {"version":1,"namespace":"np","name":"web-0","containerID":"4f2a...","ips":["10.244.1.7"],"uid":"..."}
//! <- {"version":1,"ok":true}
//! <- {"version":1,"ok":false,"error":"pod np/web-0 is not bound to this node"}
//! ```
//!
//! `uid` is optional (CNI_ARGS `K8S_POD_UID`, which newer runtimes pass). Both sides use
//! this module, so the format has one definition.

use crate::env::Invocation;
use crate::error::{code, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const VERSION: u64 = 1;
/// A request or an answer, newline included. Real ones are a few hundred bytes; the bound
/// keeps a confused peer from making either side buffer without end.
pub const MAX_LINE: usize = 4096;
/// Addresses per pod: one per family is what IPAM gives; a few more leave room.
pub const MAX_IPS: usize = 16;
/// How long ADD waits for the agent unless the config says (`policyTimeoutSeconds`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `policyTimeoutSeconds` accepted: runtimes give a whole ADD a few minutes.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The config's `policySocket` and `policyTimeoutSeconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyWait {
    pub socket: PathBuf,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u64,
    pub namespace: String,
    pub name: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub version: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer {
            version: VERSION,
            ok: true,
            error: None,
        }
    }

    pub fn refused(error: impl Into<String>) -> Answer {
        let mut error: String = error.into();
        // An answer must fit in MAX_LINE whatever the cause says.
        if error.len() > MAX_LINE / 2 {
            let mut cut = MAX_LINE / 2;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        Answer {
            version: VERSION,
            ok: false,
            error: Some(error),
        }
    }

    /// The line to send, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        line_of(self)
    }
}

fn line_of<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    b
}

fn bad(what: &str, problem: impl std::fmt::Display) -> Error {
    Error::new(code::DECODE, format!("policy {what}: {problem}"))
}

/// One line (trailing newline optional) as a JSON object of version [`VERSION`]: the
/// version is checked before the fields, so a newer peer gets "unsupported version"
/// rather than a complaint about a field it added.
fn parse_line(what: &str, line: &[u8]) -> Result<Value> {
    if line.len() > MAX_LINE {
        return Err(bad(
            what,
            format!("{} bytes, over the limit of {MAX_LINE}", line.len()),
        ));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let v: Value =
        serde_json::from_slice(line).map_err(|e| bad(what, format!("not a JSON line: {e}")))?;
    match v.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => Ok(v),
        Some(other) => Err(bad(
            what,
            format!("field `version`: unsupported version {other} (this side speaks {VERSION})"),
        )),
        None => Err(bad(what, "field `version`: missing")),
    }
}

pub fn parse_request(line: &[u8]) -> Result<Request> {
    let v = parse_line("request", line)?;
    let r: Request = serde_json::from_value(v).map_err(|e| bad("request", e))?;
    r.validate()?;
    Ok(r)
}

pub fn parse_answer(line: &[u8]) -> Result<Answer> {
    let v = parse_line("answer", line)?;
    let a: Answer = serde_json::from_value(v).map_err(|e| bad("answer", e))?;
    if !a.ok && a.error.as_deref().is_none_or(str::is_empty) {
        return Err(bad("answer", "field `error`: missing on a refusal"));
    }
    Ok(a)
}

/// RFC 1123 label: what a namespace name is (the node agent checks pod specs with it too).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what a pod name is.
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

impl Request {
    /// Each field as Kubernetes and the CNI spec allow it; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let field = |f: &str, v: &str, problem: &str| {
            bad("request", format!("field `{f}`: {v:?} {problem}"))
        };
        if !is_label(&self.namespace) {
            return Err(field(
                "namespace",
                &self.namespace,
                "is not a namespace name (RFC 1123 label)",
            ));
        }
        if !is_subdomain(&self.name) {
            return Err(field(
                "name",
                &self.name,
                "is not a pod name (RFC 1123 subdomain)",
            ));
        }
        let id_ok = self.container_id.len() <= 256
            && self
                .container_id
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && self
                .container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return Err(field(
                "containerID",
                &self.container_id,
                "must be 1-256 of alphanumerics, '_', '.', '-', starting alphanumeric",
            ));
        }
        if self.ips.is_empty() || self.ips.len() > MAX_IPS {
            return Err(bad(
                "request",
                format!(
                    "field `ips`: {} addresses, must be 1 to {MAX_IPS}",
                    self.ips.len()
                ),
            ));
        }
        if let Some(uid) = &self.uid {
            let ok = !uid.is_empty()
                && uid.len() <= 128
                && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(field("uid", uid, "is not a UID"));
            }
        }
        Ok(())
    }

    pub fn to_line(&self) -> Vec<u8> {
        line_of(self)
    }
}

/// What ADD will ask, built from CNI_ARGS before anything changes (so a runtime that does
/// not pass the pod's name fails before any state exists); the addresses come later.
#[derive(Debug, Clone)]
pub struct Pending {
    wait: PolicyWait,
    request: Request,
}

impl Pending {
    pub fn new(inv: &Invocation, wait: &PolicyWait) -> Result<Pending> {
        let arg = |k: &str| {
            inv.arg(k)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::invalid_env(
                        "CNI_ARGS",
                        format!(
                            "{k} is not set; the network config's policySocket ({}) makes ADD \
                             wait for the pod's NetworkPolicy, which needs the pod's namespace \
                             and name",
                            wait.socket.display()
                        ),
                    )
                })
        };
        let request = Request {
            version: VERSION,
            namespace: arg("K8S_POD_NAMESPACE")?,
            name: arg("K8S_POD_NAME")?,
            container_id: inv.container_id.clone(),
            // A stand-in so the name fields are checked now; `commit` sets the real
            // addresses and checks the request again.
            ips: vec![IpAddr::from([0, 0, 0, 0])],
            uid: inv
                .arg("K8S_POD_UID")
                .filter(|u| !u.is_empty())
                .map(str::to_string),
        };
        request
            .validate()
            .map_err(|e| Error::invalid_env("CNI_ARGS", e.msg))?;
        Ok(Pending {
            wait: wait.clone(),
            request,
        })
    }

    /// Asks the agent to commit the pod's policy with `ips`; Ok once it is in the kernel.
    pub fn commit(mut self, ips: Vec<IpAddr>) -> Result<()> {
        if ips.is_empty() {
            // No address (an `ipam`-less network): the pod sends and receives no IP, so
            // there is nothing for a policy to hold back.
            return Ok(());
        }
        self.request.ips = ips;
        self.request.validate()?;
        let (ns, name) = (&self.request.namespace, &self.request.name);
        let fail = |cause: String| {
            Error::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "network policy for pod {ns}/{name} is not in force: node agent at {}: {cause}",
                    self.wait.socket.display()
                ),
            )
            .with_details(
                "ADD waits for the agent so the pod never runs outside its policy; \
                 the network set up for it was undone, and the runtime retries",
            )
        };
        let timeout = self.wait.timeout;
        let (socket, line) = (self.wait.socket.clone(), self.request.to_line());
        // On a thread, so a peer that never accepts (a full backlog blocks connect) or
        // never answers cannot hold ADD past the timeout: the plugin exits without it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(exchange(&socket, &line, timeout));
        });
        let answer = match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(fail)?,
            Err(_) => return Err(fail(format!("no answer within {timeout:?}"))),
        };
        match answer {
            Answer { ok: true, .. } => Ok(()),
            Answer { error, .. } => Err(fail(format!("refused: {}", error.unwrap_or_default()))),
        }
    }
}

/// Sends `line`, reads one answer line, both within `timeout`.
fn exchange(socket: &Path, line: &[u8], timeout: Duration) -> std::result::Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(timeout))
        .and_then(|_| s.write_all(line))
        .map_err(|e| format!("send the request: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {timeout:?}"));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("set a read timeout: {e}"))?;
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {timeout:?}"))
            }
            Err(e) => return Err(format!("read the answer: {e}")),
        };
        if n == 0 {
            return Err("the agent closed the connection without an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_LINE {
            return Err(format!("an answer over {MAX_LINE} bytes"));
        }
    }
    let end = buf
        .iter()
        .position(|b| *b == b'\n')
        .map_or(buf.len(), |p| p + 1);
    parse_answer(&buf[..end]).map_err(|e| e.msg)
}

/// The config's `policySocket` / `policyTimeoutSeconds` (`None` without a socket).
pub fn parse_config(m: &serde_json::Map<String, Value>) -> Result<Option<PolicyWait>> {
    let socket = match m.get("policySocket") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            // sun_path holds 108 bytes with the terminating NUL.
            if !s.starts_with('/') || s.len() > 107 || s.contains('\0') {
                return Err(Error::invalid_config(
                    "policySocket",
                    format!("{s:?} must be an absolute path of at most 107 bytes"),
                ));
            }
            Some(PathBuf::from(s))
        }
        Some(v) => {
            return Err(Error::invalid_config(
                "policySocket",
                format!("must be a string, got {v}"),
            ))
        }
    };
    let timeout = match m.get("policyTimeoutSeconds") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x > 0.0 && x <= MAX_TIMEOUT.as_secs_f64() => {
                Some(Duration::from_secs_f64(x))
            }
            _ => {
                return Err(Error::invalid_config(
                    "policyTimeoutSeconds",
                    format!("{n} is outside (0, {}]", MAX_TIMEOUT.as_secs()),
                ))
            }
        },
        Some(v) => {
            return Err(Error::invalid_config(
                "policyTimeoutSeconds",
                format!("must be a number of seconds, got {v}"),
            ))
        }
    };
    match (socket, timeout) {
        (Some(socket), t) => Ok(Some(PolicyWait {
            socket,
            timeout: t.unwrap_or(DEFAULT_TIMEOUT),
        })),
        (None, Some(_)) => Err(Error::invalid_config(
            "policyTimeoutSeconds",
            "is set without policySocket (there is nothing to wait for)",
        )),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
#[path = "policy_wait_tests.rs"]
mod tests;
