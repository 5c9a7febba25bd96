//! Links the `weft` binary position-dependent (`-no-pie`).
//!
//! The binary is exec'd once per CNI call, so its start-up is on every pod's critical path.
//! As a PIE it carries ~38k relative relocations, and applying them at load writes ~180
//! pages of `.data.rel.ro`: ~230 extra page faults, about 1 ms per exec on a VM. Linked at
//! a fixed address, the linker resolves them all and the loader has nothing to do. The code
//! stays position-independent; only the executable's own base address is no longer
//! randomised (shared libraries still are).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
