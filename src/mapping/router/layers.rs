//! [`Layers`]: the two far sides (the router and the VPN gateway) under our bounds, with the
//! rules of how we talk to each: a rule is known by its comment, and an uncertain outcome is
//! settled at once.
//!
//! * **Adding a rule** ([`Layers::add_rule`]): one `/ip/firewall/nat/add`. When its reply is
//!   lost (connection cut after the command was sent, `!done` without `=ret=`), the rule is
//!   looked up by its comment right away; the pool hands out another connection, since a broken
//!   one is dropped. Found: the add happened (extra copies are removed, so one dst-port never
//!   has two rules). Not found after a cut: it did not happen. A timeout is not looked up here
//!   (a router that did not answer the add will not answer the lookup in time either, and the
//!   client is owed an answer within the bound): the caller settles it in the background.
//! * **Removing a rule** ([`Layers::remove_rule`]): the rule is found by its comment first
//!   (`print ?comment=`), so an id that a reboot gave to somebody else's rule is never removed;
//!   each rule found is removed by the id the router shows now. A lost reply is settled by
//!   looking again. A teardown looks the rule up ([`Layers::look_up`]) while the gateway's
//!   delete is under way, and hands what it found to [`Layers::remove_found`]: the lookup is a
//!   read, so the rule is still removed only after the gateway's mapping is gone. A row found
//!   then that is gone when removed (a reboot renumbered the rules meanwhile) is looked up
//!   again.
//! * **Adding a src-nat rule** ([`Layers::add_src_rule`], UDP_SRCNAT): one `print
//!   ?chain=srcnat` to find the rule it goes before (see `srcnat.rs`), then the add with
//!   `place-before`; when that rule vanished in between (`no such item`), once more. A lost
//!   reply is settled as for the dst-nat rule, looked up by `?to-ports=R` and the comment.
//! * **Upstream** ([`Layers::upstream_map`]): one exchange under the bound; every grant's epoch
//!   goes to the epoch watch (C-48); a granted lifetime is capped at what was asked (C-30).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tracing::{info, warn};

use crate::mapping::error::MappingError;
use crate::mapping::events::{Events, MappingEvent};
use crate::mapping::router::epoch_watch::UpstreamEpochWatch;
use crate::mapping::router::rule::{RuleComment, RuleKind};
use crate::mapping::router::seam::{DstNatRule, NatRule, Router, RuleId, SrcNatRule};
use crate::mapping::router::srcnat::{anchor, OutScope};
use crate::natpmp::upstream::{MapGrant, Upstream, UpstreamMap};
use double_natpmp_codec::natpmp::epoch::Epoch;

/// How often a lost reply is looked up before the outcome is left to the reconciler.
const SETTLE_TRIES: u32 = 3;
/// The pause before the first retry of a settling lookup (doubling).
const SETTLE_BACKOFF: Duration = Duration::from_millis(100);

/// How an add ended.
#[derive(Debug)]
pub(crate) enum Added {
    /// The rule exists with this id.
    Yes(RuleId),
    /// The rule was not made.
    No(MappingError),
    /// The rule may exist; nobody could tell (yet).
    Unknown(MappingError),
}

/// The router and the VPN gateway under our bounds.
pub(crate) struct Layers<R, U> {
    /// The router.
    pub router: R,
    /// The VPN gateway.
    pub upstream: U,
    router_timeout: Duration,
    upstream_timeout: Duration,
    epoch: Arc<Epoch>,
    epoch_watch: Mutex<UpstreamEpochWatch>,
    /// Where what happens is told.
    pub(crate) events: Events,
    /// Notified when the gateway lost its state: the keeper makes every mapping again.
    pub heal_needed: tokio::sync::Notify,
}

impl<R: Router, U: Upstream> Layers<R, U> {
    /// Both sides with these bounds; `epoch` is ours, reset when the gateway lost its state.
    pub(crate) fn new(
        router: R,
        upstream: U,
        router_timeout: Duration,
        upstream_timeout: Duration,
        epoch: Arc<Epoch>,
    ) -> Layers<R, U> {
        Layers {
            router,
            upstream,
            router_timeout,
            upstream_timeout,
            epoch,
            epoch_watch: Mutex::new(UpstreamEpochWatch::new()),
            events: Events::new(),
            heal_needed: tokio::sync::Notify::new(),
        }
    }

    /// A router command under our bound.
    pub(crate) async fn router_call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, crate::mapping::router::seam::RouterError>>,
    ) -> Result<T, MappingError> {
        let started = Instant::now();
        let result = match timeout(self.router_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(MappingError::Router { what, source }),
            Err(_) => Err(MappingError::RouterTimeout {
                what,
                after: self.router_timeout,
            }),
        };
        self.events.emit(MappingEvent::RouterCommand {
            what,
            took: started.elapsed(),
            error: result.as_ref().err().map(MappingError::kind),
        });
        result
    }

    /// Our rules that are `rule` (same key and router port, whatever restart data their
    /// comments carry), retried briefly (a lookup that settles a lost reply runs right after a
    /// connection broke).
    async fn find(&self, rule: &RuleComment) -> Result<Vec<NatRule>, MappingError> {
        let mut pause = SETTLE_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let rows = match rule.kind {
                RuleKind::DstNat => {
                    self.router_call(
                        "look the rule up by its comment",
                        self.router.find_dstnat(rule.router_port),
                    )
                    .await
                }
                RuleKind::SrcNat => {
                    self.router_call(
                        "look the src-nat rule up by its comment",
                        self.router.find_srcnat(rule.router_port),
                    )
                    .await
                }
            };
            match rows {
                Ok(rows) => {
                    return Ok(rows
                        .into_iter()
                        .filter(|r| {
                            !r.dynamic
                                && r.comment
                                    .as_deref()
                                    .and_then(RuleComment::parse)
                                    .is_some_and(|c| c.same_rule(rule))
                        })
                        .collect())
                }
                Err(e) if tries >= SETTLE_TRIES || !e.is_uncertain() => return Err(e),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// Adds `rule`, whose comment is `identity` (see the module docs for how a lost reply is
    /// settled).
    pub(crate) async fn add_rule(&self, rule: &DstNatRule, identity: &RuleComment) -> Added {
        let result = self
            .router_call("add the dst-nat rule", self.router.add_dstnat(rule))
            .await;
        self.settle_add(result, identity).await
    }

    /// Adds the src-nat rule `make` builds, placed before the first rule that would catch the
    /// traffic otherwise (`make` gets that rule's id); `identity` is its comment.
    pub(crate) async fn add_src_rule(
        &self,
        scope: &OutScope,
        make: impl Fn(Option<RuleId>) -> SrcNatRule,
        identity: &RuleComment,
    ) -> Added {
        let mut tries = 0;
        loop {
            tries += 1;
            let rules = match self
                .router_call(
                    "list the src-nat rules (where ours goes)",
                    self.router.list_srcnat(),
                )
                .await
            {
                Ok(rules) => rules,
                // A listing changes nothing: whatever went wrong, no rule was added.
                Err(e) => return Added::No(e),
            };
            let rule = make(anchor(&rules, scope).cloned());
            let result = self
                .router_call("add the src-nat rule", self.router.add_srcnat(&rule))
                .await;
            match result {
                // The rule it was to go before is gone since the listing: look again.
                Err(e) if e.is_not_found() && rule.place_before.is_some() && tries < 2 => continue,
                result => return self.settle_add(result, identity).await,
            }
        }
    }

    /// Settles the outcome of an add of the rule that is `identity` (see the module docs).
    async fn settle_add(
        &self,
        result: Result<RuleId, MappingError>,
        identity: &RuleComment,
    ) -> Added {
        let error = match result {
            Ok(id) => return Added::Yes(id),
            Err(e) if !e.is_uncertain() => return Added::No(e),
            Err(e) => e,
        };
        if error.is_timeout() {
            return Added::Unknown(error);
        }
        match self.find_made(identity).await {
            Ok(Some(id)) => {
                info!(rule = %id, comment = %identity.encode(), "the add's reply was lost, but the rule exists: going on with it");
                Added::Yes(id)
            }
            Ok(None) => Added::No(error),
            Err(lookup) => {
                warn!(comment = %identity.encode(), "the add's reply was lost and the rule could not be looked up: {lookup}");
                Added::Unknown(error)
            }
        }
    }

    /// Looks up the rule that is `identity` after an add whose outcome was not known: `Some`
    /// with its id when it exists (extra copies are removed, so one dst-port never has two
    /// rules), `None` when there is none now, an error when the router could not tell (also
    /// when it shows the rule without an id).
    pub(crate) async fn find_made(
        &self,
        identity: &RuleComment,
    ) -> Result<Option<RuleId>, MappingError> {
        let found = self.find(identity).await?;
        let Some((first, extra)) = found.split_first() else {
            return Ok(None);
        };
        let Some(id) = &first.id else {
            return Err(MappingError::Router {
                what: "look the rule up by its comment",
                source: crate::mapping::router::seam::RouterError::IncompleteReply {
                    command: "/ip/firewall/nat/print ?comment=".into(),
                    missing: ".id",
                },
            });
        };
        for dup in extra.iter().filter_map(|r| r.id.as_ref()) {
            if let Err(e) = self
                .router_call("remove a duplicate rule", self.router.remove_rule(dup))
                .await
            {
                warn!(rule = %dup, "could not remove a duplicate of our rule; the reconciler will: {e}");
            }
        }
        Ok(Some(id.clone()))
    }

    /// Removes every rule that is `rule` (by its comment's key and router port), whatever its
    /// id now (`known` is the id we last saw, for the log). `Ok` once none is left, with how
    /// many this call removed.
    pub(crate) async fn remove_rule(
        &self,
        rule: &RuleComment,
        known: Option<&RuleId>,
    ) -> Result<usize, MappingError> {
        self.remove_found(rule, known, None).await
    }

    /// Our rules that are `rule`, as the router shows them now (a read: it changes nothing, so
    /// it may run while the gateway's delete is under way). For [`Layers::remove_found`].
    pub(crate) async fn look_up(&self, rule: &RuleComment) -> Result<Vec<NatRule>, MappingError> {
        self.find(rule).await
    }

    /// [`Layers::remove_rule`], starting from what an earlier [`Layers::look_up`] found
    /// (`None`: looked up now). A lookup that failed is the removal's failure, as it would
    /// have been had it run now.
    pub(crate) async fn remove_found(
        &self,
        rule: &RuleComment,
        known: Option<&RuleId>,
        looked_up: Option<Result<Vec<NatRule>, MappingError>>,
    ) -> Result<usize, MappingError> {
        let mut early = looked_up.transpose()?;
        let mut settled_once = false;
        let mut removed = 0;
        loop {
            let from_early = early.is_some();
            let found = match early.take() {
                Some(rows) => rows,
                None => self.find(rule).await?,
            };
            if found.is_empty() {
                return Ok(removed);
            }
            let mut lost = None;
            let mut stale = false;
            for row in &found {
                let Some(id) = &row.id else { continue };
                if known.is_some_and(|k| k != id) {
                    info!(old_rule = ?known, rule = %id, comment = ?row.comment, "the router shows our rule under another id (a reboot renumbers): re-bound by comment");
                }
                match self
                    .router_call("remove the rule", self.router.remove_rule(id))
                    .await
                {
                    Ok(()) => removed += 1,
                    // Gone since the early lookup: the rule may live on under a new id.
                    Err(e) if e.is_not_found() => stale |= from_early,
                    Err(e) if e.is_uncertain() => lost = Some(e),
                    Err(e) => return Err(e),
                }
            }
            match lost {
                None if stale => {} // look again
                None => return Ok(removed),
                // A lost reply: look again; once more at most.
                Some(e) if settled_once => return Err(e),
                Some(_) => settled_once = true,
            }
        }
    }

    /// An upstream map/renew/delete under our bound; a grant for lifetime > 0 must carry a port
    /// and a lifetime.
    pub(crate) async fn upstream_map(
        &self,
        what: &'static str,
        ask: UpstreamMap,
    ) -> Result<MapGrant, MappingError> {
        let fut = self.upstream.map(ask);
        let started = Instant::now();
        let result = match timeout(self.upstream_timeout, fut).await {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(source)) => Err(MappingError::Upstream { what, source }),
            Err(_) => Err(MappingError::UpstreamTimeout {
                what,
                after: self.upstream_timeout,
            }),
        };
        self.events.emit(MappingEvent::UpstreamExchange {
            what,
            took: started.elapsed(),
            error: result.as_ref().err().map(MappingError::kind),
        });
        let mut grant: MapGrant = result?;
        self.observe_epoch(grant.epoch);
        if ask.lifetime > 0 && (grant.external_port == 0 || grant.lifetime == 0) {
            return Err(MappingError::UpstreamUnusable {
                external_port: grant.external_port,
                lifetime: grant.lifetime,
            });
        }
        // A gateway never grants more than it was asked for (RFC 6886 §3.3): a longer lifetime
        // is taken as what was asked, so a lease never counts on the gateway beyond that.
        grant.lifetime = grant.lifetime.min(ask.lifetime);
        Ok(grant)
    }

    /// Feeds an upstream SSSoE to the epoch watch; resets our epoch when the gateway lost its
    /// state (C-48). Returns whether it did.
    pub(crate) fn observe_epoch(&self, sssoe: u32) -> bool {
        let lost = self
            .epoch_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(sssoe, Instant::now());
        if lost {
            warn!(
                upstream_epoch = sssoe,
                "the VPN gateway's epoch went backwards: it lost its mappings; resetting our epoch so clients renew (C-48)"
            );
            self.epoch.reset();
            self.events
                .emit(MappingEvent::UpstreamLost { epoch: sssoe });
            self.heal_needed.notify_one();
        }
        lost
    }
}
