//! weft-agent: the node agent. [`controller`] is its control loop (watch the Kubernetes API,
//! compile routes, the CNI config and the set of running pods, apply the difference); the
//! rest of the crate is its pod runtime: what kubelet and a container runtime together do
//! for a pod's networking, without containers. The agent
//! runs inside the node's network namespace; for each pod the [`Runtime`]
//!
//! 1. creates a named network namespace `<netns_prefix><namespace>-<name>` (only
//!    `[a-z0-9.-]`; cut and suffixed with a hash when too long or changed by that rule);
//! 2. calls the CNI plugin exactly as a container runtime does (`CNI_COMMAND=ADD`,
//!    `CNI_CONTAINERID=<pod uid>`, `CNI_NETNS`, `CNI_IFNAME=eth0`, `CNI_PATH`, `CNI_ARGS`
//!    with the `K8S_POD_*` keys, the network config on stdin) and takes the pod's
//!    addresses from the result;
//! 3. writes the pod's `resolv.conf` as kubelet does for its `dnsPolicy`: ClusterFirst
//!    (the default) gives `nameserver <cluster DNS>`, the Kubernetes search path and
//!    `ndots:5`, with `dnsConfig` appended; None gives `dnsConfig` alone; Default (or no
//!    cluster DNS configured) keeps the node's file. And `hosts`: localhost lines and
//!    `<pod IP> [<fqdn>] <host name>` (`spec.hostname`, `spec.subdomain` honoured);
//! 4. starts each container on the host's file system, in the pod's network namespace and
//!    in a private mount and UTS namespace: the pod's files are bind-mounted over
//!    `/etc/resolv.conf` and `/etc/hosts`, the host name is the pod's name;
//! 5. records all of it durably under `<state_dir>/pods/<uid>/` before returning.
//!
//! ## Containers
//! A container with a `command` runs `command + args`; the program is looked up on `PATH`,
//! and `weft` means the runtime's own weft binary (`<state_dir>/bin` is first on the pod's
//! `PATH` and holds a `weft` link to it, so scripts find it too). A container without a
//! `command` runs `weft serve` with one listener per `containerPort`: UDP ports get
//! `--udp`, SCTP ports `--sctp`, TCP ports `--tcp` (line echo), except TCP ports whose
//! `name` starts with `http` (`http`, `http-metrics`...), which get `--http` (HTTP echo); the
//! container's `args` are appended. The environment is `PATH`, `HOME`, `HOSTNAME`,
//! `POD_NAME`, `POD_NAMESPACE`, `POD_IP`, `NODE_NAME` plus the container's `env` (literal
//! values, and `fieldRef`s to the pod's name, namespace, uid, node name and IPs).
//!
//! Containers are detached from the agent: each starts in its own session (it leads a
//! process group that `stop` signals as a whole), with stdout and stderr appended to
//! `<state_dir>/pods/<uid>/<container>.log`. Killing the agent leaves pods running, and
//! their established connections with them; [`Runtime::adopt`] takes them back after a
//! restart, trusting a recorded PID only if its start time and its `/proc/PID/ns/net`
//! inode still match the record. The exit code of a container that ends while it is not a
//! child of the current agent process is unknown (`None`).
//!
//! The private mount namespace is made a *slave* of the host's (`MS_REC|MS_SLAVE`), not
//! private: nothing mounted in the pod propagates back to the host, but the host's unmounts
//! still reach the pod, so a running pod does not keep other pods' `/run/netns` mounts
//! (and with them their namespaces) alive.
//!
//! `hostNetwork: true` pods are refused (every pod gets its own namespace), as are
//! `env.valueFrom` other than `fieldRef` and `grpc`/HTTPS probes; the error names the field.
//!
//! ## Probes and restarts
//! [`Runtime::probe_all`] collects ended containers, restarts them by `restartPolicy`
//! (`Always`, the default, restarts; `OnFailure` restarts unless the exit code was 0;
//! `Never` leaves them exited; a container that keeps exiting within a minute waits 1 s,
//! 2 s, 4 s... up to 60 s between restarts), and runs the readiness
//! probes that are due (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `successThreshold`, `failureThreshold`). `tcpSocket` and `httpGet` probes connect from
//! inside the pod's namespace to the pod's IP (or `host`); `exec` probes run like
//! [`Runtime::exec_command`]. A container without a readiness probe is ready while it runs.
//! A `livenessProbe` failing `failureThreshold` times in a row gets the container killed
//! (SIGKILL to its process group, no grace period) and then restarted by policy.
//!
//! ## Where the CNI plugin runs
//! The plugin must run in the node's network namespace (it creates the bridge and the host
//! end of the veth there). In production the agent already is in it. A caller elsewhere
//! (tests) sets [`RuntimeConfig::host_netns`]: the plugin process enters that namespace
//! before it execs. Nothing else the runtime does depends on the caller's namespace.
//!
//! The agent itself should enter the node's namespace with `setns` only. `ip netns exec`
//! would also give it a mount namespace of its own whose mounts do not propagate back,
//! so the pods' `/run/netns` entries would be invisible outside the agent.
//!
//! ## Using it
//! ```no_run
//! use std::collections::HashSet;
//! use weft_agent::{Runtime, RuntimeConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = RuntimeConfig::new(
//!     "node-1",
//!     "/var/lib/weft/node-1",
//!     "/usr/local/bin/weft",
//!     "/etc/cni/net.d/10-weft.conf",
//! );
//! let mut rt = Runtime::new(cfg)?;
//! let running = rt.adopt()?; // after a restart: the pods that survived
//! let pod = serde_yaml::from_str(&std::fs::read_to_string("web.yaml")?)?;
//! // The step between wiring and the first process is where NetworkPolicy goes.
//! let st = rt.start_with(&pod, |st| {
//!     println!("{} has {:?}; no process runs yet", st.name, st.ips);
//!     Ok(())
//! })?;
//! rt.probe_all(); // about once a second
//! let kube_status = rt.status(&st.uid).map(|s| s.to_pod_status());
//! let wanted: HashSet<String> = running.into_iter().collect();
//! rt.gc(&wanted)?; // stops every pod not wanted
//! # let _ = kube_status;
//! # Ok(())
//! # }
//! ```
//!
//! Every method blocks: `start` runs the plugin, `stop` waits up to the pod's grace period,
//! `probe_all` waits for probes up to their timeouts. An async agent calls them from a
//! thread of their own (`spawn_blocking`). One runtime owns a state directory (a lock);
//! [`exec_recorded`] lets another process (`weft lab exec`) run commands in a pod from the
//! records alone. `weft-pod`, a binary of this crate, drives the runtime without an API
//! server: `weft-pod ... run pod.yaml`, `status`, `stop UID`, `exec NS/NAME CMD`.
//!
//! `gc` also calls the plugin's CNI `GC` with the pods that remain as valid attachments,
//! which releases addresses a crash leaked; the IPAM `dataDir` must therefore be private
//! to the node.
//!
//! Pod processes inherit nothing from the agent but stdio: every other descriptor is
//! closed at exec, and TERM/INT/HUP/QUIT/CHLD start with their default dispositions.

mod cni;
mod config;
mod containers;
pub mod controller;
mod error;
pub mod events;
mod kube_status;
mod launch;
mod lifecycle;
pub mod logwriter;
mod names;
pub mod nodeapi;
mod podfiles;
mod prober;
mod process;
mod record;
mod runtime;
mod spec;
mod status;
pub mod sync_status;

pub use config::RuntimeConfig;
pub use error::{Error, Result};
pub use launch::{exec_in_container, exec_recorded};
pub use names::netns_name;
pub use runtime::{HookError, Runtime};
pub use spec::{plan, PodPlan, RestartPolicy};
pub use status::{ContainerState, PodRuntimeStatus};

// The agent moves the runtime into a blocking task or thread of its own.
const _: () = {
    const fn send<T: Send>() {}
    send::<Runtime>();
    send::<Error>();
};
