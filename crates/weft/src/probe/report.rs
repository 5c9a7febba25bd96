//! The one line a probe prints: `PROTO TARGET VERDICT key=value...`, and its exit status.

use std::fmt;
use std::io;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A connection-oriented peer accepted (TCP, SCTP).
    Connected,
    /// A datagram or request got its reply (UDP, ICMP, HTTP).
    Answered,
    /// The peer or a middlebox said no: TCP RST, SCTP ABORT, ICMP port unreachable.
    Refused,
    /// Nothing came back in time: dropped on the way, or by policy.
    Timeout,
    /// No route, or an ICMP host/net unreachable came back.
    Unreachable,
    /// The connection was reset after it was made.
    Reset,
    /// The name did not resolve.
    Unresolved,
    /// Answered, but not as the caller required (e.g. an unexpected HTTP status).
    Unexpected,
    /// Anything else; the line carries the error.
    Failed,
}

impl Verdict {
    pub fn ok(self) -> bool {
        matches!(self, Verdict::Connected | Verdict::Answered)
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Connected => "connected",
            Verdict::Answered => "answered",
            Verdict::Refused => "refused",
            Verdict::Timeout => "timeout",
            Verdict::Unreachable => "unreachable",
            Verdict::Reset => "reset",
            Verdict::Unresolved => "unresolved",
            Verdict::Unexpected => "unexpected",
            Verdict::Failed => "failed",
        }
    }

    /// How a socket error reads to a user.
    pub fn of(e: &io::Error) -> Verdict {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Verdict::Refused,
            Some(libc::ETIMEDOUT | libc::EAGAIN) => Verdict::Timeout,
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EHOSTDOWN | libc::ENONET) => {
                Verdict::Unreachable
            }
            Some(libc::ECONNRESET | libc::EPIPE) => Verdict::Reset,
            _ => match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Verdict::Timeout,
                io::ErrorKind::UnexpectedEof => Verdict::Reset,
                _ => Verdict::Failed,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub proto: &'static str,
    pub target: String,
    pub verdict: Verdict,
    pub fields: Vec<(&'static str, String)>,
}

impl Report {
    pub fn new(proto: &'static str, target: &str, verdict: Verdict) -> Self {
        Report {
            proto,
            target: target.to_string(),
            verdict,
            fields: Vec::new(),
        }
    }

    /// A failed probe from a socket error; the error text is kept unless the verdict says
    /// all there is to say.
    pub fn from_error(proto: &'static str, target: &str, e: &io::Error) -> Self {
        let verdict = Verdict::of(e);
        let r = Report::new(proto, target, verdict);
        match verdict {
            Verdict::Refused | Verdict::Timeout | Verdict::Reset => r,
            _ => r.with("error", e.to_string()),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.fields.push((key, value.into()));
        self
    }

    pub fn with_time(self, took: Duration) -> Self {
        self.with("time", format!("{:.2}ms", took.as_secs_f64() * 1000.0))
    }

    pub fn exit_code(&self) -> u8 {
        if self.verdict.ok() {
            0
        } else {
            1
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.proto, self.target, self.verdict.word())?;
        for (k, v) in &self.fields {
            write!(f, " {k}={}", quote(v))?;
        }
        Ok(())
    }
}

/// Values stay one whitespace-free word when they can, so scripts can split the line;
/// anything else is quoted with escapes.
pub fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\');
    if plain {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

/// Bytes from a peer shown as text: at most `max` characters, control bytes escaped.
pub fn summary(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape() {
        let r = Report::new("tcp", "10.244.1.3:80", Verdict::Connected)
            .with("client", "10.244.1.2")
            .with("reply", "hello world");
        assert_eq!(
            r.to_string(),
            "tcp 10.244.1.3:80 connected client=10.244.1.2 reply=\"hello world\""
        );
        assert_eq!(r.exit_code(), 0);
        assert_eq!(Report::new("udp", "x:1", Verdict::Refused).exit_code(), 1);
    }

    #[test]
    fn socket_errors_map_to_verdicts() {
        let v = |n| Verdict::of(&io::Error::from_raw_os_error(n));
        assert_eq!(v(libc::ECONNREFUSED), Verdict::Refused);
        assert_eq!(v(libc::EHOSTUNREACH), Verdict::Unreachable);
        assert_eq!(v(libc::ENETUNREACH), Verdict::Unreachable);
        assert_eq!(v(libc::EAGAIN), Verdict::Timeout);
        assert_eq!(v(libc::ECONNRESET), Verdict::Reset);
        assert_eq!(v(libc::EACCES), Verdict::Failed);
    }

    #[test]
    fn quoting_keeps_words_plain() {
        assert_eq!(quote("a=b"), "a=b");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert_eq!(summary(b"abcdef", 3), "abc…");
    }
}
