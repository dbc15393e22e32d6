//! [`History`]: what the status page and the API know beyond the lease table, learned from the
//! mapping core's events: when each mapping was created and last renewed, the last events, and
//! when the router and the gateway last answered (or failed to).
//!
//! The lease table is the only owner of leases; this keeps only times and event records, keyed
//! by the mapping's key, and forgets a key when its mapping is removed.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::mapping::events::{MappingEvent, Origin};
use crate::mapping::store::lease::MappingKey;

/// How many events the page's list keeps.
pub(crate) const RECENT_EVENTS: usize = 50;

/// Seconds since 1970 (the JSON's time format).
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One event as the page, the API and the webhook show it. Fields that do not apply are left
/// out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct EventRecord {
    /// `created`, `external_port_changed`, `removed`, `upstream_lost`, `upstream_healed`,
    /// `failed`, `reconciled`, `reconcile_failed`, `reachability` (a new verdict of the
    /// reachability check).
    pub event: &'static str,
    /// When it happened, seconds since 1970.
    pub time: u64,
    /// The LAN client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Ipv4Addr>,
    /// `tcp` or `udp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// The client's own port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<u16>,
    /// The router port R.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_port: Option<u16>,
    /// The VPN's external address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_address: Option<Ipv4Addr>,
    /// The external port E (the new one for `external_port_changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_port: Option<u16>,
    /// The external port before (`external_port_changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_external_port: Option<u16>,
    /// The lifetime granted, seconds (`created`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u32>,
    /// `natpmp`, `api` or `static`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Why it was removed: `deleted`, `expired` or `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The NAT-PMP result code (`failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<u16>,
    /// A sentence for people.
    pub message: String,
}

impl EventRecord {
    /// Whether the webhook receives this kind of event. The reachability check's own test
    /// mapping, made and removed at each check, stays on the page: the webhook gets the check's
    /// verdict (`reachability`) instead.
    pub(crate) fn for_webhook(&self) -> bool {
        matches!(
            self.event,
            "created"
                | "external_port_changed"
                | "removed"
                | "upstream_lost"
                | "upstream_healed"
                | "reachability"
        ) && self.origin != Some("selftest")
    }
}

/// When a mapping was made and last renewed (wall clock, in Unix seconds: what the page and
/// the API show, in a third of the room of two `SystemTime`s), and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    /// Created.
    pub created: u64,
    /// Last renewed (the creation counts).
    pub renewed: u64,
    /// Where it came from.
    pub origin: Origin,
}

/// The last outcome seen from one far side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Contact {
    /// The last time it answered.
    pub last_ok: Option<SystemTime>,
    /// The last failure, when it is newer than the last answer: when, and its kind.
    pub failing: Option<(SystemTime, &'static str)>,
}

impl Contact {
    fn ok(&mut self, at: SystemTime) {
        self.last_ok = Some(at);
        self.failing = None;
    }

    fn failed(&mut self, at: SystemTime, kind: &'static str) {
        self.failing = Some((at, kind));
    }
}

#[derive(Debug, Default)]
struct Inner {
    times: HashMap<MappingKey, Times>,
    recent: VecDeque<EventRecord>,
    router: Contact,
    gateway: Contact,
}

/// See the module docs. Shared between the event listener (writes) and the HTTP handlers.
#[derive(Debug, Default)]
pub(crate) struct History {
    inner: Mutex<Inner>,
}

/// Failure kinds that are an answer from the far side (it refused), not a failure to reach it.
fn is_an_answer(kind: &str) -> bool {
    matches!(
        kind,
        "router_not_found"
            | "router_permission"
            | "router_invalid_value"
            | "router_trap"
            | "upstream_refused"
            | "upstream_rejected"
            | "upstream_unknown_result"
            | "upstream_unusable"
    )
}

impl History {
    /// An empty history; `started` counts as the router's last answer (the daemon only starts
    /// serving once the router answered and the start reconcile ran). The gateway has none
    /// until its first exchange is seen.
    pub(crate) fn new(started: SystemTime) -> History {
        let history = History::default();
        history.lock().router.ok(started);
        history
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns from one event seen at `at`; returns its record when the page lists it.
    /// `external_address` is the VPN's address as now known, for the record.
    pub(crate) fn observe(
        &self,
        event: &MappingEvent,
        at: SystemTime,
        external_address: Option<Ipv4Addr>,
    ) -> Option<EventRecord> {
        let mut inner = self.lock();
        let time = unix_seconds(at);
        let keyed = |event: &'static str, key: &MappingKey, message: String| EventRecord {
            event,
            time,
            client: Some(key.client),
            protocol: Some(key.protocol.as_str()),
            internal_port: Some(key.internal_port),
            external_address,
            message,
            ..EventRecord::default()
        };
        let record = match event {
            MappingEvent::Created {
                key,
                router_port,
                external_port,
                lifetime,
                origin,
            } => {
                inner.times.insert(
                    *key,
                    Times {
                        created: time,
                        renewed: time,
                        origin: *origin,
                    },
                );
                Some(EventRecord {
                    router_port: Some(*router_port),
                    external_port: Some(*external_port),
                    lifetime: Some(*lifetime),
                    origin: Some(origin.as_str()),
                    ..keyed(
                        "created",
                        key,
                        format!("{key} mapped to external port {external_port} (router port {router_port}, {origin})"),
                    )
                })
            }
            MappingEvent::Renewed { key, .. } => {
                if let Some(t) = inner.times.get_mut(key) {
                    t.renewed = time;
                }
                None
            }
            MappingEvent::ExternalPortChanged { key, old, new } => {
                let origin = inner.times.get(key).map(|t| t.origin.as_str());
                Some(EventRecord {
                    external_port: Some(*new),
                    old_external_port: Some(*old),
                    origin,
                    ..keyed(
                        "external_port_changed",
                        key,
                        format!(
                            "{key}: the VPN gateway moved it from external port {old} to {new}"
                        ),
                    )
                })
            }
            MappingEvent::Removed {
                key,
                router_port,
                external_port,
                reason,
            } => {
                let origin = inner.times.remove(key).map(|t| t.origin.as_str());
                Some(EventRecord {
                    router_port: Some(*router_port),
                    external_port: Some(*external_port),
                    origin,
                    reason: Some(reason.as_str()),
                    ..keyed(
                        "removed",
                        key,
                        format!(
                            "{key} removed ({}), external port {external_port}",
                            reason.as_str()
                        ),
                    )
                })
            }
            MappingEvent::UpstreamLost { epoch } => {
                inner.gateway.ok(at);
                Some(EventRecord {
                    event: "upstream_lost",
                    time,
                    message: format!(
                        "the VPN gateway lost its mappings (its epoch restarted at {epoch} s)"
                    ),
                    ..EventRecord::default()
                })
            }
            MappingEvent::UpstreamHealed { mappings } => Some(EventRecord {
                event: "upstream_healed",
                time,
                message: format!("{mappings} mapping(s) made again at the VPN gateway"),
                ..EventRecord::default()
            }),
            MappingEvent::RouterCommand { error, .. } => {
                match error {
                    Some(kind) if !is_an_answer(kind) => inner.router.failed(at, kind),
                    _ => inner.router.ok(at),
                }
                None
            }
            MappingEvent::UpstreamExchange { error, .. } => {
                match error {
                    Some(kind) if !is_an_answer(kind) => inner.gateway.failed(at, kind),
                    _ => inner.gateway.ok(at),
                }
                None
            }
            MappingEvent::Reconciled {
                orphans_removed,
                recreated,
                interface_ok,
            } => {
                inner.router.ok(at);
                (*orphans_removed > 0 || *recreated > 0 || !interface_ok).then(|| EventRecord {
                    event: "reconciled",
                    time,
                    message: format!(
                        "reconciled: {orphans_removed} orphaned rule(s) removed, {recreated} rule(s) made again{}",
                        if *interface_ok { "" } else { "; the VPN interface is not usable" }
                    ),
                    ..EventRecord::default()
                })
            }
            MappingEvent::ReconcileFailed => {
                inner.router.failed(at, "reconcile_failed");
                Some(EventRecord {
                    event: "reconcile_failed",
                    time,
                    message: "a reconcile pass failed: the router could not be asked".into(),
                    ..EventRecord::default()
                })
            }
            MappingEvent::Failed {
                client,
                result,
                message,
            } => Some(EventRecord {
                event: "failed",
                time,
                client: Some(*client),
                result: Some(*result),
                message: format!("request from {client} answered {result}: {message}"),
                ..EventRecord::default()
            }),
        };
        if let Some(r) = &record {
            push(&mut inner.recent, r.clone());
        }
        record
    }

    /// Lists a record that does not come from the mapping core (a new reachability verdict).
    pub(crate) fn note(&self, record: EventRecord) {
        push(&mut self.lock().recent, record);
    }

    /// Forgets the times of keys that are no longer live (after lost events).
    pub(crate) fn retain(&self, live: impl Fn(&MappingKey) -> bool) {
        self.lock().times.retain(|k, _| live(k));
    }

    /// The times of `key`, when its creation was seen.
    pub(crate) fn times(&self, key: &MappingKey) -> Option<Times> {
        self.lock().times.get(key).copied()
    }

    /// The last events, newest first.
    pub(crate) fn recent(&self) -> Vec<EventRecord> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    /// The router's and the gateway's last outcomes.
    pub(crate) fn contacts(&self) -> (Contact, Contact) {
        let inner = self.lock();
        (inner.router.clone(), inner.gateway.clone())
    }
}

/// Appends to the page's list, dropping the oldest past [`RECENT_EVENTS`].
fn push(recent: &mut VecDeque<EventRecord>, record: EventRecord) {
    if recent.len() == RECENT_EVENTS {
        recent.pop_front();
    }
    recent.push_back(record);
}

/// `3s ago`, `5m ago`: how long before `now` `then` was.
pub(crate) fn ago(then: SystemTime, now: SystemTime) -> String {
    let d = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match d {
        0..=119 => format!("{d}s ago"),
        120..=7199 => format!("{}m ago", d / 60),
        _ => format!("{}h ago", d / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::events::RemovalReason;
    use double_natpmp_codec::protocol::Protocol;

    fn key() -> MappingKey {
        MappingKey {
            client: Ipv4Addr::new(192, 168, 88, 20),
            protocol: Protocol::Tcp,
            internal_port: 32400,
        }
    }

    #[test]
    fn created_renewed_and_removed_are_tracked_by_key() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let h = History::new(t0);
        let created = MappingEvent::Created {
            key: key(),
            router_port: 32400,
            external_port: 40001,
            lifetime: 60,
            origin: Origin::Static,
        };
        let r = h.observe(&created, t0, None).expect("listed");
        assert_eq!(
            (r.event, r.origin, r.time),
            ("created", Some("static"), 1_000)
        );
        let renewed = MappingEvent::Renewed {
            key: key(),
            lifetime: 60,
        };
        assert!(h
            .observe(&renewed, t0 + Duration::from_secs(30), None)
            .is_none());
        let times = h.times(&key()).expect("times");
        assert_eq!(times.created, unix_seconds(t0));
        assert_eq!(times.renewed, unix_seconds(t0) + 30);
        let removed = MappingEvent::Removed {
            key: key(),
            router_port: 32400,
            external_port: 40001,
            reason: RemovalReason::Deleted,
        };
        let r = h.observe(&removed, t0, None).expect("listed");
        assert_eq!((r.reason, r.origin), (Some("deleted"), Some("static")));
        assert!(h.times(&key()).is_none());
        assert_eq!(h.recent().len(), 2);
        assert!(r.for_webhook());
    }

    #[test]
    fn a_refusal_is_an_answer_but_a_timeout_is_not() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let h = History::new(t0);
        let exchange = |error| MappingEvent::UpstreamExchange {
            what: "map the port",
            took: Duration::from_millis(3),
            error,
        };
        h.observe(&exchange(Some("upstream_rejected")), t0, None);
        assert!(h.contacts().1.failing.is_none());
        h.observe(&exchange(Some("upstream_timeout")), t0, None);
        assert_eq!(h.contacts().1.failing, Some((t0, "upstream_timeout")));
        h.observe(&exchange(None), t0, None);
        assert!(h.contacts().1.failing.is_none());
    }
}
