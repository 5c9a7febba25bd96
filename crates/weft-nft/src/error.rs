use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model asks for something nf_tables cannot express; nothing was sent.
    #[error("invalid ruleset: {0}")]
    Invalid(String),
    #[error("nf_tables netlink socket: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the transaction; nothing in it was applied.
    #[error("{}", describe(.0))]
    Rejected(Vec<Failure>),
    #[error("malformed nf_tables reply from the kernel: {0}")]
    Decode(String),
}

/// One object the kernel refused, named as the model names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// e.g. `chain ip weft svc-foo` or `rule 2 in chain ip weft services`.
    pub object: String,
    pub errno: i32,
    /// The kernel's extended-ack message, when it sent one.
    pub message: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {}", self.object, os)?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        if let Some(hint) = hint(self.errno) {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

fn hint(errno: i32) -> Option<&'static str> {
    match errno {
        libc::ENOENT => Some("it refers to a table, chain or set that does not exist"),
        libc::EEXIST => Some("it already exists"),
        libc::EBUSY => Some("it is still referenced by a rule, a jump or a map element"),
        libc::EOPNOTSUPP => Some("the kernel does not support this combination"),
        libc::EPERM => Some("nf_tables needs CAP_NET_ADMIN in the namespace"),
        _ => None,
    }
}

fn describe(failures: &[Failure]) -> String {
    let mut s =
        String::from("the kernel rejected the nf_tables transaction, nothing was changed: ");
    // One bad object often makes everything after it fail too: the first ones tell the story.
    const SHOWN: usize = 5;
    for (i, f) in failures.iter().take(SHOWN).enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str(&f.to_string());
    }
    if failures.len() > SHOWN {
        s.push_str(&format!("; and {} more", failures.len() - SHOWN));
    }
    s
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno of the first failure, for callers that branch on it.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Rejected(f) => f.first().map(|f| f.errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
