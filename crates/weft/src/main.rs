//! weft: one binary for every role. It is also the CNI plugin: a runtime that finds it in
//! CNI_PATH as `weft` (or `weft-cni`) runs it with CNI_COMMAND set, and it must then speak
//! only CNI on stdout.

mod cli;
mod demo;
mod nsexec;
mod probe;
mod serve;

use clap::Parser;
use cli::{Cli, Command, LabCommand};
use std::process::ExitCode;

fn invoked_as_cni() -> bool {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let base = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    base == "weft-cni" || std::env::var_os("CNI_COMMAND").is_some()
}

fn main() -> ExitCode {
    if invoked_as_cni() {
        return ExitCode::from(weft_cni::plugin::main_from_env());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Cni => ExitCode::from(weft_cni::plugin::main_from_env()),
        Command::Probe(p) => ExitCode::from(probe::run(p)),
        Command::Serve(args) => match serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Lab(LabCommand::Demo) => match demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Lab(other) => not_built(&format!("weft lab {}", lab_verb(&other)), "issue 5"),
        Command::Agent(_) => not_built("weft agent", "issue 5"),
        Command::ControlPlane(a) => ExitCode::from(weft_apiserver::run_cli(a.args)),
    }
}

fn lab_verb(c: &LabCommand) -> &'static str {
    match c {
        LabCommand::Up { .. } => "up",
        LabCommand::Down { .. } => "down",
        LabCommand::Status { .. } => "status",
        LabCommand::Apply { .. } => "apply",
        LabCommand::Delete { .. } => "delete",
        LabCommand::Get { .. } => "get",
        LabCommand::Exec { .. } => "exec",
        LabCommand::Kubeconfig { .. } => "kubeconfig",
        LabCommand::Demo => "demo",
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("weft: error: {e:#}");
    ExitCode::FAILURE
}

fn not_built(what: &str, tracked: &str) -> ExitCode {
    eprintln!("weft: `{what}` is not built yet (tracked in {tracked}); see README.md for what works today");
    ExitCode::from(2)
}
