//! `weft probe`: one result line, exit 0 when the peer connected or answered.
use crate::cli::ProbeCommand;

pub fn run(_cmd: ProbeCommand) -> u8 {
    eprintln!("weft probe: not built yet");
    2
}
