//! weft IPAM on a full disk: a small tmpfs, in a mount namespace of the test's own thread
//! (nothing is mounted where the host sees it), filled up. Allocations that cannot be
//! stored fail with an error naming the file and the cause; every allocation that was
//! acknowledged is still there, none that failed is; once space returns, allocation goes
//! on from the same state.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use weft_cni::ipam::range::Range;
use weft_cni::ipam::Ipam;

/// Runs `f` on a thread with its own mount namespace and a tmpfs of `size` at a fresh
/// directory. The tmpfs goes with the thread's namespace.
fn on_small_tmpfs<T: Send>(size: &str, f: impl FnOnce(&Path) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS).expect("unshare a mount namespace (needs root)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make mounts private");
            let dir = tempfile::tempdir().expect("temp dir");
            mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                MsFlags::empty(),
                Some(format!("size={size},mode=0700").as_str()),
            )
            .expect("mount a tmpfs");
            f(dir.path())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Fills the file system holding `dir` to the last byte.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_refuses_cleanly_keeps_what_was_acknowledged_and_recovers() {
    on_small_tmpfs("64k", |root| {
        let ipam = Ipam::open(&root.join("ipam"), "podnet").expect("open");
        let range = Range::new(
            "ipam",
            "10.9.0.0/16".parse().expect("net"),
            None,
            None,
            None,
        )
        .expect("range");
        let sets = vec![vec![range]];
        let mut acked: BTreeSet<IpAddr> = BTreeSet::new();
        for i in 0..5 {
            let l = ipam
                .allocate(&sets, &format!("c{i}"), "eth0", &[])
                .expect("allocate before full");
            acked.insert(l[0].ip);
        }
        let filler = fill(root);
        // The state outgrows the pages it already has: some allocation must fail.
        let mut failure = None;
        for i in 5..400 {
            match ipam.allocate(&sets, &format!("c{i}"), "eth0", &[]) {
                Ok(l) => {
                    acked.insert(l[0].ip);
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let failure = failure.expect("a full disk never refused an allocation");
        println!("refused after {} allocations: {failure}", acked.len());
        assert!(
            failure.contains("No space left on device") && failure.contains("podnet"),
            "the error should say what and where: {failure}"
        );
        let held = |ipam: &Ipam| -> BTreeSet<IpAddr> {
            (0..400)
                .flat_map(|i| ipam.held(&format!("c{i}"), "eth0").expect("read state"))
                .collect()
        };
        assert_eq!(
            held(&ipam),
            acked,
            "the state on disk is what was acknowledged"
        );
        // Reopened (as the next plugin run would): the same, nothing corrupt.
        let again = Ipam::open(&root.join("ipam"), "podnet").expect("reopen");
        assert_eq!(held(&again), acked);
        std::fs::remove_file(filler).expect("free space");
        let l = again
            .allocate(&sets, "after", "eth0", &[])
            .expect("allocate after space returns");
        assert!(!acked.contains(&l[0].ip), "{} handed out twice", l[0].ip);
        acked.insert(l[0].ip);
        let mut now = held(&again);
        now.extend(again.held("after", "eth0").expect("read"));
        assert_eq!(now, acked);
    });
}
