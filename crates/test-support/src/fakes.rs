//! In-process fakes of the router and the VPN gateway for the mapping core's tests: a router
//! that holds NAT rules, counts commands, reuses and renumbers ids and injects faults, and a
//! ProtonVPN-like gateway that counts exchanges and injects faults. Time is tokio's clock, so a
//! test with a paused clock runs timeouts and lifetimes instantly and exactly.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use double_natpmp::{AddressReply, MapGrant, Upstream, UpstreamError, UpstreamMap};
use double_natpmp::{
    DstNatRule, InterfaceInfo, ListMember, NatRule, Router, RouterAddress, RouterError, RuleId,
    ServiceInfo, SrcNatRule,
};
use double_natpmp::{MapHandler, MapReply};
use double_natpmp::{MappingConfig, Orchestrator};
use double_natpmp_codec::natpmp::epoch::Epoch;
use double_natpmp_codec::natpmp::wire::{MapRequest, Protocol, ResultCode};
use tokio::time::Instant;

pub const IFACE: &str = "wg-proton";

pub fn lan(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 88, host)
}

pub fn gw() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5351)
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Fake router

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddFault {
    /// `!trap` with a generic message: nothing added.
    Trap,
    /// `not enough permissions`: nothing added.
    PermissionDenied,
    /// The rule is added, then the connection breaks before the answer.
    ExecuteThenCut,
}

/// A fault every router command meets while it is set (the fault matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterFault {
    /// The connection breaks before the command reaches the router: nothing happens.
    CutBefore,
    /// The command is carried out, then the connection breaks: its reply is lost.
    CutAfter,
    /// No answer at all (the orchestrator's own bound ends the wait).
    Timeout,
    /// `!trap` with a generic message: nothing happens.
    Trap,
}

#[derive(Default)]
pub struct RouterState {
    pub rules: Vec<NatRule>,
    pub adds: usize,
    pub removes: usize,
    pub lists: usize,
    pub finds: usize,
    pub sets: usize,
    /// `/interface/list/member` rows (list, interface).
    pub members: Vec<(String, String)>,
    /// The interface `/ip/route/check` names for the gateway (default: IFACE).
    pub route_via: Option<String>,
    /// `/interface/print` type of IFACE (default `wg`), and whether it is down.
    pub iface_type: Option<String>,
    pub iface_down: bool,
    pub add_fault: Option<AddFault>,
    pub fault: Option<RouterFault>,
    /// The fault meets only removes and the lookups before them (a rollback's commands).
    pub fault_only_removes: bool,
    pub remove_fails: bool,
    pub delay: Duration,
    /// src-nat adds (also counted in `adds`).
    pub srcnat_adds: usize,
    /// While set, every src-nat add fails with a `!trap` (nothing added).
    pub srcnat_add_fails: bool,
    /// The next src-nat add finds the rule it is to go before gone (an admin removed it since
    /// the listing): the rule is removed and the add answers `no such item`.
    pub anchor_vanishes: bool,
    /// `/ip/address` rows an administrator added, after the two every fake router has
    /// ([`ROUTER_ADDRESSES`]).
    pub added_addresses: Vec<(String, String)>,
}

/// The `/ip/address` rows of every fake router: the tunnel address on IFACE and the LAN's
/// 192.168.88.1/24 on `bridge` (so 192.168.88.0, .1 and .255 are not clients).
pub const ROUTER_ADDRESSES: [(&str, &str); 2] =
    [("10.2.0.2/32", IFACE), ("192.168.88.1/24", "bridge")];

/// An `/ip/address` row, as [`Router::addresses`] reads it.
pub fn router_address(address: &str, interface: &str) -> RouterAddress {
    let (ip, prefix) = address.split_once('/').expect("a.b.c.d/nn");
    RouterAddress {
        address: ip.parse().expect("an IPv4 address"),
        prefix: prefix.parse().expect("a prefix length"),
        interface: interface.to_owned(),
        disabled: false,
        invalid: false,
        dynamic: false,
    }
}

impl RouterState {
    /// The lowest id not in use: unlike RouterOS, the fake reuses ids, so an id the daemon held
    /// can name another rule later (identity must be the comment).
    pub fn free_id(&self) -> RuleId {
        let mut n = 1;
        loop {
            let id = RuleId::from(format!("*{n:X}"));
            if !self.rules.iter().any(|r| r.id.as_ref() == Some(&id)) {
                return id;
            }
            n += 1;
        }
    }
}

/// A router that holds NAT rules, counts commands and injects faults.
#[derive(Clone, Default)]
pub struct FakeRouter(pub Arc<Mutex<RouterState>>);

impl FakeRouter {
    pub fn state(&self) -> MutexGuard<'_, RouterState> {
        lock(&self.0)
    }

    pub fn commands(&self) -> usize {
        let s = self.state();
        s.adds + s.removes + s.lists + s.finds + s.sets
    }

    /// Gives every rule a new id `*1`, `*2`, … in rule order, as a reboot may.
    pub fn renumber(&self) {
        let mut s = self.state();
        for (i, r) in s.rules.iter_mut().enumerate() {
            r.id = Some(RuleId::from(format!("*{:X}", i + 1)));
        }
    }

    pub fn rules(&self) -> Vec<NatRule> {
        self.state().rules.clone()
    }

    /// Rules on our interface whose comment is ours.
    pub fn our_rules(&self) -> Vec<NatRule> {
        self.rules()
            .into_iter()
            .filter(|r| {
                r.comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with("double-natpmp"))
            })
            .collect()
    }

    /// Puts a rule in place as an administrator would (no command counted).
    pub fn seed(
        &self,
        protocol: &str,
        dst_port: &str,
        to: Ipv4Addr,
        to_port: Option<&str>,
        comment: Option<&str>,
    ) -> RuleId {
        let mut s = self.state();
        let id = s.free_id();
        s.rules.push(NatRule {
            id: Some(id.clone()),
            chain: Some("dstnat".into()),
            action: Some("dst-nat".into()),
            protocol: Some(protocol.into()),
            in_interface: Some(IFACE.into()),
            dst_port: Some(dst_port.into()),
            to_addresses: Some(to.to_string()),
            to_ports: to_port.map(str::to_owned),
            comment: comment.map(str::to_owned),
            ..NatRule::default()
        });
        id
    }

    /// Puts a masquerade of the VPN interface at the end of the srcnat chain, as an
    /// administrator would (no command counted).
    pub fn seed_masquerade(&self, out_interface: &str) -> RuleId {
        let mut s = self.state();
        let id = s.free_id();
        s.rules.push(NatRule {
            id: Some(id.clone()),
            chain: Some("srcnat".into()),
            action: Some("masquerade".into()),
            out_interface: Some(out_interface.into()),
            comment: Some("masquerade the tunnel".into()),
            ..NatRule::default()
        });
        id
    }

    /// Our src-nat rules, in rule order.
    pub fn our_srcnat(&self) -> Vec<NatRule> {
        self.our_rules()
            .into_iter()
            .filter(|r| r.chain.as_deref() == Some("srcnat"))
            .collect()
    }

    /// The srcnat chain, in rule order.
    pub fn srcnat_chain(&self) -> Vec<NatRule> {
        self.rules()
            .into_iter()
            .filter(|r| r.chain.as_deref() == Some("srcnat"))
            .collect()
    }

    /// Deletes a rule behind the daemon's back.
    pub fn delete_by_hand(&self, id: &RuleId) {
        self.state().rules.retain(|r| r.id.as_ref() != Some(id));
    }
}

impl FakeRouter {
    /// The fault a command meets before it runs, if any.
    async fn before(&self, removing: bool) -> Result<(), RouterError> {
        let (fault, only_removes) = {
            let s = self.state();
            (s.fault, s.fault_only_removes)
        };
        let fault = fault.filter(|_| removing || !only_removes);
        match fault {
            Some(RouterFault::Timeout) => std::future::pending().await,
            Some(RouterFault::CutBefore) => Err(cut()),
            Some(RouterFault::Trap) => Err(RouterError::Trap {
                command: "/ip/firewall/nat".into(),
                message: "failure: injected".into(),
                category: None,
            }),
            _ => Ok(()),
        }
    }

    /// A listing of `chain`'s rules that pass `keep`: a plain print, or (`lookup`) a lookup
    /// before a remove, which waits the injected delay and fails while removes fail.
    async fn listed(
        &self,
        chain: &str,
        keep: impl Fn(&NatRule) -> bool,
        lookup: bool,
    ) -> Result<Vec<NatRule>, RouterError> {
        self.before(lookup).await?;
        if lookup {
            self.pause().await;
        }
        let result = {
            let mut s = self.state();
            if lookup {
                s.finds += 1;
            } else {
                s.lists += 1;
            }
            if lookup && s.remove_fails {
                Err(cut())
            } else {
                Ok(s.rules
                    .iter()
                    .filter(|r| r.chain.as_deref() == Some(chain) && keep(r))
                    .cloned()
                    .collect())
            }
        };
        self.after(lookup, result)
    }

    /// Waits the injected delay, if any.
    async fn pause(&self) {
        let delay = self.state().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The command ran: its reply is lost if the fault says so.
    fn after<T>(&self, removing: bool, result: Result<T, RouterError>) -> Result<T, RouterError> {
        let s = self.state();
        if s.fault == Some(RouterFault::CutAfter) && (removing || !s.fault_only_removes) {
            return Err(cut());
        }
        result
    }
}

fn cut() -> RouterError {
    RouterError::Connection {
        address: "127.0.0.1:8728".into(),
        message: "connection reset by peer".into(),
    }
}

impl Router for FakeRouter {
    async fn add_dstnat(&self, rule: &DstNatRule) -> Result<RuleId, RouterError> {
        self.before(false).await?;
        let result = async {
            self.pause().await;
            let mut s = self.state();
            s.adds += 1;
            match s.add_fault {
                Some(AddFault::Trap) => {
                    return Err(RouterError::Trap {
                        command: "/ip/firewall/nat/add".into(),
                        message: "failure: out of memory".into(),
                        category: None,
                    })
                }
                Some(AddFault::PermissionDenied) => {
                    return Err(RouterError::PermissionDenied {
                        command: "/ip/firewall/nat/add".into(),
                        message: "not enough permissions (9)".into(),
                        policy: Some("write"),
                    })
                }
                _ => {}
            }
            let id = s.free_id();
            s.rules.push(NatRule {
                id: Some(id.clone()),
                chain: Some("dstnat".into()),
                action: Some("dst-nat".into()),
                protocol: Some(rule.protocol.as_str().into()),
                in_interface: Some(rule.in_interface.clone()),
                dst_port: Some(rule.dst_port.to_string()),
                to_addresses: Some(rule.to_address.to_string()),
                to_ports: Some(rule.to_port.to_string()),
                comment: Some(rule.comment.clone()),
                ..NatRule::default()
            });
            if s.add_fault == Some(AddFault::ExecuteThenCut) {
                return Err(cut());
            }
            Ok(id)
        }
        .await;
        self.after(false, result)
    }

    async fn remove_rule(&self, id: &RuleId) -> Result<(), RouterError> {
        self.before(true).await?;
        let result = async {
            self.pause().await;
            let mut s = self.state();
            s.removes += 1;
            if s.remove_fails {
                return Err(cut());
            }
            let before = s.rules.len();
            s.rules.retain(|r| r.id.as_ref() != Some(id));
            if s.rules.len() == before {
                return Err(RouterError::NotFound {
                    what: id.to_string(),
                });
            }
            Ok(())
        }
        .await;
        self.after(true, result)
    }

    async fn set_comment(&self, id: &RuleId, comment: &str) -> Result<(), RouterError> {
        self.before(false).await?;
        let result = async {
            let mut s = self.state();
            s.sets += 1;
            match s.rules.iter_mut().find(|r| r.id.as_ref() == Some(id)) {
                Some(r) => {
                    r.comment = Some(comment.to_owned());
                    Ok(())
                }
                None => Err(RouterError::NotFound {
                    what: id.to_string(),
                }),
            }
        }
        .await;
        self.after(false, result)
    }

    async fn list_dstnat(&self) -> Result<Vec<NatRule>, RouterError> {
        self.listed("dstnat", |_| true, false).await
    }

    async fn find_dstnat(&self, dst_port: u16) -> Result<Vec<NatRule>, RouterError> {
        let port = dst_port.to_string();
        self.listed(
            "dstnat",
            |r| r.dst_port.as_deref() == Some(port.as_str()),
            true,
        )
        .await
    }

    async fn add_srcnat(&self, rule: &SrcNatRule) -> Result<RuleId, RouterError> {
        self.before(false).await?;
        let result = async {
            self.pause().await;
            let mut s = self.state();
            s.adds += 1;
            s.srcnat_adds += 1;
            if s.srcnat_add_fails || s.add_fault == Some(AddFault::Trap) {
                return Err(RouterError::Trap {
                    command: "/ip/firewall/nat/add".into(),
                    message: "failure: injected src-nat failure".into(),
                    category: None,
                });
            }
            if let Some(anchor) = rule.place_before.as_ref().filter(|_| s.anchor_vanishes) {
                s.anchor_vanishes = false;
                s.rules.retain(|r| r.id.as_ref() != Some(anchor));
            }
            let position = match &rule.place_before {
                Some(anchor) => match s.rules.iter().position(|r| r.id.as_ref() == Some(anchor)) {
                    Some(i) => i,
                    None => {
                        return Err(RouterError::NotFound {
                            what: format!("place-before {anchor}"),
                        })
                    }
                },
                None => s.rules.len(),
            };
            let id = s.free_id();
            s.rules.insert(
                position,
                NatRule {
                    id: Some(id.clone()),
                    chain: Some("srcnat".into()),
                    action: Some("masquerade".into()),
                    protocol: Some(rule.protocol.as_str().into()),
                    out_interface: Some(rule.out_interface.clone()),
                    src_address: Some(rule.src_address.to_string()),
                    src_port: Some(rule.src_port.to_string()),
                    to_ports: Some(rule.to_port.to_string()),
                    comment: Some(rule.comment.clone()),
                    ..NatRule::default()
                },
            );
            if s.add_fault == Some(AddFault::ExecuteThenCut) {
                return Err(cut());
            }
            Ok(id)
        }
        .await;
        self.after(false, result)
    }

    async fn list_srcnat(&self) -> Result<Vec<NatRule>, RouterError> {
        self.listed("srcnat", |_| true, false).await
    }

    async fn find_srcnat(&self, to_port: u16) -> Result<Vec<NatRule>, RouterError> {
        let port = to_port.to_string();
        self.listed(
            "srcnat",
            |r| r.to_ports.as_deref() == Some(port.as_str()),
            true,
        )
        .await
    }

    async fn list_members(&self) -> Result<Vec<ListMember>, RouterError> {
        self.before(false).await?;
        let result = async {
            Ok(self
                .state()
                .members
                .iter()
                .map(|(list, interface)| ListMember {
                    list: list.clone(),
                    interface: interface.clone(),
                })
                .collect())
        }
        .await;
        self.after(false, result)
    }

    async fn services(&self) -> Result<Vec<ServiceInfo>, RouterError> {
        self.before(false).await?;
        let result = async {
            Ok(vec![ServiceInfo {
                name: "winbox".into(),
                port: 8291,
                disabled: false,
            }])
        }
        .await;
        self.after(false, result)
    }

    async fn interface(&self, name: &str) -> Result<Option<InterfaceInfo>, RouterError> {
        self.before(false).await?;
        let result = async {
            let s = self.state();
            Ok((name == IFACE).then(|| InterfaceInfo {
                name: name.into(),
                kind: s.iface_type.clone().unwrap_or_else(|| "wg".into()),
                running: !s.iface_down,
                disabled: false,
            }))
        }
        .await;
        self.after(false, result)
    }

    async fn route_interface(&self, _dst: Ipv4Addr) -> Result<String, RouterError> {
        self.before(false).await?;
        let result = async {
            Ok(self
                .state()
                .route_via
                .clone()
                .unwrap_or_else(|| IFACE.into()))
        }
        .await;
        self.after(false, result)
    }

    async fn interface_addresses(&self, _interface: &str) -> Result<Vec<Ipv4Addr>, RouterError> {
        self.before(false).await?;
        let result = async { Ok(vec![Ipv4Addr::new(10, 2, 0, 2)]) }.await;
        self.after(false, result)
    }

    async fn addresses(&self) -> Result<Vec<RouterAddress>, RouterError> {
        self.before(false).await?;
        let result = async {
            let s = self.state();
            let added = s
                .added_addresses
                .iter()
                .map(|(a, i)| (a.as_str(), i.as_str()));
            Ok(ROUTER_ADDRESSES
                .into_iter()
                .chain(added)
                .map(|(a, i)| router_address(a, i))
                .collect())
        }
        .await;
        self.after(false, result)
    }
}

// ---------------------------------------------------------------------------------------------
// Fake VPN gateway

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpFault {
    /// Never answers.
    Silent,
    /// Carries every request out (maps and deletes), then never answers: a lost reply.
    LosesReplies,
    /// Nothing listens: ICMP port unreachable.
    Refused,
    /// Answers result 4 (per-tunnel port quota).
    Quota,
}

pub struct UpState {
    /// (protocol, internal port R) -> (external port, lifetime).
    pub maps: HashMap<(Protocol, u16), (u16, u32)>,
    /// When each mapping lapses (a gateway forgets a mapping nobody renews).
    pub lapses: HashMap<(Protocol, u16), Instant>,
    pub exchanges: usize,
    /// Lifetimes asked for in mapping (non-delete) requests.
    pub asked: Vec<u32>,
    pub fault: Option<UpFault>,
    pub next_external: u16,
    pub max_lifetime: u32,
    /// Gives a fresh external port on every renewal.
    pub move_on_renewal: bool,
    pub origin: Instant,
    pub epoch_offset: i64,
    /// How long every answer takes.
    pub delay: Duration,
    /// Gives the suggested external port when no other mapping has it (miniupnpd-like).
    pub honour_suggestion: bool,
    /// Answers 4 to mapping requests of this protocol only.
    pub quota_for: Option<Protocol>,
}

/// A ProtonVPN-like gateway: random-ish external ports, 60 s at most, counts exchanges.
#[derive(Clone)]
pub struct FakeUpstream(pub Arc<Mutex<UpState>>);

impl FakeUpstream {
    pub fn new() -> FakeUpstream {
        FakeUpstream(Arc::new(Mutex::new(UpState {
            maps: HashMap::new(),
            lapses: HashMap::new(),
            exchanges: 0,
            asked: Vec::new(),
            fault: None,
            next_external: 50000,
            max_lifetime: 60,
            move_on_renewal: false,
            origin: Instant::now(),
            epoch_offset: 100_000,
            delay: Duration::ZERO,
            honour_suggestion: false,
            quota_for: None,
        })))
    }

    pub fn state(&self) -> MutexGuard<'_, UpState> {
        lock(&self.0)
    }

    pub fn exchanges(&self) -> usize {
        self.state().exchanges
    }

    /// The gateway restarts: every mapping is lost and its epoch starts again at 0.
    pub fn lose_state(&self) {
        let mut s = self.state();
        s.maps.clear();
        let elapsed = i64::try_from(s.origin.elapsed().as_secs()).unwrap_or(0);
        s.epoch_offset = -elapsed;
    }

    /// The mappings the gateway forwards now (lapsed ones are gone, as on a real gateway).
    pub fn mapped(&self) -> HashMap<(Protocol, u16), (u16, u32)> {
        let s = self.state();
        let now = Instant::now();
        s.maps
            .iter()
            .filter(|(k, _)| s.lapses.get(*k).is_none_or(|at| *at > now))
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

impl Upstream for FakeUpstream {
    async fn external_address(&self) -> Result<AddressReply, UpstreamError> {
        Ok(AddressReply {
            epoch: 0,
            address: Ipv4Addr::new(203, 0, 113, 7),
        })
    }

    async fn map(&self, ask: UpstreamMap) -> Result<MapGrant, UpstreamError> {
        let UpstreamMap {
            protocol,
            internal_port,
            suggested_external_port: suggested,
            lifetime,
        } = ask;
        let (fault, delay, quota_for) = {
            let mut s = self.state();
            s.exchanges += 1;
            (s.fault, s.delay, s.quota_for)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if lifetime > 0 && quota_for == Some(protocol) {
            return Err(UpstreamError::Rejected {
                gateway: gw(),
                result: ResultCode::OutOfResources,
            });
        }
        match fault {
            Some(UpFault::Silent) => std::future::pending::<()>().await,
            Some(UpFault::LosesReplies) => {
                {
                    let mut s = self.state();
                    if lifetime == 0 {
                        s.maps.remove(&(protocol, internal_port));
                    } else {
                        s.next_external += 1;
                        let external = s.next_external;
                        let granted = lifetime.min(s.max_lifetime);
                        s.maps
                            .insert((protocol, internal_port), (external, granted));
                        s.lapses.insert(
                            (protocol, internal_port),
                            Instant::now() + Duration::from_secs(u64::from(granted)),
                        );
                    }
                }
                std::future::pending::<()>().await
            }
            Some(UpFault::Refused) => return Err(UpstreamError::Refused { gateway: gw() }),
            Some(UpFault::Quota) => {
                return Err(UpstreamError::Rejected {
                    gateway: gw(),
                    result: ResultCode::OutOfResources,
                })
            }
            None => {}
        }
        let mut s = self.state();
        let elapsed = i64::try_from(s.origin.elapsed().as_secs()).unwrap_or(0);
        let epoch = u32::try_from(s.epoch_offset + elapsed).unwrap_or(0);
        if lifetime == 0 {
            s.maps.remove(&(protocol, internal_port));
            return Ok(MapGrant {
                epoch,
                internal_port,
                external_port: 0,
                lifetime: 0,
            });
        }
        s.asked.push(lifetime);
        let granted = lifetime.min(s.max_lifetime);
        let now = Instant::now();
        let alive = s
            .lapses
            .get(&(protocol, internal_port))
            .is_none_or(|at| *at > now);
        let existing = s
            .maps
            .get(&(protocol, internal_port))
            .map(|m| m.0)
            .filter(|_| alive);
        let taken = |s: &UpState, port: u16| {
            s.maps
                .iter()
                .any(|(k, v)| v.0 == port && *k != (protocol, internal_port) && k.0 == protocol)
        };
        let external = match existing {
            Some(e) if !s.move_on_renewal => e,
            _ if s.honour_suggestion && suggested != 0 && !taken(&s, suggested) => suggested,
            _ => {
                s.next_external += 1;
                s.next_external
            }
        };
        s.maps
            .insert((protocol, internal_port), (external, granted));
        s.lapses.insert(
            (protocol, internal_port),
            now + Duration::from_secs(u64::from(granted)),
        );
        Ok(MapGrant {
            epoch,
            internal_port,
            external_port: external,
            lifetime: granted,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub type Orch = Orchestrator<FakeRouter, FakeUpstream>;

pub fn config() -> MappingConfig {
    MappingConfig {
        in_interface: IFACE.into(),
        vpn_gateway: Some(Ipv4Addr::new(10, 2, 0, 1)),
        router_ports: 40000..=40999,
        upstream_timeout: Duration::from_secs(5),
        router_timeout: Duration::from_secs(5),
        ..MappingConfig::default()
    }
}

pub async fn start_with(
    router: &FakeRouter,
    upstream: &FakeUpstream,
    config: MappingConfig,
) -> Orch {
    match Orchestrator::start(
        router.clone(),
        upstream.clone(),
        Arc::new(Epoch::new()),
        config,
    )
    .await
    {
        Ok(o) => o,
        Err(e) => panic!("orchestrator did not start: {e}"),
    }
}

pub async fn start(router: &FakeRouter, upstream: &FakeUpstream) -> Orch {
    start_with(router, upstream, config()).await
}

/// A fresh router and gateway, and an orchestrator started against them with [`config`].
pub async fn fresh() -> (FakeRouter, FakeUpstream, Orch) {
    let (router, upstream) = (FakeRouter::default(), FakeUpstream::new());
    let orch = start(&router, &upstream).await;
    (router, upstream, orch)
}

/// LAN host 10 asks for `internal` (no suggested port) for `lifetime`; the answer is a success.
pub async fn ask_ok(orch: &Orch, protocol: Protocol, internal: u16, lifetime: u32) -> MapReply {
    success(
        orch.handle_map(lan(10), map(protocol, internal, 0, lifetime))
            .await,
    )
}

pub fn map(protocol: Protocol, internal: u16, suggested: u16, lifetime: u32) -> MapRequest {
    MapRequest {
        protocol,
        internal_port: internal,
        suggested_external_port: suggested,
        lifetime,
    }
}

pub fn delete(protocol: Protocol, internal: u16) -> MapRequest {
    map(protocol, internal, 0, 0)
}

pub fn success(reply: MapReply) -> MapReply {
    assert_eq!(reply.result, ResultCode::Success, "{reply:?}");
    reply
}

pub fn deleted() -> MapReply {
    MapReply {
        result: ResultCode::Success,
        external_port: 0,
        lifetime: 0,
    }
}
