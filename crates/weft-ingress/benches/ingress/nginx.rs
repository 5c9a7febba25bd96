//! nginx: its configuration for the same routes weft serves, and its process (started
//! inside the namespace with `-g 'daemon off;'`, its own config and paths in the work
//! directory).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cleanup::finish;
use crate::cluster::many_host;
use crate::netns::{wait_port, Ctx};
use crate::procs::proxy_pids;
use crate::settings::Cfg;
use crate::{BACKENDS, PORT_A, PORT_B, PROXY_IP};

pub struct NginxSite {
    pub host: String,
    /// (Prefix path, upstream)
    pub paths: Vec<(String, &'static str)>,
}

fn nginx_location(out: &mut String, prefix: &str, upstream: &str) {
    // An Ingress Prefix matches whole path elements: /api and /api/..., never /apix.
    if prefix == "/" {
        let _ = writeln!(out, "    location / {{ proxy_pass http://{upstream}; }}");
    } else {
        let p = prefix.trim_end_matches('/');
        let _ = writeln!(
            out,
            "    location = {p} {{ proxy_pass http://{upstream}; }}"
        );
        let _ = writeln!(out, "    location {p}/ {{ proxy_pass http://{upstream}; }}");
    }
}

pub fn nginx_conf(
    cfg: &Cfg,
    dir: &Path,
    tag: &str,
    http: u16,
    https: Option<u16>,
    sites: &[NginxSite],
) -> String {
    let d = dir.display();
    let mut o = String::new();
    let access = if cfg.access_log && cfg.nginx_log_buffer {
        // As weft writes its access log: buffered, out every 100 ms or at 64 KiB.
        format!("{d}/{tag}-access.log combined buffer=64k flush=100ms")
    } else if cfg.access_log {
        format!("{d}/{tag}-access.log")
    } else {
        "off".into()
    };
    let _ = write!(
        o,
        "worker_processes {threads};
pid {d}/{tag}.pid;
error_log {d}/{tag}-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log {access};
  client_body_temp_path {d}/{tag}-tmp/body;
  proxy_temp_path {d}/{tag}-tmp/proxy;
  fastcgi_temp_path {d}/{tag}-tmp/fastcgi;
  uwsgi_temp_path {d}/{tag}-tmp/uwsgi;
  scgi_temp_path {d}/{tag}-tmp/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  server_names_hash_max_size 32768;
  server_names_hash_bucket_size 128;
  proxy_http_version 1.1;
  proxy_set_header Connection \"\";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header Forwarded \"for=$remote_addr;host=\\\"$host\\\";proto=$scheme\";
",
        threads = cfg.threads
    );
    for (name, port) in [("svc_a", PORT_A), ("svc_b", PORT_B)] {
        let _ = writeln!(o, "  upstream {name} {{");
        for b in BACKENDS {
            let _ = writeln!(o, "    server {b}:{port};");
        }
        // weft's pool: up to 256 idle connections per endpoint, 60 s idle timeout.
        let _ = writeln!(
            o,
            "    keepalive 256;\n    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n  }}"
        );
    }
    if https.is_some() {
        // Only where TLS is served: nginx loads the certificate for every server block
        // that inherits it, TLS listener or not.
        let _ = writeln!(
            o,
            "  ssl_certificate {d}/tls.crt;\n  ssl_certificate_key {d}/tls.key;"
        );
        // TLS 1.3 as weft speaks it (nginx 1.22 leaves it out of its default protocols,
        // so before this line it answered OpenSSL clients with TLS 1.2) and weft's suite
        // preference (proxy/tls.rs): both do the same cryptography.
        o.push_str(
            "  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_prefer_server_ciphers on;\n  ssl_conf_command Ciphersuites \
             TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;\n",
        );
    }
    let listen = |o: &mut String, default: &str| {
        let _ = writeln!(o, "    listen {PROXY_IP}:{http}{default};");
        if let Some(s) = https {
            let _ = writeln!(o, "    listen {PROXY_IP}:{s} ssl{default};");
        }
    };
    // A host no rule names: 404, as weft answers it.
    o.push_str("  server {\n");
    listen(&mut o, " default_server");
    o.push_str("    return 404;\n  }\n");
    for s in sites {
        o.push_str("  server {\n");
        listen(&mut o, "");
        let _ = writeln!(o, "    server_name {};", s.host);
        for (p, u) in &s.paths {
            nginx_location(&mut o, p, u);
        }
        o.push_str("  }\n");
    }
    o.push_str("}\n");
    o
}

pub fn small_sites() -> Vec<NginxSite> {
    vec![
        NginxSite {
            host: "shop.bench".into(),
            paths: vec![("/".into(), "svc_a"), ("/api".into(), "svc_b")],
        },
        NginxSite {
            host: "blog.bench".into(),
            paths: vec![("/".into(), "svc_b")],
        },
    ]
}

pub fn many_sites(n: usize, changes: &BTreeMap<usize, Vec<usize>>) -> Vec<NginxSite> {
    (0..n)
        .map(|i| {
            let mut paths = vec![("/".to_string(), "svc_a")];
            for k in changes.get(&i).into_iter().flatten() {
                paths.push((format!("/v{k}"), "svc_b"));
            }
            NginxSite {
                host: many_host(i),
                paths,
            }
        })
        .collect()
}

/// An nginx master (and its workers) running one configuration file.
pub struct Nginx {
    child: Child,
    conf: PathBuf,
    tag: String,
}

impl Nginx {
    /// Writes `text` as `<tag>.conf`, starts nginx on it and waits for `port`; returns it
    /// with the time from the start to listening.
    pub fn start(ctx: &Ctx, tag: &str, text: &str, port: u16) -> (Nginx, Duration) {
        let conf = ctx.dir.join(format!("{tag}.conf"));
        fs::write(&conf, text).expect("nginx conf");
        fs::create_dir_all(ctx.dir.join(format!("{tag}-tmp"))).expect("tmp");
        let t = Instant::now();
        let mut c = ctx.command(&ctx.cfg.proxy_cpus, Path::new("nginx"));
        c.args(nginx_args(&ctx.dir, &conf))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(ctx.log(&format!("{tag}-stdout.log")))
            .stderr(ctx.log(&format!("{tag}-stdout.log")));
        let child = ctx.spawn(c, "nginx");
        wait_port(&format!("{PROXY_IP}:{port}"), "nginx");
        (
            Nginx {
                child,
                conf,
                tag: tag.to_string(),
            },
            t.elapsed(),
        )
    }

    /// Rewrites the configuration with `text` and runs `nginx -s reload`, which returns
    /// once the master has been signalled.
    pub fn reload(&self, ctx: &Ctx, text: &str) -> String {
        fs::write(&self.conf, text).expect("conf");
        let mut c = ctx.command(&ctx.cfg.proxy_cpus, Path::new("nginx"));
        let st = c
            .args(nginx_args(&ctx.dir, &self.conf))
            .args(["-s", "reload"])
            .stderr(ctx.log(&format!("{}-stdout.log", self.tag)))
            .status()
            .expect("nginx -s reload");
        assert!(st.success(), "nginx -s reload failed");
        "nginx -s reload".into()
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        proxy_pids(self.child.id(), true)
    }

    pub fn stop(mut self) {
        finish(&mut self.child);
    }
}

fn nginx_args(dir: &Path, conf: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        dir.display().to_string(),
        "-e".into(),
        dir.join("nginx-stderr.log").display().to_string(),
        "-c".into(),
        conf.display().to_string(),
    ]
}
