//! What the matcher answers: per direction a [`Verdict`] with its [`Reason`] (the rule
//! that decided, or why none did), and for a connection a [`Decision`]. Their `Display`
//! is what `weft lab policy check` prints.

use std::fmt;

use crate::model::{Action, Direction, PolicyId, Tier};

/// The rule that decided, for logs and `weft lab policy check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub policy: PolicyId,
    pub tier: Tier,
    pub priority: u32,
    pub direction: Direction,
    pub index: usize,
    pub name: Option<String>,
    pub action: Action,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.policy)?;
        if self.tier != Tier::NetworkPolicy {
            write!(
                f,
                " ({} tier, priority {})",
                self.tier.as_str(),
                self.priority
            )?;
        }
        write!(f, " {}[{}]", self.direction.as_str(), self.index)?;
        if let Some(n) = &self.name {
            write!(f, " {n:?}")?;
        }
        write!(f, ": {}", self.action.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// This end is not a pod (an outside address, a node): nothing to enforce here.
    NotAPod,
    /// Traffic between a pod and its own node is always allowed.
    OwnNode,
    /// A pod talking to itself: the packets never leave its network namespace.
    Loopback,
    /// No policy decided and none isolates the pod: allowed by default. `passed`: the
    /// Pass rules that skipped a tier on the way.
    Default { passed: Vec<RuleRef> },
    /// A rule decided.
    Rule { rule: RuleRef, passed: Vec<RuleRef> },
    /// NetworkPolicies isolate the pod for this direction and none of their rules allows
    /// the connection.
    Isolated {
        policies: Vec<PolicyId>,
        passed: Vec<RuleRef>,
    },
}

/// One direction's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Reason,
}

impl Verdict {
    pub(crate) fn allow(reason: Reason) -> Verdict {
        Verdict {
            allowed: true,
            reason,
        }
    }

    /// The tier whose decision this is; `None` when nothing denied.
    pub fn denying_tier(&self) -> Option<Tier> {
        match (&self.reason, self.allowed) {
            (_, true) => None,
            (Reason::Rule { rule, .. }, false) => Some(rule.tier),
            (_, false) => Some(Tier::NetworkPolicy),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allowed { "allowed" } else { "denied" })?;
        let passed = match &self.reason {
            Reason::NotAPod => return f.write_str(": not a pod, nothing to enforce"),
            Reason::OwnNode => return f.write_str(": between a pod and its own node"),
            Reason::Loopback => return f.write_str(": a pod to itself, never leaves it"),
            Reason::Default { passed } => {
                f.write_str(": no policy decides or isolates")?;
                passed
            }
            Reason::Rule { rule, passed } => {
                write!(f, " by {rule}")?;
                passed
            }
            Reason::Isolated { policies, passed } => {
                f.write_str(": isolated by ")?;
                for (i, p) in policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(", no rule of theirs allows it")?;
                passed
            }
        };
        for p in passed {
            write!(f, " (after {p})")?;
        }
        Ok(())
    }
}

/// Both directions of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// At the client: its egress.
    pub egress: Verdict,
    /// At the server: its ingress.
    pub ingress: Verdict,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.allowed { "ALLOWED" } else { "DENIED" })?;
        writeln!(f, "  egress at the client:  {}", self.egress)?;
        write!(f, "  ingress at the server: {}", self.ingress)
    }
}
