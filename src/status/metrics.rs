//! [`Metrics`]: the `/metrics` exposition, with prometheus-client (OpenMetrics text, which
//! Prometheus scrapes natively). Counters move from the mapping core's events, from
//! [`CountingHandler`] (NAT-PMP requests by opcode and result), and at scrape time from the
//! NAT-PMP server's counters and the static keeper's; the live-mappings gauge is read from the
//! lease table at each scrape.
//!
//! Every name starts with `double_natpmp_`.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::mapping::events::{MappingEvent, Origin};
use crate::mapping::store::lease::LeaseInfo;
use crate::natpmp::handler::{MapHandler, MapReply};
use crate::natpmp::server::ServerStats;
use crate::reachability::outcome::{ExitAddress, Outcome};
use crate::static_keeper::KeeperStats;
use double_natpmp_codec::natpmp::wire::MapRequest;
use double_natpmp_codec::protocol::Protocol;

/// The exposition's content type.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Every metric the daemon exports; see the module docs.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    mappings: Family<Labels2, Gauge>,
    requests: Family<Labels2, Counter>,
    datagrams: Family<Labels1, Counter>,
    created: Family<Labels2, Counter>,
    removed: Family<Labels1, Counter>,
    router_latency: Histogram,
    router_errors: Family<Labels1, Counter>,
    upstream_latency: Histogram,
    upstream_errors: Family<Labels1, Counter>,
    keeper: Family<Labels1, Counter>,
    reconcile_runs: Family<Labels1, Counter>,
    reconcile_changes: Family<Labels1, Counter>,
    epoch_resets: Counter,
    port_changes: Counter,
    webhook: Family<Labels1, Counter>,
    webhook_dropped: Counter,
    events_missed: Counter,
    reachable: Gauge,
    exit_matches: Gauge,
    outbound_paired: Gauge,
    reachability_checked: Gauge,
}

/// Latency buckets: 1 ms doubling to about 8 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// `"0"` … `"5"`, else `"other"`: a result code or an opcode as a label value.
fn number_label(code: u16) -> &'static str {
    const CODES: [&str; 6] = ["0", "1", "2", "3", "4", "5"];
    CODES.get(usize::from(code)).copied().unwrap_or("other")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("double_natpmp");
        let m = Metrics {
            registry: Registry::default(),
            mappings: Family::default(),
            requests: Family::default(),
            datagrams: Family::default(),
            created: Family::default(),
            removed: Family::default(),
            router_latency: latency(),
            router_errors: Family::default(),
            upstream_latency: latency(),
            upstream_errors: Family::default(),
            keeper: Family::default(),
            reconcile_runs: Family::default(),
            reconcile_changes: Family::default(),
            epoch_resets: Counter::default(),
            port_changes: Counter::default(),
            webhook: Family::default(),
            webhook_dropped: Counter::default(),
            events_missed: Counter::default(),
            reachable: Gauge::default(),
            exit_matches: Gauge::default(),
            outbound_paired: Gauge::default(),
            reachability_checked: Gauge::default(),
        };
        let r = &mut registry;
        // -1 until a check tells (REACHABILITY_CHECK).
        for g in [&m.reachable, &m.exit_matches, &m.outbound_paired] {
            g.set(-1);
        }
        r.register(
            "reachable",
            "The reachability check: 1 when a third party reached the test mapping's external port through both NAT layers, 0 when it did not, -1 when not tested",
            m.reachable.clone(),
        );
        r.register(
            "reachability_exit_address_matches",
            "The reachability check: 1 when the internet saw the test mapping's traffic come from the address the gateway's NAT-PMP reports, 0 when from another, -1 when not known",
            m.exit_matches.clone(),
        );
        r.register(
            "reachability_outbound_paired",
            "The reachability check: 1 when outbound UDP left from the external port, 0 when from another port, -1 when not known",
            m.outbound_paired.clone(),
        );
        r.register_with_unit(
            "reachability_last_check_timestamp",
            "When the last reachability check ended, seconds since 1970 (0: none yet)",
            Unit::Seconds,
            m.reachability_checked.clone(),
        );
        r.register(
            "mappings",
            "Live mappings by protocol and origin",
            m.mappings.clone(),
        );
        r.register(
            "requests",
            "NAT-PMP mapping requests answered, by opcode (1 udp, 2 tcp) and result code",
            m.requests.clone(),
        );
        r.register(
            "datagrams",
            "NAT-PMP datagrams by what became of them",
            m.datagrams.clone(),
        );
        r.register(
            "mappings_created",
            "Mappings created, by protocol and origin",
            m.created.clone(),
        );
        r.register(
            "mappings_removed",
            "Mappings removed, by reason",
            m.removed.clone(),
        );
        r.register_with_unit(
            "router_command_duration",
            "RouterOS API command latency",
            Unit::Seconds,
            m.router_latency.clone(),
        );
        r.register(
            "router_command_errors",
            "Failed RouterOS API commands, by kind",
            m.router_errors.clone(),
        );
        r.register_with_unit(
            "upstream_exchange_duration",
            "NAT-PMP exchange latency with the VPN gateway",
            Unit::Seconds,
            m.upstream_latency.clone(),
        );
        r.register(
            "upstream_exchange_errors",
            "Failed NAT-PMP exchanges with the VPN gateway, by kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "keeper_renewals",
            "Renewals and re-creations of static mappings made by the daemon itself, by result",
            m.keeper.clone(),
        );
        r.register(
            "reconcile_runs",
            "Reconcile passes, by result",
            m.reconcile_runs.clone(),
        );
        r.register(
            "reconcile_changes",
            "Rules the reconciler changed: orphans removed, deleted rules made again",
            m.reconcile_changes.clone(),
        );
        r.register(
            "epoch_resets",
            "Times the VPN gateway lost its mappings and our epoch was reset",
            m.epoch_resets.clone(),
        );
        r.register(
            "external_port_changes",
            "Times the VPN gateway moved a mapping to another external port",
            m.port_changes.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries, by result",
            m.webhook.clone(),
        );
        r.register(
            "webhook_dropped",
            "Webhook events dropped because the queue was full",
            m.webhook_dropped.clone(),
        );
        r.register(
            "events_missed",
            "Mapping events the status listener lost because it fell behind",
            m.events_missed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one mapping event.
    pub(crate) fn record(&self, event: &MappingEvent) {
        match event {
            MappingEvent::Created { key, origin, .. } => {
                self.created
                    .get_or_create(&[
                        ("protocol", key.protocol.as_str()),
                        ("origin", origin.as_str()),
                    ])
                    .inc();
            }
            MappingEvent::Removed { reason, .. } => {
                self.removed
                    .get_or_create(&[("reason", reason.as_str())])
                    .inc();
            }
            MappingEvent::ExternalPortChanged { .. } => {
                self.port_changes.inc();
            }
            MappingEvent::UpstreamLost { .. } => {
                self.epoch_resets.inc();
            }
            MappingEvent::RouterCommand { took, error, .. } => {
                self.router_latency.observe(took.as_secs_f64());
                if let Some(kind) = error {
                    self.router_errors.get_or_create(&[("kind", kind)]).inc();
                }
            }
            MappingEvent::UpstreamExchange { took, error, .. } => {
                self.upstream_latency.observe(took.as_secs_f64());
                if let Some(kind) = error {
                    self.upstream_errors.get_or_create(&[("kind", kind)]).inc();
                }
            }
            MappingEvent::Reconciled {
                orphans_removed,
                recreated,
                ..
            } => {
                self.reconcile_runs.get_or_create(&[("result", "ok")]).inc();
                let changes = &self.reconcile_changes;
                changes
                    .get_or_create(&[("change", "orphan_removed")])
                    .inc_by(*orphans_removed as u64);
                changes
                    .get_or_create(&[("change", "recreated")])
                    .inc_by(*recreated as u64);
            }
            MappingEvent::ReconcileFailed => {
                self.reconcile_runs
                    .get_or_create(&[("result", "failed")])
                    .inc();
            }
            MappingEvent::Renewed { .. }
            | MappingEvent::UpstreamHealed { .. }
            | MappingEvent::Failed { .. } => {}
        }
    }

    /// Counts one answered NAT-PMP mapping request.
    pub(crate) fn request(&self, protocol: Protocol, result: u16) {
        let opcode = number_label(u16::from(protocol.opcode()));
        self.requests
            .get_or_create(&[("opcode", opcode), ("result", number_label(result))])
            .inc();
    }

    /// Counts one webhook delivery (`ok`, or `failed` after every retry).
    pub(crate) fn webhook(&self, delivered: bool) {
        let result = if delivered { "ok" } else { "failed" };
        self.webhook.get_or_create(&[("result", result)]).inc();
    }

    /// Counts one event dropped because the webhook queue was full.
    pub(crate) fn webhook_dropped(&self) {
        self.webhook_dropped.inc();
    }

    /// Counts events the listener lost.
    pub(crate) fn events_missed(&self, n: u64) {
        self.events_missed.inc_by(n);
    }

    /// The exposition now: the gauges and the server's and keeper's counters are read first.
    pub(crate) fn encode(
        &self,
        leases: &[LeaseInfo],
        server: Option<&ServerStats>,
        keeper: &KeeperStats,
        reachability: Option<&Outcome>,
    ) -> Result<String, std::fmt::Error> {
        if let Some(o) = reachability {
            let tri = |v: Option<bool>| v.map_or(-1, i64::from);
            self.reachable.set(tri(o.reachable()));
            self.exit_matches
                .set(tri(o.exit_address.map(|e| e == ExitAddress::Matches)));
            self.outbound_paired.set(tri(o.outbound_paired));
            self.reachability_checked
                .set(i64::try_from(o.checked_at).unwrap_or(i64::MAX));
        }
        for protocol in Protocol::ALL {
            for origin in [Origin::NatPmp, Origin::Api, Origin::Static] {
                let n = leases
                    .iter()
                    .filter(|l| l.key.protocol == protocol && l.lease.origin == origin)
                    .count();
                self.mappings
                    .get_or_create(&[("protocol", protocol.as_str()), ("origin", origin.as_str())])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Some(s) = server {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            for (outcome, value) in [
                ("received", load(&s.received)),
                ("replied", load(&s.replied)),
                ("dropped_not_allowed", load(&s.dropped_not_allowed)),
                ("dropped_blocked", load(&s.dropped_blocked)),
                ("dropped_busy", load(&s.dropped_busy)),
                ("dropped_rate_limited", load(&s.dropped_rate_limited)),
                ("dropped_invalid", load(&s.dropped_invalid)),
                ("coalesced", load(&s.coalesced)),
                ("unsupported_version", load(&s.unsupported_version)),
            ] {
                self.datagrams
                    .get_or_create(&[("outcome", outcome)])
                    .inner()
                    .store(value, Ordering::Relaxed);
            }
        }
        for (result, value) in keeper.counts() {
            self.keeper
                .get_or_create(&[("result", result)])
                .inner()
                .store(value, Ordering::Relaxed);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The orchestrator seen through the NAT-PMP server, counting each answered mapping request by
/// opcode and result code.
pub(crate) struct CountingHandler<H> {
    inner: H,
    metrics: Arc<Metrics>,
}

impl<H> CountingHandler<H> {
    /// Counts what `inner` answers into `metrics`.
    pub(crate) fn new(inner: H, metrics: Arc<Metrics>) -> CountingHandler<H> {
        CountingHandler { inner, metrics }
    }
}

impl<H: MapHandler> MapHandler for CountingHandler<H> {
    fn handle_map(
        &self,
        client: Ipv4Addr,
        request: MapRequest,
    ) -> impl Future<Output = MapReply> + Send {
        let answer = self.inner.handle_map(client, request);
        let metrics = Arc::clone(&self.metrics);
        async move {
            let reply = answer.await;
            metrics.request(request.protocol, reply.result as u16);
            reply
        }
    }

    fn answer_now(&self, client: Ipv4Addr, request: MapRequest) -> Option<MapReply> {
        let reply = self.inner.answer_now(client, request)?;
        self.metrics.request(request.protocol, reply.result as u16);
        Some(reply)
    }
}
