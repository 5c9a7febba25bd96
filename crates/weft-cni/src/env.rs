//! The CNI_* environment a runtime sets, parsed and checked per command as the spec
//! requires (section "Parameters").

use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(Error::invalid_env(
                    "CNI_COMMAND",
                    format!(
                    "unknown command {other:?} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)"
                ),
                ))
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS as `K=V` pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Reads the environment through `get`, so tests can feed a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Invocation> {
        let command = match get("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => return Err(Error::invalid_env("CNI_COMMAND", "not set")),
        };
        let need = |var: &str| -> Result<String> {
            match get(var) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(Error::invalid_env(
                    var,
                    format!("required for {command:?} but not set"),
                )),
            }
        };
        let (needs_id, needs_netns, needs_ifname) = match command {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Status | Command::Gc | Command::Version => (false, false, false),
        };
        let container_id = if needs_id {
            need("CNI_CONTAINERID")?
        } else {
            get("CNI_CONTAINERID").unwrap_or_default()
        };
        if needs_id {
            validate_container_id(&container_id)?;
        }
        let netns = if needs_netns {
            Some(PathBuf::from(need("CNI_NETNS")?))
        } else {
            get("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let ifname = if needs_ifname {
            need("CNI_IFNAME")?
        } else {
            get("CNI_IFNAME").unwrap_or_default()
        };
        if needs_ifname {
            validate_ifname(&ifname)?;
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        let path = if command == Command::Gc {
            need("CNI_PATH")?
        } else {
            get("CNI_PATH").unwrap_or_default()
        };
        let path = std::env::split_paths(&path)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    pub fn from_env() -> Result<Invocation> {
        Invocation::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The spec: alphanumerics plus `_ . -`, not empty, starting alphanumeric.
fn validate_container_id(id: &str) -> Result<()> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_env(
            "CNI_CONTAINERID",
            format!("{id:?} must be alphanumeric with _ . - and start alphanumeric"),
        ))
    }
}

/// Linux interface names: 1..=15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(Error::invalid_env(
            "CNI_IFNAME",
            format!("{name:?} is not a valid interface name (1-15 chars, no '/', ':' or spaces)"),
        ));
    }
    Ok(())
}

fn parse_args(s: &str) -> Result<Vec<(String, String)>> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::invalid_env(
                "CNI_ARGS",
                format!("{pair:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn inv(pairs: &[(&str, &str)]) -> Result<Invocation> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Invocation::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_netns_but_del_does_not() {
        let e = inv(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_NETNS"), "{e}");
        let d = inv(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert!(d.netns.is_none());
    }

    #[test]
    fn gc_needs_path_and_args_parse() {
        assert_eq!(inv(&[("CNI_COMMAND", "GC")]).unwrap_err().code, 4);
        let i = inv(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.5"),
        ])
        .unwrap();
        assert_eq!(i.arg("IP"), Some("10.0.0.5"));
        assert_eq!(
            inv(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "junk")
            ])
            .unwrap_err()
            .code,
            4
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_container_id("-x").is_err());
        assert_eq!(inv(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, 4);
    }
}
