//! weft-apiserver: the lab's Kubernetes-compatible API server and controllers.

/// `weft control-plane ARGS...`: returns the process exit code.
pub fn run_cli(_args: Vec<String>) -> u8 {
    eprintln!("weft: `weft control-plane` is not built yet (tracked in issue 4)");
    2
}
