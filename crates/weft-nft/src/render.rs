//! Rendering to `nft` syntax, for dry runs, debugging and docs. The output is a script
//! `nft -f` accepts: tables, then sets and maps, then chains with their rules.

use std::fmt::Write;
use std::time::Duration;

use crate::model::{
    Chain, DataType, Elem, ElemData, Family, Key, KeyType, Policy, Ruleset, Set, Table, Value,
    Verdict,
};
use crate::rule::{CmpOp, DynsetOp, Reject, Rhs, Rule, Selector, SetRef, Stmt};

pub fn ruleset(rs: &Ruleset) -> String {
    let mut out = String::new();
    for t in rs.tables.values() {
        out.push_str(&table(t));
    }
    out
}

/// One table block. Chains are declared before sets so verdict-map elements can name them.
pub fn table(t: &Table) -> String {
    let mut out = format!("table {} {} {{\n", t.family.as_str(), t.name);
    for c in t.chains.values() {
        let _ = writeln!(out, "\tchain {} {{", c.name);
        if let Some(b) = &c.base {
            let _ = writeln!(
                out,
                "\t\ttype {} hook {} priority {}; policy {};",
                b.kind.as_str(),
                b.hook.as_str(),
                b.priority,
                if b.policy == Policy::Accept {
                    "accept"
                } else {
                    "drop"
                }
            );
        }
        out.push_str("\t}\n");
    }
    for s in t.sets.values() {
        out.push_str(&set(s));
    }
    for c in t.chains.values().filter(|c| !c.rules.is_empty()) {
        out.push_str(&chain_rules(c, t.family));
    }
    out.push_str("}\n");
    out
}

fn chain_rules(c: &Chain, family: Family) -> String {
    let mut out = format!("\tchain {} {{\n", c.name);
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{}", rule(r, family));
    }
    out.push_str("\t}\n");
    out
}

fn type_list(fields: &[KeyType]) -> String {
    fields
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(" . ")
}

/// Each type as an expression of that type, for a map declared with `typeof`; the same
/// expressions weft writes into the set's userdata.
fn typeof_list(fields: &[KeyType]) -> Option<String> {
    let exprs: Option<Vec<String>> = fields
        .iter()
        .map(|f| crate::netlink::udata::typeof_for_type(*f).map(|s| s.nft_syntax()))
        .collect();
    exprs.map(|e| e.join(" . "))
}

pub fn set(s: &Set) -> String {
    let kind = if s.is_map() { "map" } else { "set" };
    let mut out = format!("\t{kind} {} {{\n", s.name);
    let data = match &s.data {
        Some(DataType::Verdict) => " : verdict".to_owned(),
        Some(DataType::Value(d)) => format!(" : {}", type_list(d)),
        None => String::new(),
    };
    match &s.typeof_key {
        Some(sel) => {
            let k = sel
                .iter()
                .map(|x| x.nft_syntax())
                .collect::<Vec<_>>()
                .join(" . ");
            // nft takes `typeof` for both sides or for neither.
            let data = match &s.data {
                Some(DataType::Value(d)) => match typeof_list(d) {
                    Some(t) => format!(" : {t}"),
                    None => data,
                },
                _ => data,
            };
            let _ = writeln!(out, "\t\ttypeof {k}{data}");
        }
        None => {
            let _ = writeln!(out, "\t\ttype {}{data}", type_list(&s.key));
        }
    }
    let mut flags = Vec::new();
    if s.flags.constant {
        flags.push("constant");
    }
    if s.flags.interval {
        flags.push("interval");
    }
    if s.flags.timeout {
        flags.push("timeout");
    }
    if s.flags.dynamic {
        flags.push("dynamic");
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = writeln!(out, "\t\ttimeout {}", duration(t));
    }
    if s.flags.counter {
        out.push_str("\t\tcounter\n");
    }
    if !s.elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {}", elements(s));
    }
    out.push_str("\t}\n");
    out
}

fn elements(s: &Set) -> String {
    let items: Vec<String> = s.elements.iter().map(|(k, e)| element(k, e)).collect();
    format!("{{ {} }}", items.join(", "))
}

fn element(k: &Key, e: &Elem) -> String {
    let mut out = match &e.end {
        Some(end) => {
            k.0.iter()
                .zip(&end.0)
                .map(|(a, b)| {
                    if a == b {
                        value(a)
                    } else {
                        format!("{}-{}", value(a), value(b))
                    }
                })
                .collect::<Vec<_>>()
                .join(" . ")
        }
        None => values(&k.0),
    };
    if let Some(t) = e.timeout {
        let _ = write!(out, " timeout {}", duration(t));
    }
    match &e.data {
        Some(ElemData::Verdict(v)) => {
            let _ = write!(out, " : {}", verdict(v));
        }
        Some(ElemData::Value(v)) => {
            let _ = write!(out, " : {}", values(v));
        }
        None => {}
    }
    out
}

pub fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub fn value(v: &Value) -> String {
    match v {
        Value::Ipv4(a) => a.to_string(),
        Value::Ipv6(a) => a.to_string(),
        Value::Proto(p) => match *p as i32 {
            libc::IPPROTO_TCP => "tcp".into(),
            libc::IPPROTO_UDP => "udp".into(),
            libc::IPPROTO_SCTP => "sctp".into(),
            libc::IPPROTO_ICMP => "icmp".into(),
            libc::IPPROTO_ICMPV6 => "ipv6-icmp".into(),
            n => n.to_string(),
        },
        Value::Port(p) => p.to_string(),
        Value::Mark(m) => format!("{m:#010x}"),
        Value::Ifname(n) => format!("\"{n}\""),
        Value::Integer(i) => i.to_string(),
    }
}

fn values(v: &[Value]) -> String {
    v.iter().map(value).collect::<Vec<_>>().join(" . ")
}

pub fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Continue => "continue".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
    }
}

fn key(sel: &[Selector]) -> String {
    sel.iter()
        .map(|s| s.nft_syntax())
        .collect::<Vec<_>>()
        .join(" . ")
}

fn masked_key(k: &[crate::rule::KeyField]) -> String {
    k.iter()
        .map(|f| match f.mask {
            Some(m) => format!("{} and {m:#010x}", f.sel.nft_syntax()),
            None => f.sel.nft_syntax(),
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

fn set_ref(r: &SetRef) -> String {
    match r {
        SetRef::Named(n) => format!("@{n}"),
        SetRef::Anonymous(s) => elements(s),
    }
}

fn op(o: CmpOp) -> &'static str {
    match o {
        CmpOp::Eq => "",
        CmpOp::Ne => "!= ",
    }
}

fn nat_family(family: Family, addr: &std::net::IpAddr) -> &'static str {
    match (family, addr) {
        (Family::Inet, std::net::IpAddr::V4(_)) => " ip",
        (Family::Inet, std::net::IpAddr::V6(_)) => " ip6",
        _ => "",
    }
}

fn nat_target(addr: &std::net::IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

pub fn rule(r: &Rule, family: Family) -> String {
    r.stmts
        .iter()
        .map(|s| stmt(s, family))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn stmt(s: &Stmt, family: Family) -> String {
    match s {
        Stmt::Match { key, op: o, rhs } => {
            let rhs = match rhs {
                Rhs::Value(v) => value(v),
                Rhs::Prefix(v, bits) => format!("{}/{bits}", value(v)),
                Rhs::Range(a, b) => format!("{}-{}", value(a), value(b)),
            };
            format!("{} {}{rhs}", key.nft_syntax(), op(*o))
        }
        Stmt::Lookup {
            key: k,
            set,
            negate,
        } => {
            format!(
                "{} {}{}",
                key(k),
                if *negate { "!= " } else { "" },
                set_ref(set)
            )
        }
        Stmt::CtState(st) => format!("ct state {}", st.names().join(",")),
        Stmt::MarkMatch {
            ct,
            mask,
            value,
            op: o,
        } => {
            let sel = if *ct { "ct mark" } else { "meta mark" };
            let cmp = if *o == CmpOp::Eq { "==" } else { "!=" };
            format!("{sel} and {mask:#010x} {cmp} {value:#010x}")
        }
        Stmt::MarkOr { ct, bits } => {
            let sel = if *ct { "ct mark" } else { "meta mark" };
            format!("{sel} set {sel} or {bits:#010x}")
        }
        Stmt::MarkXor { ct, bits } => {
            let sel = if *ct { "ct mark" } else { "meta mark" };
            format!("{sel} set {sel} xor {bits:#010x}")
        }
        Stmt::FibDaddrLocal => "fib daddr type local".into(),
        Stmt::FibSaddrLocal(CmpOp::Eq) => "fib saddr type local".into(),
        Stmt::FibSaddrLocal(CmpOp::Ne) => "fib saddr type != local".into(),
        Stmt::Counter => "counter".into(),
        Stmt::Verdict(v) => verdict(v),
        Stmt::Vmap { key: k, map } => format!("{} vmap {}", key(k), set_ref(map)),
        Stmt::Dnat { addr, port } => format!(
            "dnat{} to {}",
            nat_family(family, addr),
            nat_target(addr, *port)
        ),
        Stmt::Snat { addr, port } => format!(
            "snat{} to {}",
            nat_family(family, addr),
            nat_target(addr, *port)
        ),
        Stmt::DnatMap { key: k, map } => {
            let v6 = matches!(map, SetRef::Anonymous(s) if s.data == Some(DataType::Value(vec![KeyType::Ipv6Addr, KeyType::InetService])));
            let fam = if v6 { "ip6" } else { "ip" };
            format!("dnat {fam} to {} map {}", key(k), set_ref(map))
        }
        Stmt::Notrack => "notrack".into(),
        Stmt::Masquerade { fully_random } => {
            if *fully_random {
                "masquerade fully-random".into()
            } else {
                "masquerade".into()
            }
        }
        Stmt::Reject(Reject::TcpReset) => "reject with tcp reset".into(),
        Stmt::Reject(Reject::PortUnreachable) => match family {
            Family::Ip => "reject with icmp type port-unreachable".into(),
            Family::Ip6 => "reject with icmpv6 type port-unreachable".into(),
            Family::Inet => "reject with icmpx type port-unreachable".into(),
        },
        Stmt::Dynset {
            op,
            key: k,
            set,
            timeout,
            data,
        } => {
            let verb = if *op == DynsetOp::Update {
                "update"
            } else {
                "add"
            };
            let t = timeout
                .map(|t| format!(" timeout {}", duration(t)))
                .unwrap_or_default();
            let d = if data.is_empty() {
                String::new()
            } else {
                format!(" : {}", key(data))
            };
            format!("{verb} @{set} {{ {}{t}{d} }}", key(k))
        }
        Stmt::MarkSetMap { ct, key: k, map } => {
            let sel = if *ct { "ct mark" } else { "meta mark" };
            format!("{sel} set {} map @{map}", masked_key(k))
        }
        Stmt::VmapMasked { key: k, map } => format!("{} vmap @{map}", masked_key(k)),
        Stmt::LookupMasked { key: k, set } => format!("{} @{set}", masked_key(k)),
        Stmt::Log { prefix, group } => {
            let mut out = String::from("log");
            if let Some(p) = prefix {
                let _ = write!(out, " prefix \"{}\"", p.replace('"', "'"));
            }
            if let Some(g) = group {
                let _ = write!(out, " group {g}");
            }
            out
        }
    }
}
