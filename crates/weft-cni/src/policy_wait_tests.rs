use super::*;
use std::collections::HashMap;
use std::io::BufRead;
use std::os::unix::net::UnixListener;

fn request() -> Request {
    Request {
        version: 1,
        namespace: "np".into(),
        name: "web-0".into(),
        container_id: "4f2a9c".into(),
        ips: vec!["10.244.1.7".parse().unwrap()],
        uid: Some("0b6f6f3e-1c1d-4b7a-9d55-4a3c7b1e2f00".into()),
    }
}

fn err_of(line: &str) -> String {
    parse_request(line.as_bytes()).unwrap_err().msg
}

#[test]
fn a_request_goes_over_the_wire_and_back() {
    let r = request();
    let line = r.to_line();
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(parse_request(&line).unwrap(), r);
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["containerID"], "4f2a9c");
    // Without the optional uid, and without the trailing newline.
    let mut r = request();
    r.uid = None;
    let line = r.to_line();
    assert!(!String::from_utf8_lossy(&line).contains("uid"));
    assert_eq!(parse_request(&line[..line.len() - 1]).unwrap(), r);
}

#[test]
fn malformed_requests_are_refused_naming_the_problem() {
    assert!(err_of("{not json").contains("not a JSON line"));
    assert!(err_of("[1,2]").contains("field `version`: missing"));
    let base = r#""namespace":"np","name":"p","containerID":"c","ips":["10.0.0.1"]"#;
    let e = err_of(&format!(r#"{{"version":1,{base},"extra":1}}"#));
    assert!(e.contains("unknown field `extra`"), "{e}");
    let e = err_of(r#"{"version":1,"namespace":"np","containerID":"c","ips":["10.0.0.1"]}"#);
    assert!(e.contains("missing field `name`"), "{e}");
    let e = err_of(&format!(
        r#"{{"version":1,{}}}"#,
        base.replace("10.0.0.1", "10.0.0.300")
    ));
    assert!(e.contains("policy request") && e.contains("address"), "{e}");
    for (from, to, field) in [
        (r#""np""#, r#""Bad_NS""#, "`namespace`"),
        (r#""p""#, r#""a/b""#, "`name`"),
        (r#""c""#, r#""-c""#, "`containerID`"),
        (r#"["10.0.0.1"]"#, "[]", "`ips`"),
    ] {
        let e = err_of(&format!(
            r#"{{"version":1,{}}}"#,
            base.replacen(from, to, 1)
        ));
        assert!(e.contains(field), "{field}: {e}");
    }
    let many: Vec<String> = (0..=MAX_IPS).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let e = err_of(&format!(
        r#"{{"version":1,"namespace":"np","name":"p","containerID":"c","ips":[{}]}}"#,
        many.join(",")
    ));
    assert!(e.contains("17 addresses, must be 1 to 16"), "{e}");
    let e = err_of(&format!(r#"{{"version":1,{base},"uid":"x y"}}"#));
    assert!(e.contains("`uid`"), "{e}");
}

#[test]
fn an_unknown_version_is_refused_before_its_fields() {
    let e = err_of(r#"{"version":2,"anything":"new"}"#);
    assert!(
        e.contains("unsupported version 2 (this side speaks 1)"),
        "{e}"
    );
    assert!(err_of(r#"{"version":"1"}"#).contains("unsupported version"));
    let e = parse_answer(br#"{"version":7,"ok":true}"#).unwrap_err().msg;
    assert!(
        e.contains("policy answer") && e.contains("version 7"),
        "{e}"
    );
}

#[test]
fn oversized_lines_are_refused() {
    let mut r = request();
    r.name = "a".repeat(MAX_LINE);
    let e = parse_request(&r.to_line()).unwrap_err().msg;
    assert!(e.contains("over the limit of 4096"), "{e}");
    // Just inside the limit, the fields' own bounds still apply.
    let e = err_of(&format!(
        r#"{{"version":1,"namespace":"np","name":"{}","containerID":"c","ips":["10.0.0.1"]}}"#,
        "a".repeat(300)
    ));
    assert!(e.contains("`name`"), "{e}");
    // A long refusal is cut so the answer still fits.
    let a = Answer::refused("é".repeat(MAX_LINE));
    assert!(a.to_line().len() <= MAX_LINE);
    assert_eq!(parse_answer(&a.to_line()).unwrap(), a);
}

#[test]
fn answers_parse_and_a_refusal_needs_its_cause() {
    assert_eq!(parse_answer(&Answer::ok().to_line()).unwrap(), Answer::ok());
    let no = Answer::refused("not bound here");
    assert_eq!(parse_answer(&no.to_line()).unwrap(), no);
    let e = parse_answer(br#"{"version":1,"ok":false}"#)
        .unwrap_err()
        .msg;
    assert!(e.contains("field `error`"), "{e}");
}

#[test]
fn config_fields_are_validated() {
    let parse = |s: &str| {
        let v: Value = serde_json::from_str(s).unwrap();
        parse_config(v.as_object().unwrap())
    };
    assert_eq!(parse("{}").unwrap(), None);
    assert_eq!(
        parse(r#"{"policySocket":"/run/weft/policy.sock"}"#).unwrap(),
        Some(PolicyWait {
            socket: "/run/weft/policy.sock".into(),
            timeout: DEFAULT_TIMEOUT
        })
    );
    assert_eq!(
        parse(r#"{"policySocket":"/s","policyTimeoutSeconds":1.5}"#)
            .unwrap()
            .unwrap()
            .timeout,
        Duration::from_millis(1500)
    );
    for (conf, field) in [
        (r#"{"policySocket":"rel/path"}"#, "policySocket"),
        (r#"{"policySocket":7}"#, "policySocket"),
        (
            r#"{"policySocket":"/s","policyTimeoutSeconds":0}"#,
            "policyTimeoutSeconds",
        ),
        (
            r#"{"policySocket":"/s","policyTimeoutSeconds":301}"#,
            "policyTimeoutSeconds",
        ),
        (
            r#"{"policySocket":"/s","policyTimeoutSeconds":"10"}"#,
            "policyTimeoutSeconds",
        ),
        (r#"{"policyTimeoutSeconds":5}"#, "policyTimeoutSeconds"),
    ] {
        let e = parse(conf).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{conf}");
        assert!(e.msg.contains(field), "{conf}: {e}");
    }
    let long = format!(r#"{{"policySocket":"/{}"}}"#, "s".repeat(107));
    assert!(parse(&long).is_err());
}

fn invocation(args: &str) -> Invocation {
    let m: HashMap<&str, String> = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", "c1".to_string()),
        ("CNI_NETNS", "/run/netns/x".to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_ARGS", args.to_string()),
    ]
    .into_iter()
    .collect();
    Invocation::from_lookup(|k| m.get(k).cloned()).unwrap()
}

fn wait_at(socket: &Path, timeout: Duration) -> PolicyWait {
    PolicyWait {
        socket: socket.to_path_buf(),
        timeout,
    }
}

#[test]
fn the_pod_must_be_named_in_cni_args() {
    let w = wait_at(Path::new("/run/weft/policy.sock"), DEFAULT_TIMEOUT);
    let e = Pending::new(&invocation("K8S_POD_NAMESPACE=np"), &w).unwrap_err();
    assert_eq!(e.code, code::INVALID_ENV);
    assert!(
        e.msg.contains("K8S_POD_NAME") && e.msg.contains("/run/weft/policy.sock"),
        "{e}"
    );
    let e = Pending::new(&invocation("K8S_POD_NAMESPACE=NP;K8S_POD_NAME=p"), &w).unwrap_err();
    assert!(
        e.msg.contains("CNI_ARGS") && e.msg.contains("`namespace`"),
        "{e}"
    );
    assert!(Pending::new(
        &invocation("IgnoreUnknown=1;K8S_POD_NAMESPACE=np;K8S_POD_NAME=p"),
        &w
    )
    .is_ok());
}

/// An agent on a socket in a temp dir that reads one request and answers with `reply`
/// (None: never answers while the test waits). Returns what it read.
fn agent(
    reply: Option<&'static str>,
) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.sock");
    let l = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        match reply {
            Some(a) => {
                let _ = r.get_mut().write_all(a.as_bytes());
            }
            None => std::thread::sleep(Duration::from_millis(1500)),
        }
        line
    });
    (dir, path, h)
}

fn pending(socket: &Path, timeout: Duration) -> Pending {
    Pending::new(
        &invocation("K8S_POD_NAMESPACE=np;K8S_POD_NAME=web-0;K8S_POD_UID=u-1"),
        &wait_at(socket, timeout),
    )
    .unwrap()
}

#[test]
fn commit_sends_the_pod_and_its_addresses_and_takes_the_answer() {
    let (_d, path, h) = agent(Some("{\"version\":1,\"ok\":true}\n"));
    let ips: Vec<IpAddr> = vec!["10.244.1.7".parse().unwrap(), "fd00::7".parse().unwrap()];
    pending(&path, DEFAULT_TIMEOUT).commit(ips.clone()).unwrap();
    let sent = parse_request(h.join().unwrap().as_bytes()).unwrap();
    assert_eq!(
        sent,
        Request {
            version: 1,
            namespace: "np".into(),
            name: "web-0".into(),
            container_id: "c1".into(),
            ips,
            uid: Some("u-1".into()),
        }
    );
}

#[test]
fn every_failure_of_the_agent_fails_the_add_naming_the_socket() {
    let ip = || vec!["10.244.1.7".parse::<IpAddr>().unwrap()];
    let check = |e: Error, cause: &str, path: &Path| {
        assert_eq!(e.code, code::TRY_AGAIN_LATER, "{e}");
        assert!(
            e.msg.contains(&path.display().to_string()) && e.msg.contains("np/web-0"),
            "{e}"
        );
        assert!(e.msg.contains(cause), "want {cause:?} in {e}");
    };
    let (_d, path, _h) = agent(Some(
        "{\"version\":1,\"ok\":false,\"error\":\"pod np/web-0 is not bound to this node\"}\n",
    ));
    let e = pending(&path, DEFAULT_TIMEOUT).commit(ip()).unwrap_err();
    check(e, "refused: pod np/web-0 is not bound to this node", &path);

    let (_d, path, _h) = agent(None);
    let started = Instant::now();
    let e = pending(&path, Duration::from_millis(300))
        .commit(ip())
        .unwrap_err();
    check(e, "no answer within 300ms", &path);
    assert!(started.elapsed() < Duration::from_secs(5));

    let (_d, path, _h) = agent(Some("garbage\n"));
    let e = pending(&path, DEFAULT_TIMEOUT).commit(ip()).unwrap_err();
    check(e, "not a JSON line", &path);

    let (_d, path, _h) = agent(Some(""));
    let e = pending(&path, DEFAULT_TIMEOUT).commit(ip()).unwrap_err();
    check(e, "closed the connection without an answer", &path);

    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("none.sock");
    let e = pending(&absent, DEFAULT_TIMEOUT).commit(ip()).unwrap_err();
    check(e, "connect: No such file or directory", &absent);

    // No address: nothing to wait for, no agent asked.
    pending(&absent, DEFAULT_TIMEOUT).commit(vec![]).unwrap();
}
