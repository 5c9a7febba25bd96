//! weft: one binary for every role. It is also the CNI plugin: a runtime that finds it in
//! CNI_PATH as `weft` (or `weft-cni`) runs it with CNI_COMMAND set, and it must then speak
//! only CNI on stdout.

mod agent;
mod cli;
mod demo;
mod exec;
mod kube;
mod kubeconfig;
mod lab;
mod lab_sync;
mod nsexec;
mod policy;
mod probe;
mod serve;
mod trace;

use clap::Parser;
use cli::{Cli, Command, LabCommand};
use std::process::ExitCode;

/// The lab, the control plane, the agent and the CNI plugin write credentials, the store
/// and node state as root: whatever they create is their owner's alone (0600 files, 0700
/// directories) unless it says otherwise. Pods get the usual 022 back (weft-agent's
/// process isolation).
fn private_files() {
    // SAFETY: umask(2) cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

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
        private_files();
        return ExitCode::from(weft_cni::plugin::main_from_env());
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Probe(_) | Command::Serve(_)) {
        private_files();
    }
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
        Command::Lab(cmd) => match run_lab(cmd) {
            Ok(code) => ExitCode::from(code),
            Err(e) => fail(&e),
        },
        Command::Agent(a) => match agent::main(*a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Policy(cli::NodePolicyCommand::Counters { state_dir }) => {
            match policy::node_counters_cmd(&state_dir) {
                Ok(code) => ExitCode::from(code),
                Err(e) => fail(&e),
            }
        }
        Command::ControlPlane(a) => ExitCode::from(weft_apiserver::run_cli(a.args)),
        Command::LogWriter(a) => ExitCode::from(weft_agent::logwriter::main(&a.args)),
    }
}

fn run_lab(cmd: LabCommand) -> anyhow::Result<u8> {
    let ns_args = |n: Option<String>| n.map(|n| vec!["-n".to_string(), n]).unwrap_or_default();
    match cmd {
        LabCommand::Up {
            lab,
            nodes,
            backend,
            file,
        } => lab::up(&lab.name, nodes, &backend, file.as_deref()).map(|_| 0),
        LabCommand::Down { lab } => lab::down(&lab.name).map(|_| 0),
        LabCommand::Status { lab } => lab::status(&lab.name).map(|_| 0),
        LabCommand::Kubeconfig { lab, merge, file } => {
            lab::kubeconfig(&lab.name, merge, file).map(|_| 0)
        }
        LabCommand::Supervise { lab } => lab::supervise(&lab.name).map(|_| 0),
        LabCommand::Apply { lab, file } => {
            lab::kubectl(&lab.name, &["apply".into(), "-f".into(), file])
        }
        LabCommand::Delete {
            lab,
            file,
            kind,
            obj,
            namespace,
        } => {
            let mut a = vec!["delete".to_string()];
            match (file, kind) {
                (Some(f), _) => a.extend(["-f".to_string(), f]),
                (None, Some(k)) => a.extend(std::iter::once(k).chain(obj)),
                (None, None) => anyhow::bail!("lab delete needs -f FILE or KIND NAME"),
            }
            a.extend(ns_args(namespace));
            lab::kubectl(&lab.name, &a)
        }
        LabCommand::Get {
            lab,
            kind,
            obj,
            namespace,
            output,
        } => {
            let mut a = vec!["get".to_string(), kind];
            a.extend(obj);
            a.extend(ns_args(namespace));
            a.extend(
                output
                    .map(|o| vec!["-o".to_string(), o])
                    .unwrap_or_default(),
            );
            lab::kubectl(&lab.name, &a)
        }
        LabCommand::Exec {
            lab,
            namespace,
            pod,
            host,
            cmd,
        } => match (host, pod) {
            (Some(host), _) => exec::run_host(&lab.name, &host, &cmd),
            (None, Some(pod)) => exec::run(
                &lab.name,
                namespace.as_deref().unwrap_or("default"),
                &pod,
                &cmd,
            ),
            (None, None) => anyhow::bail!("lab exec needs a POD or --host HOST"),
        },
        LabCommand::Policy(cli::PolicyCommand::Check {
            lab,
            src,
            dst,
            port,
        }) => policy::check_cmd(&lab.name, &src, &dst, &port),
        LabCommand::Policy(cli::PolicyCommand::Counters { lab }) => policy::counters_cmd(&lab.name),
        LabCommand::Trace {
            lab,
            namespace,
            pod,
            target,
            udp,
        } => trace::run(
            &lab.name,
            namespace.as_deref().unwrap_or("default"),
            &pod,
            &target,
            udp,
        )
        .map(|_| 0),
        LabCommand::Demo => unreachable!("handled by main"),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("weft: error: {e:#}");
    ExitCode::FAILURE
}
