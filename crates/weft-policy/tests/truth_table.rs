//! Every case under tests/cases through the matcher: after each step, the matrix the case
//! states must be what `check` answers, for every pair of pods and every served port.

mod common;

use weft_policy::cases::{format_grid, Matrix};
use weft_policy::{check, Endpoint};

#[test]
fn every_case_matches_the_matcher() {
    let world = common::world();
    let pods = world.pod_names();
    let mut failures = Vec::new();
    let cases = common::cases(&world);
    assert!(cases.len() >= 20, "found only {} cases", cases.len());
    for (file, case) in &cases {
        let mut cluster = world.cluster().expect("the world is valid");
        for (i, step) in case.steps.iter().enumerate() {
            let at = format!("{file} step {i} ({})", step.name.as_deref().unwrap_or(""));
            if let Err(e) = step.apply_to(&mut cluster) {
                failures.push(format!("{at}: {e}"));
                continue;
            }
            for (svc, want) in common::expectations(&world, step, &at) {
                let mut got = Matrix::new();
                let mut why = Vec::new();
                for s in &pods {
                    for d in &pods {
                        let (sn, sp) = s.split_once('/').unwrap();
                        let (dn, dp) = d.split_once('/').unwrap();
                        let dec = check(
                            &cluster,
                            &Endpoint::pod(sn, sp),
                            &Endpoint::pod(dn, dp),
                            svc.port,
                            svc.protocol,
                        )
                        .expect("world pods exist");
                        if want.get(&(s.clone(), d.clone())) != Some(&dec.allowed) {
                            why.push(format!("{s} -> {d}: {dec}"));
                        }
                        got.insert((s.clone(), d.clone()), dec.allowed);
                    }
                }
                if !why.is_empty() {
                    failures.push(format!(
                        "{at} on {svc}:\nwant\n{}got\n{}{}",
                        format_grid(&want, &pods),
                        format_grid(&got, &pods),
                        why.join("\n")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
