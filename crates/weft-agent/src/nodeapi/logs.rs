//! `containerLogs`: a container's log, read back from the CRI files [`crate::logwriter`]
//! writes, with kubectl's options: `follow`, `tailLines`, `sinceSeconds`, `sinceTime`,
//! `timestamps`, `previous` and `limitBytes`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

use super::{query_get, query_pairs, query_true, status_response, Shared};
use crate::launch::find_recorded;
use crate::logwriter::rotated;

/// One line of a container's output, pieces joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub time: String,
    pub stream: String,
    pub text: Vec<u8>,
    /// It ended with a newline (an `F` entry closed it).
    pub full: bool,
}

/// Parses CRI log text into entries; `partial` carries a line's pieces across calls.
pub fn parse(text: &[u8], partial: &mut Option<Entry>, out: &mut Vec<Entry>) {
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let (Some(t), Some(s), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let body = parts.next().unwrap_or_default();
        let (t, s) = (
            String::from_utf8_lossy(t).into_owned(),
            String::from_utf8_lossy(s).into_owned(),
        );
        let e = partial.get_or_insert_with(|| Entry {
            time: t,
            stream: s,
            text: Vec::new(),
            full: false,
        });
        e.text.extend_from_slice(body);
        if tag == b"F" {
            let mut done = partial.take().unwrap_or_else(|| unreachable!());
            done.full = true;
            out.push(done);
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tail: Option<usize>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
}

/// The entries as kubectl shows them.
pub fn render(entries: &[Entry], o: &Options) -> Vec<u8> {
    let kept: Vec<&Entry> = entries
        .iter()
        .filter(|e| match (&o.since, e.time.parse::<Timestamp>()) {
            (Some(since), Ok(t)) => t >= *since,
            _ => true,
        })
        .collect();
    let skip = o.tail.map(|n| kept.len().saturating_sub(n)).unwrap_or(0);
    let mut out = Vec::new();
    for e in &kept[skip..] {
        render_one(e, o.timestamps, &mut out);
    }
    if let Some(n) = o.limit_bytes {
        out.truncate(n);
    }
    out
}

fn render_one(e: &Entry, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(e.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&e.text);
    if e.full {
        out.push(b'\n');
    }
}

pub(crate) async fn handle(
    State(s): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = query_pairs(q.as_deref());
    let num = |k: &str| query_get(&q, k).and_then(|v| v.parse::<i64>().ok());
    let since = match (num("sinceSeconds"), query_get(&q, "sinceTime")) {
        (Some(secs), _) => Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .ok(),
        (None, Some(t)) => t.parse().ok(),
        _ => None,
    };
    let opts = Options {
        tail: num("tailLines").filter(|n| *n >= 0).map(|n| n as usize),
        since,
        timestamps: query_true(&q, "timestamps"),
        limit_bytes: num("limitBytes").filter(|n| *n > 0).map(|n| n as usize),
    };
    let (follow, previous) = (query_true(&q, "follow"), query_true(&q, "previous"));
    let pod_dir = match super::find_container(&s, &namespace, &pod, &container).await {
        Ok(dir) => dir,
        Err(status) => return *status,
    };
    let path = if previous {
        pod_dir.previous_log(&container)
    } else {
        pod_dir.log(&container)
    };
    if previous && !path.exists() {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
        );
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let follow_state = (follow && !previous)
        .then(|| (s.cfg.pods_state_dir.clone(), namespace.clone(), pod.clone()));
    std::thread::spawn(move || stream(path, opts, follow_state, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(bytes::Bytes::from(b)), rx))
    });
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response()
}

fn read_all(path: &FsPath) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Sends the log (the rotated file first), then, when following, what is appended until
/// the pod stops running here, the container starts over, or the client leaves.
fn stream(
    path: PathBuf,
    opts: Options,
    follow: Option<(PathBuf, String, String)>,
    tx: mpsc::Sender<Vec<u8>>,
) {
    use std::os::unix::fs::MetadataExt;
    let mut text = read_all(&rotated(&path));
    let mut file = std::fs::File::open(&path).ok();
    let mut inode = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.ino());
    if let Some(f) = file.as_mut() {
        let _ = f.read_to_end(&mut text);
    }
    // Whatever follows an unfinished last line belongs to it.
    let cut = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut carry = text.split_off(cut);
    let mut partial = None;
    let mut entries = Vec::new();
    parse(&text, &mut partial, &mut entries);
    let first = render(&entries, &opts);
    if !first.is_empty() && tx.blocking_send(first).is_err() {
        return;
    }
    let Some((state_dir, ns, name)) = follow else {
        return;
    };
    let mut checked = std::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut got = false;
        if let Some(f) = file.as_mut() {
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        carry.extend_from_slice(&buf[..n]);
                        got = true;
                    }
                }
            }
        }
        if got {
            let cut = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let rest = carry.split_off(cut);
            let mut new = Vec::new();
            parse(&carry, &mut partial, &mut new);
            carry = rest;
            let mut out = Vec::new();
            for e in &new {
                render_one(e, opts.timestamps, &mut out);
            }
            if !out.is_empty() && tx.blocking_send(out).is_err() {
                return;
            }
            continue;
        }
        if tx.is_closed() {
            return;
        }
        // Rotated: the old file was read to its end above; go on with the new one.
        let now_ino = std::fs::metadata(&path).ok().map(|m| m.ino());
        if now_ino != inode {
            let moved_to_previous = std::fs::metadata(path.with_file_name(format!(
                "{}.previous.log",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".log"))
                    .unwrap_or_default()
            )))
            .ok()
            .map(|m| Some(m.ino()) == inode)
            .unwrap_or(false);
            if moved_to_previous {
                return; // the container started over: this instance's log is complete
            }
            if now_ino.is_some() {
                file = std::fs::File::open(&path).ok();
                if let Some(f) = file.as_mut() {
                    let _ = f.seek(SeekFrom::Start(0));
                }
                inode = now_ino;
                continue;
            }
        }
        if checked.elapsed() > Duration::from_secs(1) {
            checked = std::time::Instant::now();
            if !matches!(find_recorded(&state_dir, &ns, &name), Ok(Some(_))) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.000000000Z stdout F one\n\
2026-01-01T00:00:02.000000000Z stderr F two\n\
2026-01-01T00:00:03.000000000Z stdout P thr\n\
2026-01-01T00:00:03.100000000Z stdout F ee\n\
2026-01-01T00:00:04.000000000Z stdout P no newline";

    fn entries() -> Vec<Entry> {
        let (mut p, mut out) = (None, Vec::new());
        parse(LOG.as_bytes(), &mut p, &mut out);
        if let Some(e) = p {
            out.push(e);
        }
        out
    }

    #[test]
    fn pieces_join_and_options_apply() {
        let e = entries();
        assert_eq!(e.len(), 4);
        let all = render(&e, &Options::default());
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "one\ntwo\nthree\nno newline"
        );
        let tail = render(
            &e,
            &Options {
                tail: Some(2),
                timestamps: true,
                ..Default::default()
            },
        );
        assert_eq!(
            String::from_utf8(tail).unwrap(),
            "2026-01-01T00:00:03.000000000Z three\n2026-01-01T00:00:04.000000000Z no newline"
        );
        let since = render(
            &e,
            &Options {
                since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
                limit_bytes: Some(6),
                ..Default::default()
            },
        );
        assert_eq!(String::from_utf8(since).unwrap(), "two\nth");
    }
}
