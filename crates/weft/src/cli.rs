//! The command line: weft's contract with its users. Users and tests script against these
//! names, so they change only by addition.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "weft",
    version,
    about = "Kubernetes node networking on the Linux kernel",
    long_about = "weft gives every pod its own IP (a CNI plugin with IPAM, a bridge and veth \
                  pairs), routes pod traffic between nodes, implements Services in nf_tables, \
                  serves cluster DNS and enforces NetworkPolicy (an Ingress proxy is planned). \
                  `weft lab` builds a whole cluster inside network namespaces on one machine."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build, drive and tear down a multi-node cluster in network namespaces
    #[command(subcommand)]
    Lab(LabCommand),
    /// Probe a peer: prints one result line, exits 0 when it connected or answered, 1 if not
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Serve TCP/UDP/SCTP echo and HTTP echo on the given ports (what a lab pod runs)
    Serve(ServeArgs),
    /// Run as a CNI plugin (also when invoked as `weft-cni` or with CNI_COMMAND set)
    Cni,
    /// The node agent: watches the API and runs networking (pods, routes, Services) for one node
    Agent(Box<AgentArgs>),
    /// This node's NetworkPolicy state (what its agent wrote)
    #[command(subcommand)]
    Policy(NodePolicyCommand),
    /// The lab's Kubernetes-compatible API server and controllers
    ControlPlane(PassThrough),
    /// Copy a container's stdout (fd 3) and stderr (fd 4) into a CRI log file (started by
    /// the agent for each container)
    #[command(hide = true)]
    LogWriter(PassThrough),
}

#[derive(Args, Debug)]
pub struct PassThrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct LabName {
    /// Lab name (namespaces are prefixed `weft-NAME`)
    #[arg(long, default_value = "weft")]
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum NodePolicyCommand {
    /// Packets this node's policy table dropped, per policy and rule that decided (the
    /// kernel counts them; the agent names the rules in STATE_DIR/policy-denials.tsv)
    Counters {
        /// The agent's --state-dir
        #[arg(long, default_value = "/var/lib/weft/agent")]
        state_dir: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// SRC and DST: NAMESPACE/POD, POD (default namespace), node/NAME or an IP; exit 0
    /// when allowed, 1 when denied
    Check {
        #[command(flatten)]
        lab: LabName,
        src: String,
        dst: String,
        /// PORT or PORT/PROTO (tcp, udp, sctp; default tcp)
        port: String,
    },
    /// Packets the nodes' policy tables dropped, per policy and rule that decided (each
    /// node's kernel counts them, its agent names the rules)
    Counters {
        #[command(flatten)]
        lab: LabName,
    },
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build a lab: underlay, nodes, control plane, agents
    Up {
        #[command(flatten)]
        lab: LabName,
        /// How many nodes (node-1 .. node-K, each leasing a /24 of the cluster CIDR)
        #[arg(long, default_value_t = 2)]
        nodes: u32,
        /// How pod traffic crosses nodes: a VXLAN overlay or direct routes (one L2 segment)
        #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
        backend: String,
        /// A lab file (YAML keys: nodes, backend, underlay, clusterCIDR, serviceCIDR,
        /// loadBalancerCIDR)
        #[arg(short = 'f')]
        file: Option<String>,
    },
    /// Remove a lab and everything it made
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Show a lab's nodes and processes
    Status {
        #[command(flatten)]
        lab: LabName,
    },
    /// Apply Kubernetes YAML to a lab (kubectl apply against its API)
    Apply {
        #[command(flatten)]
        lab: LabName,
        #[arg(short = 'f', required = true)]
        file: String,
    },
    /// Delete objects from a lab
    Delete {
        #[command(flatten)]
        lab: LabName,
        #[arg(short = 'f')]
        file: Option<String>,
        kind: Option<String>,
        obj: Option<String>,
        #[arg(short = 'n')]
        namespace: Option<String>,
    },
    /// List objects in a lab
    Get {
        #[command(flatten)]
        lab: LabName,
        kind: String,
        obj: Option<String>,
        #[arg(short = 'n')]
        namespace: Option<String>,
        #[arg(short = 'o')]
        output: Option<String>,
    },
    /// Run a command in a pod's namespaces, or on one of the lab's hosts (--host)
    Exec {
        #[command(flatten)]
        lab: LabName,
        #[arg(short = 'n')]
        namespace: Option<String>,
        #[arg(required_unless_present = "host")]
        pod: Option<String>,
        /// Run on a host instead: external, node-K or control-plane (its network
        /// namespace; the file system is the machine's)
        #[arg(long, conflicts_with_all = ["pod", "namespace"])]
        host: Option<String>,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Explain where a pod's packet to IP:PORT goes, read from the lab's kernel
    ///
    /// The pod's route, what its node's Service table does with the first packet
    /// (endpoints and their pods, masquerade, or why it is refused or dropped), and the
    /// route to each place it may land.
    /// NetworkPolicy: may SRC reach DST on PORT[/PROTO], and which rules decide
    #[command(subcommand)]
    Policy(PolicyCommand),
    Trace {
        #[command(flatten)]
        lab: LabName,
        #[arg(short = 'n')]
        namespace: Option<String>,
        pod: String,
        /// The destination, IPv4:PORT (a cluster IP, node port, load balancer or pod)
        target: String,
        /// UDP instead of TCP
        #[arg(long)]
        udp: bool,
    },
    /// Print the path of the lab's kubeconfig, or merge it into yours as context weft-NAME
    Kubeconfig {
        #[command(flatten)]
        lab: LabName,
        /// Add the lab to your kubeconfig (`lab down` takes it out again)
        #[arg(long)]
        merge: bool,
        /// The kubeconfig to merge into (default: $KUBECONFIG's first file, else ~/.kube/config)
        #[arg(long, requires = "merge")]
        file: Option<std::path::PathBuf>,
    },
    /// Walk through the documents' scenarios end to end on a fresh lab, with a report
    Demo,
    /// Keep a lab's programs running (started by `lab up`)
    #[command(hide = true)]
    Supervise {
        #[command(flatten)]
        lab: LabName,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProbeCommand {
    /// Open a TCP connection and exchange a line with an echo server
    Tcp(ProbeTarget),
    /// Send a UDP datagram and wait for the echo
    Udp(ProbeTarget),
    /// Open an SCTP association and exchange a message
    Sctp(ProbeTarget),
    /// Send an ICMP echo request and wait for the reply
    Icmp {
        host: String,
        #[command(flatten)]
        opts: ProbeOpts,
    },
    /// Send one request to an http:// or https:// URL and print the status
    Http {
        url: String,
        /// Exit 0 only for this HTTP status (default: any response)
        #[arg(long)]
        expect_status: Option<u16>,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Send this Host (and, over https, this SNI name) instead of the URL's host
        #[arg(long)]
        host: Option<String>,
        /// HOST:PORT:ADDR: connect to ADDR for the URL's HOST:PORT, as curl --resolve
        #[arg(long)]
        resolve: Vec<String>,
        /// Trust only these PEM certificates (a self-signed server certificate is its own CA)
        #[arg(long)]
        cacert: Option<std::path::PathBuf>,
        /// Accept any server certificate
        #[arg(long, conflicts_with = "cacert")]
        insecure: bool,
        #[command(flatten)]
        opts: ProbeOpts,
    },
    /// Ask a DNS server one question (no search list): A, AAAA, SRV, PTR, TXT, CNAME, ...
    Dns {
        name: String,
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// IP or IP:PORT (default: the first nameserver of /etc/resolv.conf)
        #[arg(long)]
        server: Option<String>,
        /// Over TCP (a UDP reply with TC set is asked again over TCP anyway)
        #[arg(long)]
        tcp: bool,
        #[command(flatten)]
        opts: ProbeOpts,
    },
}

#[derive(Args, Debug)]
pub struct ProbeTarget {
    /// HOST:PORT ([v6]:PORT for IPv6)
    pub target: String,
    #[command(flatten)]
    pub opts: ProbeOpts,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeOpts {
    /// Give up after this many milliseconds
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    #[arg(long)]
    pub tcp: Vec<u16>,
    #[arg(long)]
    pub udp: Vec<u16>,
    #[arg(long)]
    pub sctp: Vec<u16>,
    #[arg(long)]
    pub http: Vec<u16>,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// kubeconfig for the API server (default: in-cluster config or ~/.kube/config)
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// This node's name (the Node object it registers)
    #[arg(long)]
    pub node_name: String,
    /// This node's address on the underlay (its InternalIP)
    #[arg(long)]
    pub node_ip: std::net::IpAddr,
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
    pub backend: String,
    /// The node's interface on the underlay
    #[arg(long, default_value = "eth0")]
    pub underlay_if: String,
    #[arg(long, default_value = "/var/lib/weft/agent")]
    pub state_dir: std::path::PathBuf,
    /// Pods' network namespaces are named PREFIX<namespace>-<pod>
    #[arg(long, default_value = "weft-pod.")]
    pub netns_prefix: String,
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: ipnet::IpNet,
    #[arg(long)]
    pub cluster_dns: Option<std::net::IpAddr>,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Leave pods to the kubelet (a real cluster): only route and masquerade
    #[arg(long)]
    pub no_pods: bool,
    /// Leave NetworkPolicy unenforced on this node (another component enforces it)
    #[arg(long)]
    pub no_network_policy: bool,
    /// Log packets the NetworkPolicy table drops to this nflog group; the agent reads
    /// them and logs the policy and rule that decided (denials are counted per policy
    /// without it: STATE_DIR/policy-denials.tsv, `weft policy counters`)
    #[arg(long, conflicts_with = "no_network_policy")]
    pub policy_nflog_group: Option<u16>,
    /// Serve the cluster DNS zone on this node at --cluster-dns (in place of CoreDNS)
    #[arg(long, requires = "cluster_dns")]
    pub serve_dns: bool,
    /// Names outside the cluster zone go to the nameservers of this file
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub dns_resolv_conf: std::path::PathBuf,
    /// ... or to these servers (IP:PORT, repeatable), in order of preference
    #[arg(long)]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Serve Ingresses of weft's class (controller weft.dev/ingress) on this node
    #[arg(long)]
    pub ingress: bool,
    /// Where the Ingress proxy takes plain HTTP
    #[arg(long, default_value = "0.0.0.0:80", requires = "ingress")]
    pub ingress_http: std::net::SocketAddr,
    /// Where the Ingress proxy takes HTTPS
    #[arg(long, default_value = "0.0.0.0:443", requires = "ingress")]
    pub ingress_https: std::net::SocketAddr,
    /// The Ingress proxy's worker threads, each with its own event loop and its own
    /// sockets on both ports (the kernel spreads connections over them), as nginx's
    /// worker_processes [default: one per CPU the agent may run on]
    #[arg(long, requires = "ingress")]
    pub ingress_workers: Option<std::num::NonZeroUsize>,
}
