//! NetworkPolicy (work in progress).
