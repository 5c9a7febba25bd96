//! Container logs in the CRI format kubelet reads (`<RFC3339Nano> <stdout|stderr> <P|F>
//! <text>`, one line each; `P` is a piece of a longer line, `F` ends one), written by a
//! small process of its own per container (`weft log-writer`), as conmon or containerd's
//! shim do: containers outlive the agent, so their output cannot go through it.
//!
//! The writer reads the container's stdout on descriptor 3 and its stderr on 4 until both
//! end, and appends to `<pod dir>/<container>.log` (0600); a file past the size limit is
//! renamed to `<container>.log.1` (replacing the older one) and a new one begun. When a
//! container is started again its last log becomes `<container>.previous.log`, which is
//! what `kubectl logs --previous` reads.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a log goes when it passes the limit.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The default size limit of one log file.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The longest line written as one entry; longer ones are cut into `P` pieces.
const MAX_LINE: usize = 16 * 1024;

pub fn now_rfc3339() -> String {
    let ts = k8s_openapi::jiff::Timestamp::now();
    // Always nine digits: lines sort and compare as text too.
    format!("{ts:.9}")
}

struct Out {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Out {
    fn write_entry(&mut self, stream: &str, tag: char, text: &[u8]) {
        let mut line = format!("{} {stream} {tag} ", now_rfc3339()).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.file.write_all(&line).is_ok() {
            self.size += line.len() as u64;
        }
        if self.size >= self.max {
            let _ = std::fs::rename(&self.path, rotated(&self.path));
            if let Ok(f) = open(&self.path) {
                self.file = f;
                self.size = 0;
            }
        }
    }
}

fn copy(mut input: File, stream: &'static str, out: Arc<Mutex<Out>>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut o = lock(&out);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + i];
            for (k, piece) in line.chunks(MAX_LINE).enumerate() {
                let last = (k + 1) * MAX_LINE >= line.len();
                o.write_entry(stream, if last { 'F' } else { 'P' }, piece);
            }
            if line.is_empty() {
                o.write_entry(stream, 'F', b"");
            }
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            o.write_entry(stream, 'P', &pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        // The output ended inside a line: a piece, so no newline is added on reading.
        lock(&out).write_entry(stream, 'P', &pending);
    }
}

/// The log file. A panic in the other stream's thread poisons it; giving up here would
/// stop reading this stream, and the container would block once its pipe is full. The
/// file holds whole entries only (each is written by one call), so writing goes on.
fn lock(out: &Mutex<Out>) -> std::sync::MutexGuard<'_, Out> {
    out.lock().unwrap_or_else(|poisoned| {
        out.clear_poison();
        poisoned.into_inner()
    })
}

/// `weft log-writer [--max-bytes N] PATH`: copies descriptors 3 (stdout) and 4 (stderr)
/// into PATH until both end. Returns the exit code.
pub fn main(args: &[String]) -> u8 {
    let mut max = MAX_BYTES;
    let mut path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--max-bytes" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => max = v,
                None => return 2,
            },
            p => path = Some(PathBuf::from(p)),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: weft log-writer [--max-bytes N] PATH (stdout on fd 3, stderr on fd 4)");
        return 2;
    };
    let file = match open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weft log-writer: {}: {e}", path.display());
            return 1;
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let out = Arc::new(Mutex::new(Out {
        path,
        file,
        size,
        max: max.max(1024),
    }));
    // SAFETY: descriptors 3 and 4 were handed to this process for exactly this; nothing
    // else in it owns them.
    let (o, e) = unsafe { (File::from_raw_fd(3 as RawFd), File::from_raw_fd(4 as RawFd)) };
    let out2 = out.clone();
    let t = std::thread::spawn(move || copy(e, "stderr", out2));
    copy(o, "stdout", out);
    let _ = t.join();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_through(input: &[u8], max: u64, dir: &Path) -> PathBuf {
        let path = dir.join("c.log");
        let out = Arc::new(Mutex::new(Out {
            path: path.clone(),
            file: open(&path).unwrap(),
            size: 0,
            max,
        }));
        copy_from_pipe(input, out);
        path
    }

    fn copy_from_pipe(input: &[u8], out: Arc<Mutex<Out>>) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = File::from(w);
        w.write_all(input).unwrap();
        drop(w);
        copy(File::from(r), "stdout", out);
    }

    #[test]
    fn a_panic_in_the_other_stream_does_not_stop_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let out = Arc::new(Mutex::new(Out {
            path: path.clone(),
            file: open(&path).unwrap(),
            size: 0,
            max: 1 << 20,
        }));
        let o = out.clone();
        let _ = std::thread::spawn(move || {
            let _g = o.lock().unwrap();
            panic!("the stderr thread dies holding the file");
        })
        .join();
        assert!(out.is_poisoned());
        copy_from_pipe(b"still read\n", out);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(" stdout F still read\n"), "{text}");
    }

    #[test]
    fn lines_pieces_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let long = "y".repeat(MAX_LINE + 10);
        let input = format!("one\n\n{long}\nend without newline");
        let path = write_through(input.as_bytes(), 1 << 20, dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        let tags: Vec<(&str, &str)> = rows.iter().map(|r| (r[1], r[2])).collect();
        assert_eq!(
            tags,
            [
                ("stdout", "F"),
                ("stdout", "F"),
                ("stdout", "P"),
                ("stdout", "F"),
                ("stdout", "P")
            ]
        );
        assert_eq!(rows[0][3], "one");
        assert_eq!(rows[1].get(3).copied().unwrap_or(""), "");
        assert_eq!(rows[2][3].len() + rows[3][3].len(), long.len());
        assert_eq!(rows[4][3], "end without newline");
        assert!(
            rows[0][0].ends_with('Z') && rows[0][0].len() == 30,
            "{}",
            rows[0][0]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Past the limit the file moves to .1 and a new one begins.
        let dir = tempfile::tempdir().unwrap();
        let many: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let path = write_through(many.as_bytes(), 2048, dir.path());
        let old = std::fs::read_to_string(rotated(&path)).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.len() >= 2048 && new.len() < 2048 + 64,
            "{} {}",
            old.len(),
            new.len()
        );
        assert!(new.ends_with("stdout F line 199\n"), "{new}");
    }
}
