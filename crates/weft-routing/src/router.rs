//! The thin half: read what the kernel has, diff it against `desired`, change only the
//! difference. Routes are recognised as ours by their protocol number, so no other route
//! of the node is ever touched.

use std::fmt;

use weft_netlink::{
    Family, FdbEntry, Handle, IpNet, Link, Neighbour, Route, RouteKind, RT_TABLE_MAIN,
};

use crate::backend::Backend;
use crate::desired::{desired, Desired, RouteDev, Waiting};
use crate::diff::{self, Action, Kind, Step, Wanted};
use crate::error::{Error, Refusal, Result};
use crate::node::NodeInfo;
use crate::vxlan::{self, VxlanDevice};

/// The route protocol (rtm_protocol) that marks weft's routes: 0x57, 'W'. iproute2 shows it
/// as `proto 87`; no well-known routing daemon uses it.
pub const RTPROT_WEFT: u8 = 0x57;

/// How many entries of one kind a sync added, rewrote and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

impl Delta {
    pub fn total(&self) -> usize {
        self.added + self.updated + self.removed
    }

    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Add => self.added += 1,
            Kind::Update => self.updated += 1,
            Kind::Remove => self.removed += 1,
        }
    }
}

/// What a sync did, and which nodes it did not route and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub routes: Delta,
    pub neighbours: Delta,
    pub fdb: Delta,
    /// Nodes whose entries were refused (conflicting or unroutable input).
    pub refused: Vec<Refusal>,
    /// Nodes not routable yet (no podCIDR, no VTEP MAC).
    pub waiting: Vec<Waiting>,
}

impl Changes {
    /// Kernel changes made; 0 when the kernel already matched.
    pub fn total(&self) -> usize {
        self.routes.total() + self.neighbours.total() + self.fdb.total()
    }
}

/// "routes +2 ~0 -1, neighbours +2 ~0 -0, fdb +2 ~0 -0, 1 refused, 0 waiting", for logs.
impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, d) in [
            ("routes", self.routes),
            ("neighbours", self.neighbours),
            ("fdb", self.fdb),
        ] {
            write!(f, "{name} +{} ~{} -{}, ", d.added, d.updated, d.removed)?;
        }
        write!(
            f,
            "{} refused, {} waiting",
            self.refused.len(),
            self.waiting.len()
        )
    }
}

pub struct Router {
    handle: Handle,
    backend: Backend,
    me: NodeInfo,
    underlay_ifname: String,
    device: Option<VxlanDevice>,
}

impl Router {
    /// A router for the node `me`, whose underlay interface is `underlay_ifname`, over a
    /// handle on the node's namespace. For vxlan this makes (or adopts) the overlay device
    /// at once, so `vtep_mac()` can be published before the first sync. Overlay devices of
    /// another backend or VNI (`weft.<n>`, kind vxlan) are removed.
    pub fn new(
        handle: Handle,
        backend: Backend,
        me: NodeInfo,
        underlay_ifname: &str,
    ) -> Result<Router> {
        let mut router = Router {
            handle,
            backend,
            me,
            underlay_ifname: underlay_ifname.to_string(),
            device: None,
        };
        let (underlay, _) = router.underlay()?;
        // A node switched from vxlan to host-gw (or to another VNI) keeps no old overlay.
        let keep = router.backend.device_name();
        vxlan::remove_stale(&mut router.handle, keep.as_deref())?;
        router.ensure_device(&underlay)?;
        Ok(router)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// MAC of this node's VXLAN device, for the `weft.dev/vtep-mac` annotation; None for
    /// host-gw.
    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        self.device.as_ref().map(|d| d.mac)
    }

    /// The underlay link and its addresses; this node's underlay IP must be one of them.
    fn underlay(&mut self) -> Result<(Link, Vec<IpNet>)> {
        let name = self.underlay_ifname.clone();
        let link = self
            .handle
            .link_by_name(&name)
            .map_err(|e| Error::netlink(format!("look up underlay interface {name}"), e))?
            .ok_or_else(|| {
                Error::config(
                    &self.me.name,
                    format!("underlay interface {name} not found"),
                )
            })?;
        let nets: Vec<IpNet> = self
            .handle
            .addrs(Some(link.index))
            .map_err(|e| Error::netlink(format!("list addresses of {name}"), e))?
            .into_iter()
            .map(|a| a.net)
            .collect();
        if !nets.iter().any(|n| n.addr() == self.me.underlay_ip) {
            return Err(Error::config(
                &self.me.name,
                format!(
                    "underlay IP {} is not an address of {name}",
                    self.me.underlay_ip
                ),
            ));
        }
        Ok((link, nets))
    }

    /// Make sure the overlay device is there and right (also after someone deleted it).
    fn ensure_device(&mut self, underlay: &Link) -> Result<()> {
        let Backend::Vxlan { vni, port } = self.backend else {
            return Ok(());
        };
        let own_cidr = self.me.pod_cidr.ok_or_else(|| {
            Error::config(
                &self.me.name,
                "no podCIDR yet; the vxlan device needs this node's subnet",
            )
        })?;
        let name = self.device_name();
        let want = vxlan::Want {
            node: &self.me.name,
            name: &name,
            vni,
            port,
            local: self.me.underlay_ip,
            underlay,
            own_cidr,
        };
        self.device = Some(vxlan::ensure(&mut self.handle, &want)?);
        Ok(())
    }

    fn device_name(&self) -> String {
        self.backend.device_name().unwrap_or_default()
    }

    /// What this node should have for `nodes`, after the checks that need the kernel (the
    /// host-gw segment check): the sync's plan, usable for a dry run.
    pub fn desired(&mut self, nodes: &[NodeInfo]) -> Result<Desired> {
        let (_, nets) = self.underlay()?;
        Ok(self.desired_on(nodes, &nets))
    }

    fn desired_on(&self, nodes: &[NodeInfo], underlay_nets: &[IpNet]) -> Desired {
        let mut me = self.me.clone();
        if me.vtep_mac.is_none() {
            me.vtep_mac = self.vtep_mac();
        }
        let mut d = desired(self.backend, &me, nodes);
        d.refuse_off_segment(underlay_nets, &self.underlay_ifname);
        d
    }

    /// Bring the kernel to the desired state for `nodes`, changing only what differs.
    /// Entries that fail are reported together in `Error::Partial` after all others were
    /// applied, so one bad entry does not hold up the rest of the cluster.
    pub fn sync(&mut self, nodes: &[NodeInfo]) -> Result<Changes> {
        let (underlay, nets) = self.underlay()?;
        self.ensure_device(&underlay)?;
        let d = self.desired_on(nodes, &nets);
        let want_routes = self.resolve_routes(&d, underlay.index);
        let (want_neigh, want_fdb) = self.resolve_overlay(&d);
        let owned = self.owned_routes()?;
        let (neigh, fdb) = self.overlay_entries()?;

        let mut actions = diff::routes(&want_routes, &owned);
        actions.extend(diff::neighbours(&want_neigh, &neigh));
        actions.extend(diff::fdb(&want_fdb, &fdb));
        let mut changes = Changes {
            refused: d.refused,
            waiting: d.waiting,
            ..Changes::default()
        };
        let failures = self.apply(order(actions), &mut changes);
        if failures.is_empty() {
            Ok(changes)
        } else {
            Err(Error::Partial {
                applied: Box::new(changes),
                failures,
            })
        }
    }

    /// Remove everything this router made: its routes and, for vxlan, the device (with its
    /// neighbours and FDB entries).
    pub fn teardown(mut self) -> Result<Changes> {
        let mut changes = Changes::default();
        let owned = self.owned_routes()?;
        let (neigh, fdb) = self.overlay_entries()?;
        let stale: Vec<Action> = diff::routes(&[], &owned);
        let failures = self.apply(stale, &mut changes);
        if let Some(first) = failures.into_iter().next() {
            return Err(first);
        }
        if self.backend.device_name().is_some() {
            let name = self.device_name();
            // The kernel drops the device's neighbours and FDB entries with it.
            changes.neighbours.removed += neigh.iter().filter(|n| n.permanent).count();
            changes.fdb.removed += fdb.len();
            self.handle
                .delete_link_by_name(&name)
                .map_err(|e| Error::netlink(format!("delete vxlan device {name}"), e))?;
        }
        Ok(changes)
    }

    fn resolve_routes(&self, d: &Desired, underlay: u32) -> Vec<Wanted<Route>> {
        d.routes
            .iter()
            .filter_map(|r| {
                let route = Route::new(r.dst).via(r.via).protocol(RTPROT_WEFT);
                let route = match r.dev {
                    RouteDev::Underlay => route.dev(underlay),
                    RouteDev::Vxlan => route.dev(self.device.as_ref()?.index).onlink(),
                };
                Some(Wanted {
                    node: r.node.clone(),
                    object: r.describe(&self.backend),
                    item: route,
                })
            })
            .collect()
    }

    fn resolve_overlay(&self, d: &Desired) -> (Vec<Wanted<Neighbour>>, Vec<Wanted<FdbEntry>>) {
        let Some(dev) = &self.device else {
            return (Vec::new(), Vec::new());
        };
        let neigh = d
            .neighbours
            .iter()
            .map(|n| Wanted {
                node: n.node.clone(),
                object: n.describe(),
                item: Neighbour {
                    index: dev.index,
                    ip: n.ip,
                    mac: n.mac,
                    permanent: true,
                },
            })
            .collect();
        let fdb = d
            .fdb
            .iter()
            .map(|f| Wanted {
                node: f.node.clone(),
                object: f.describe(),
                item: FdbEntry {
                    index: dev.index,
                    mac: f.mac,
                    dst: Some(f.dst),
                    permanent: true,
                },
            })
            .collect();
        (neigh, fdb)
    }

    /// Routes carrying weft's protocol mark in the main table.
    fn owned_routes(&mut self) -> Result<Vec<Route>> {
        Ok(self
            .handle
            .routes(Family::All)
            .map_err(|e| Error::netlink("list routes", e))?
            .into_iter()
            .filter(|r| {
                r.protocol == RTPROT_WEFT
                    && r.table == RT_TABLE_MAIN
                    && r.kind == RouteKind::Unicast
            })
            .collect())
    }

    /// Neighbours and VTEP-pointing FDB entries on the overlay device (none for host-gw).
    fn overlay_entries(&mut self) -> Result<(Vec<Neighbour>, Vec<FdbEntry>)> {
        let Some(index) = self.device.as_ref().map(|d| d.index) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let name = self.device_name();
        let neigh = self
            .handle
            .neighbours(Some(index))
            .map_err(|e| Error::netlink(format!("list neighbours on {name}"), e))?;
        let fdb = self
            .handle
            .fdb(Some(index))
            .map_err(|e| Error::netlink(format!("list fdb entries of {name}"), e))?
            .into_iter()
            .filter(|e| e.dst.is_some())
            .collect();
        Ok((neigh, fdb))
    }

    fn apply(&mut self, actions: Vec<Action>, changes: &mut Changes) -> Vec<Error> {
        let mut failures = Vec::new();
        for a in actions {
            let h = &mut self.handle;
            let (result, delta) = match &a.step {
                Step::AddRoute(r) => (h.add_route(r), &mut changes.routes),
                Step::ReplaceRoute(r) => (h.replace_route(r), &mut changes.routes),
                Step::DelRoute(r) => (h.del_route(r), &mut changes.routes),
                Step::SetNeighbour(n) => (h.replace_neighbour(n), &mut changes.neighbours),
                Step::DelNeighbour(n) => (h.del_neighbour(n), &mut changes.neighbours),
                Step::SetFdb(e) => (h.replace_fdb(e), &mut changes.fdb),
                Step::DelFdb(e) => (h.del_fdb(e), &mut changes.fdb),
            };
            match result {
                Ok(()) => delta.count(a.kind),
                // Gone already (a device deleted under us takes its entries along).
                Err(e) if a.kind == Kind::Remove && e.is_not_found() => {}
                Err(e) => failures.push(failure(a, e)),
            }
        }
        failures
    }
}

fn failure(a: Action, source: weft_netlink::Error) -> Error {
    let Some(node) = a.node else {
        return Error::netlink(format!("withdraw stale {}", a.object), source);
    };
    if matches!(a.step, Step::AddRoute(_)) && source.is_exists() {
        return Error::Blocked {
            node,
            object: a.object,
            reason: "a route to the same destination that weft did not make is in the way; \
                     remove it (weft only manages routes with protocol 0x57)"
                .to_string(),
        };
    }
    Error::Node {
        node,
        object: a.object,
        source,
    }
}

/// Removals first (routes, then neighbours, then FDB), then additions in the reverse order,
/// so a route never points at a neighbour or FDB entry that is not there yet.
fn order(actions: Vec<Action>) -> Vec<Action> {
    let rank = |a: &Action| match a.step {
        Step::DelRoute(_) => 0,
        Step::DelNeighbour(_) => 1,
        Step::DelFdb(_) => 2,
        Step::SetFdb(_) => 3,
        Step::SetNeighbour(_) => 4,
        Step::AddRoute(_) | Step::ReplaceRoute(_) => 5,
    };
    let mut actions = actions;
    // Stable: within a rank, the order of the node list is kept.
    actions.sort_by_key(rank);
    actions
}
