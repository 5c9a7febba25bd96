//! Stand-alone entry point (same as `weft control-plane`), used by tests that need to
//! SIGKILL the server as a separate process.
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(weft_apiserver::run_cli(args))
}
