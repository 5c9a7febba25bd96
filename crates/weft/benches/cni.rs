//! CNI ADD+DEL latency, weft vs the reference plugins (placeholder until written).
fn main() {}
