//! Mutation fuzzing of what faces the outside: the network config on stdin and the CNI_*
//! environment. Whatever arrives, the plugin answers with a spec error code and never
//! panics. (Deterministic: a fixed seed, so a failure reproduces.)

use weft_cni::config::NetConf;
use weft_cni::env::Invocation;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: enough spread for mutation choices.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"cniVersion":"1.1.0","name":"n","type":"weft","bridge":"cbr0","isGateway":true,"ipMasq":false,"mtu":1450,"hairpinMode":true,"ipam":{"type":"weft","subnet":"10.244.1.0/24","rangeStart":"10.244.1.10","rangeEnd":"10.244.1.20","gateway":"10.244.1.1","routes":[{"dst":"0.0.0.0/0"}],"dataDir":"/tmp/x"}}"#,
    r#"{"cniVersion":"0.4.0","name":"n","type":"weft","ipam":{"type":"weft","ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"fd00::/64"}]]},"runtimeConfig":{"ips":["10.1.0.5/16"]},"prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/16"}]}}"#,
    r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"host-local","subnet":"10.2.0.0/24"},"dns":{"nameservers":["10.96.0.10"]},"args":{"cni":{"ips":["10.2.0.9"]}}}"#,
];

/// Tokens that steer mutations toward interesting JSON: wrong types, odd numbers, nesting.
const TOKENS: &[&str] = &[
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "-1",
    "1e309",
    "18446744073709551616",
    "\"10.0.0.0/33\"",
    "\"::/0\"",
    "\"0.0.0.0/0\"",
    "[[]]",
    "[{}]",
    "\"../..\"",
    "\"\\u0000\"",
    "0",
    "\"1.1.0\"",
    ",",
    ":",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(3) {
        let pos = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let p = pos.min(v.len() - 1);
                v[p] = rng.next() as u8;
            }
            1 if pos < v.len() => {
                let end = (pos + rng.below(16)).min(v.len());
                v.drain(pos..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(pos..pos, t.bytes());
            }
            3 => {
                // Replace the JSON value after a colon with a token: reaches field validation.
                let from = pos.min(v.len());
                if let Some(colon) = v[from..].iter().position(|b| *b == b':') {
                    let start = from + colon + 1;
                    let end = v[start..]
                        .iter()
                        .position(|b| matches!(b, b',' | b'}' | b']'))
                        .map_or(v.len(), |e| start + e);
                    let t = TOKENS[rng.below(TOKENS.len())];
                    v.splice(start..end, t.bytes());
                }
            }
            _ => {
                let other = SEEDS[rng.below(SEEDS.len())].as_bytes();
                let from = rng.below(other.len());
                let len = rng.below(32).min(other.len() - from);
                v.splice(pos..pos, other[from..from + len].iter().copied());
            }
        }
    }
    v
}

#[test]
fn config_parser_never_panics_and_always_names_a_code() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut accepted, mut invalid) = (0, 0);
    for i in 0..30_000 {
        let seed = SEEDS[i % SEEDS.len()].as_bytes();
        let input = mutate(&mut rng, seed);
        match NetConf::parse(&input) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(
                    [1, 2, 6, 7].contains(&e.code),
                    "unexpected code {} for {:?}: {e}",
                    e.code,
                    String::from_utf8_lossy(&input)
                );
                assert!(!e.msg.is_empty());
                if e.code == 7 {
                    invalid += 1;
                }
            }
        }
    }
    // The fuzzer must reach the deeper validation, not only the JSON decoder.
    assert!(accepted > 100, "only {accepted} mutated configs parsed");
    assert!(
        invalid > 100,
        "only {invalid} configs reached field validation"
    );
}

#[test]
fn environment_parser_never_panics() {
    let mut rng = Rng(0x5eed_0000_0000_0002);
    let keys = [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ];
    let values = [
        "ADD",
        "DEL",
        "CHECK",
        "GC",
        "STATUS",
        "VERSION",
        "",
        "eth0",
        "a=b;c",
        ";;=",
        "x/y",
        "0123456789abcdefg",
        "/run/netns/x",
        "IP=10.0.0.1",
        "é",
    ];
    for _ in 0..20_000 {
        let mut env: Vec<(String, String)> = Vec::new();
        for k in keys {
            if rng.below(4) != 0 {
                env.push((k.to_string(), values[rng.below(values.len())].to_string()));
            }
        }
        let lookup = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        if let Err(e) = Invocation::from_lookup(lookup) {
            assert_eq!(e.code, 4, "{e}");
        }
    }
}
