//! The one error type of weft-policy. Every variant names the object and the field, so the
//! message says what to fix.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object the model cannot take, e.g. a bad CIDR or an unknown selector operator.
    #[error("{object}: {field}: {problem} (got {value:?})")]
    Invalid {
        /// `NetworkPolicy ns/name`, `ClusterNetworkPolicy name`, `Pod ns/name`, ...
        object: String,
        /// The field's path, e.g. `spec.ingress[0].from[1].ipBlock.cidr`.
        field: String,
        value: String,
        problem: String,
    },
    /// A pod or node the question names that the view does not hold.
    #[error("{what} {name}: not in the cluster view")]
    Unknown { what: &'static str, name: String },
    /// A delta that does not follow the table the Enforcer holds (a caller mixing
    /// compilers): compile the whole table again.
    #[error("policy table in {netns}: cannot apply the change: {problem}")]
    Delta { netns: String, problem: String },
    /// Subscribing to or reading the nflog group the table logs denials to.
    #[error("nflog group {group}: {problem}")]
    Nflog { group: u16, problem: String },
    #[error("nf_tables in {netns}: {source}")]
    Nft {
        netns: String,
        #[source]
        source: weft_nft::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Builds [`Error::Invalid`] for one object; `at(field, value, problem)`.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub object: String,
}

impl Ctx {
    pub fn new(object: impl Into<String>) -> Ctx {
        Ctx {
            object: object.into(),
        }
    }

    pub fn err(&self, field: &str, value: impl std::fmt::Display, problem: &str) -> Error {
        Error::Invalid {
            object: self.object.clone(),
            field: field.to_owned(),
            value: value.to_string(),
            problem: problem.to_owned(),
        }
    }
}
