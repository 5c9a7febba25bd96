//! lab benchmark (placeholder until written)
fn main() {}
