//! Running another IPAM plugin (`ipam.type` other than `weft`) the way the spec says a
//! plugin delegates: found in CNI_PATH, same environment, the same config on stdin.

use crate::error::{code, Error, Result};
use crate::result::CniResult;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf> {
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
            Error::new(
                code::DELEGATE,
                format!(
                    "IPAM plugin {plugin:?} not found in CNI_PATH ({})",
                    dirs.join(":")
                ),
            )
        })
}

/// Runs `plugin` with CNI_COMMAND=`command` (the rest of the environment is ours, as the
/// runtime set it) and returns what it printed on success.
pub fn run(plugin: &Path, command: &str, config: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io(format!("run IPAM plugin {}", plugin.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config)
            .map_err(|e| Error::io(format!("write config to {}", plugin.display()), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("wait for {}", plugin.display()), e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    // A failing plugin prints a CNI error on stdout: keep its code and message.
    let err: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    let name = plugin.display();
    Err(match err {
        Some(v) => Error::new(
            v["code"]
                .as_u64()
                .map(|c| c as u32)
                .unwrap_or(code::DELEGATE),
            format!(
                "IPAM plugin {name}: {}",
                v["msg"].as_str().unwrap_or("failed")
            ),
        )
        .with_details(v["details"].as_str().unwrap_or_default().to_string()),
        None => Error::new(
            code::DELEGATE,
            format!("IPAM plugin {name} failed ({})", out.status),
        ),
    })
}

pub fn add(plugin: &Path, config: &[u8]) -> Result<CniResult> {
    let out = run(plugin, "ADD", config)?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        Error::new(
            code::DECODE,
            format!(
                "IPAM plugin {} printed no JSON result: {e}",
                plugin.display()
            ),
        )
    })?;
    CniResult::from_json(&v, "the IPAM plugin's result")
}
