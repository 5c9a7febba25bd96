//! A backend: the role the bench binary takes when re-executed with
//! `WEFT_INGRESS_BENCH_ROLE=backend`. Each address in `WEFT_INGRESS_BENCH_ADDRS`
//! (`addr=name,...`) answers every request with `<name>\n`.

use std::process::{Child, Stdio};

use crate::netns::{wait_port, Ctx};
use crate::{BACKENDS, PORT_A, PORT_B, ROLE};

/// Starts the backend processes (on the client CPUs), each serving Service a and b on its
/// address, and waits for their ports.
pub fn start(ctx: &Ctx) -> Vec<Child> {
    let mut backends = Vec::new();
    for b in BACKENDS {
        let mut c = ctx.command(&ctx.cfg.client_cpus, &ctx.exe);
        c.env(ROLE, "backend")
            .env(
                "WEFT_INGRESS_BENCH_ADDRS",
                format!("{b}:{PORT_A}=a,{b}:{PORT_B}=b"),
            )
            .stdin(Stdio::null())
            .stderr(ctx.log("backends.log"));
        backends.push(ctx.spawn(c, "backend"));
        wait_port(&format!("{b}:{PORT_A}"), "backend");
        wait_port(&format!("{b}:{PORT_B}"), "backend");
    }
    backends
}

/// The child's side, run when re-executed with `WEFT_INGRESS_BENCH_ROLE=backend`.
pub fn serve() {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let addrs = std::env::var("WEFT_INGRESS_BENCH_ADDRS").expect("addrs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for spec in addrs.split(',') {
            let (addr, name) = spec.split_once('=').expect("addr=name");
            let body: &'static [u8] = if name == "a" { b"a\n" } else { b"b\n" };
            let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = service_fn(move |_req| async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from_static(body),
                            )))
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
