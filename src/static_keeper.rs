//! The static keeper: keeps the STATIC_MAPPINGS alive by itself, through the same transaction a
//! NAT-PMP request runs ([`MappingHandle::request`] with [`Origin::Static`]).
//!
//! A static lease never expires in the lease table, but its upstream mapping does (60 s with
//! ProtonVPN). So the keeper asks again at half of each granted lifetime (RFC 6886 §3.3's
//! client rule), which renews the gateway's mapping, or makes it again when the gateway lost it;
//! it makes the whole mapping again at once when it is removed (the forwards API's delete: a
//! NAT-PMP delete cannot remove it) and when the gateway's epoch shows it lost its state. A
//! failed attempt is tried again after 1 s, doubling up to 30 s. A rule deleted on the router
//! is made again by the reconciler, which restores the rules of live leases.
//!
//! A static mapping for a source that is not a client (the router's or the daemon's own
//! address, a subnet's network or broadcast address, the VPN gateway; C-39a) stops the start
//! when the start already knows it ([`check_clients`]); one that becomes refused later (an
//! address added on the router, seen by a reconcile pass) gets a warning, once, and no
//! mapping: the lease it had is removed, and it is made again once the address is no longer
//! refused.
//!
//! Kept small on purpose: the mapping core's own keeper will take over upstream renewals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};

use crate::mapping::events::{MappingEvent, Origin, RemovalReason};
use crate::mapping::request::{Command, MappingRequest};
use crate::mapping::store::lease::MappingKey;
use crate::mapping::MappingHandle;
use crate::refused::Refusal;
use crate::shutdown::Shutdown;
use double_natpmp_codec::natpmp::result::ResultCode;

/// The first pause after a failed attempt (doubling).
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause after failed attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The shortest time between two renewals of one mapping.
const RENEW_MIN: Duration = Duration::from_secs(1);

/// What the keeper did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct KeeperStats {
    created: AtomicU64,
    create_failed: AtomicU64,
    renewed: AtomicU64,
    renew_failed: AtomicU64,
}

impl KeeperStats {
    /// `(result, count)` for each outcome: `created`, `create_failed`, `renewed`,
    /// `renew_failed`.
    pub(crate) fn counts(&self) -> [(&'static str, u64); 4] {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("created", load(&self.created)),
            ("create_failed", load(&self.create_failed)),
            ("renewed", load(&self.renewed)),
            ("renew_failed", load(&self.renew_failed)),
        ]
    }
}

/// A STATIC_MAPPINGS entry for a source that is not a client.
#[derive(Debug, Error)]
#[error("STATIC_MAPPINGS: {key} cannot be mapped: {why}; remove it from STATIC_MAPPINGS")]
pub struct StaticRefused {
    /// The entry, `protocol:client:port`.
    pub key: String,
    /// Why its client is refused.
    pub why: Refusal,
}

/// Checks every static mapping's client against the sources that are not clients, as known
/// at start (after the start reconcile read the router's addresses).
pub(crate) fn check_clients(
    mapping: &MappingHandle,
    keys: &[MappingKey],
) -> Result<(), StaticRefused> {
    for key in keys {
        if let Some(why) = mapping.refused().why(key.client) {
            return Err(StaticRefused {
                key: format!("{}:{}:{}", key.protocol, key.client, key.internal_port),
                why,
            });
        }
    }
    Ok(())
}

/// One static mapping's schedule.
struct Slot {
    due: Instant,
    retry: Duration,
}

/// Starts keeping `keys` alive, asking for `lifetime` seconds each time; stops when `shutdown`
/// fires.
pub(crate) fn spawn(
    mapping: MappingHandle,
    keys: Vec<MappingKey>,
    lifetime: u32,
    stats: Arc<KeeperStats>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    // Subscribed before the task runs, so no removal between now and its first step is missed.
    let events = mapping.subscribe();
    tokio::spawn(run(mapping, keys, lifetime, stats, events, shutdown))
}

async fn run(
    mapping: MappingHandle,
    keys: Vec<MappingKey>,
    lifetime: u32,
    stats: Arc<KeeperStats>,
    mut events: tokio::sync::broadcast::Receiver<MappingEvent>,
    mut shutdown: Shutdown,
) {
    if keys.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut slots: HashMap<MappingKey, Slot> = keys
        .iter()
        .map(|k| {
            (
                *k,
                Slot {
                    due: now,
                    retry: RETRY_FIRST,
                },
            )
        })
        .collect();
    loop {
        for (key, slot) in slots.iter_mut() {
            if slot.due <= Instant::now() && !shutdown.is_shutdown() {
                keep(&mapping, *key, slot, lifetime, &stats).await;
            }
        }
        let next = slots
            .values()
            .map(|s| s.due)
            .min()
            .unwrap_or_else(|| Instant::now() + RETRY_MAX);
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = shutdown.recv() => return,
            event = events.recv() => {
                let now = Instant::now();
                match event {
                    Ok(MappingEvent::Removed { key, reason, .. }) if reason != RemovalReason::Shutdown => {
                        if let Some(slot) = slots.get_mut(&key) {
                            info!(mapping = %key, "static mapping removed ({}): making it again", reason.as_str());
                            slot.due = now;
                        }
                    }
                    Ok(MappingEvent::UpstreamLost { .. }) | Err(RecvError::Lagged(_)) => {
                        for slot in slots.values_mut() {
                            slot.due = now;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Makes or renews one static mapping now and schedules the next attempt.
async fn keep(
    mapping: &MappingHandle,
    key: MappingKey,
    slot: &mut Slot,
    lifetime: u32,
    stats: &KeeperStats,
) {
    let existing = mapping.lease(&key);
    if mapping.refused().check(key.client).is_some() {
        // Logged once by the check; tried again later, in case the address goes away.
        if existing.is_some() {
            let delete = Command::Delete {
                key,
                origin: Origin::Static,
            };
            let reply = mapping.request(delete).await;
            info!(mapping = %key, result = %reply.result, "static mapping removed: its client is not a client any more");
        }
        stats.create_failed.fetch_add(1, Ordering::Relaxed);
        slot.due = Instant::now() + RETRY_MAX;
        return;
    }
    let request = MappingRequest {
        client: key.client,
        protocol: key.protocol,
        internal_port: key.internal_port,
        suggested_external_port: existing.as_ref().map_or(0, |l| l.external_port),
        lifetime,
        origin: Origin::Static,
    };
    let reply = mapping.request(Command::Map(request)).await;
    let (ok, failed) = match existing {
        Some(_) => (&stats.renewed, &stats.renew_failed),
        None => (&stats.created, &stats.create_failed),
    };
    let now = Instant::now();
    if reply.result == ResultCode::Success {
        ok.fetch_add(1, Ordering::Relaxed);
        let half = Duration::from_secs(u64::from(reply.lifetime / 2));
        slot.due = now + half.max(RENEW_MIN);
        slot.retry = RETRY_FIRST;
    } else {
        failed.fetch_add(1, Ordering::Relaxed);
        warn!(mapping = %key, result = %reply.result, retry_in = ?slot.retry, "static mapping could not be kept");
        slot.due = now + slot.retry;
        slot.retry = (slot.retry * 2).min(RETRY_MAX);
    }
}
