//! Riding out a hiccup (C-17b, CREATE_PATIENCE, default 9 s): the attempts of a create
//! (`create.rs`) and of a renewal that must ask the gateway (`transaction.rs`), and the window
//! they run in.
//!
//! A failure that may pass in a moment ([`MappingError::is_transient`]: no answer, ICMP port
//! unreachable, a connection reset or refused while the API reconnects, a gateway answering 3)
//! is not answered at once: both layers are tried again until both are made, and only the
//! window's end is answered 3. What an attempt made is kept for the next (a rule that exists is
//! not added again, a gateway mapping that exists is not asked again); a rule whose add went
//! unanswered is looked up by its comment before it is added again. Attempts are paced 250 ms,
//! 500 ms, then 1 s apart; the first runs under the layers' own bounds, the later ones are cut
//! at the window's end (an unfinished command then counts as unanswered, and the create undoes
//! it as it undoes any uncertain outcome). A refusal (2, 4, a `!trap`, an unusable grant) is
//! answered at once. Zero tries once.
//!
//! **Why 9 s.** libtorrent (qBittorrent, Deluge) sends a request up to 9 times, 250 ms × n
//! apart (the last about 9 s after the first), gives up about 11.25 s after the first, and after
//! silence or any non-zero result waits two hours. A tunnel that comes back a few seconds after
//! a router boot or a VPN reconnect must not cost the user a port for two hours, and the answer
//! must come inside libtorrent's window. The client's retransmissions meanwhile get no reply
//! (the server's in-flight claim holds them, and they get this request's answer when it comes;
//! see `natpmp/server.rs`).

use std::time::Duration;

use tokio::time::Instant;

use crate::mapping::core::Core;
use crate::mapping::error::MappingError;
use crate::mapping::router::layers::Added;
use crate::mapping::router::rule::{dst_nat_rule, src_nat_rule, RuleComment, RuleKind};
use crate::mapping::router::seam::{Router, RuleId};
use crate::natpmp::upstream::{MapGrant, Upstream, UpstreamMap};

/// One rule of a new mapping, as the attempts so far left it.
pub(crate) struct RuleSlot {
    /// The rule's comment (its identity).
    pub(crate) comment: RuleComment,
    /// Made, with this id.
    pub(crate) id: Option<RuleId>,
    /// An add went unanswered in time: the router may still carry it out (looked up before
    /// another add; looked up and removed in the background if the create fails).
    pub(crate) may_land_later: bool,
    /// An add's reply was lost and the rule could not be looked up: it may exist (R stays a
    /// suspect for the reconciler if the create fails).
    pub(crate) may_exist: bool,
}

impl RuleSlot {
    pub(crate) fn new(comment: RuleComment) -> RuleSlot {
        RuleSlot {
            comment,
            id: None,
            may_land_later: false,
            may_exist: false,
        }
    }

    /// Takes an attempt's outcome in; the failure, if any.
    pub(crate) fn absorb(&mut self, added: Added) -> Option<MappingError> {
        match added {
            Added::Yes(id) => {
                self.id = Some(id);
                None
            }
            Added::No(e) => Some(e),
            Added::Unknown(e) if e.is_timeout() => {
                self.may_land_later = true;
                Some(e)
            }
            Added::Unknown(e) => {
                self.may_exist = true;
                Some(e)
            }
        }
    }
}

/// Tries to make one rule that is not made yet: added, or, after an add whose outcome was not
/// known, looked up first (and added only when it is not there).
async fn make_rule<R: Router, U: Upstream>(core: &Core<R, U>, slot: &RuleSlot) -> Added {
    if slot.may_land_later || slot.may_exist {
        match core.layers.find_made(&slot.comment).await {
            Ok(Some(id)) => return Added::Yes(id),
            Ok(None) => {}
            Err(e) => return Added::Unknown(e),
        }
    }
    let comment = &slot.comment;
    match comment.kind {
        RuleKind::DstNat => {
            core.layers
                .add_rule(&dst_nat_rule(&core.config, comment), comment)
                .await
        }
        RuleKind::SrcNat => {
            // Boxed: the src-nat side (a listing, then an add) is the larger future, and only
            // UDP mappings under UDP_SRCNAT take it; inline, every create would carry its room.
            let scope = core.out_scope();
            Box::pin(core.layers.add_src_rule(
                &scope,
                |anchor| src_nat_rule(&core.config, comment, anchor),
                comment,
            ))
            .await
        }
    }
}

/// A rule attempt cut at `cut` (the end of the patience window): an unfinished add counts as
/// one the router did not answer in time.
async fn make_rule_until<R: Router, U: Upstream>(
    core: &Core<R, U>,
    slot: Option<&RuleSlot>,
    cut: Option<Instant>,
) -> Option<Added> {
    let slot = slot.filter(|s| s.id.is_none())?;
    let Some(cut) = cut else {
        return Some(make_rule(core, slot).await);
    };
    Some(
        match tokio::time::timeout_at(cut, make_rule(core, slot)).await {
            Ok(added) => added,
            Err(_) => Added::Unknown(MappingError::RouterTimeout {
                what: "add the rule (CREATE_PATIENCE ended)",
                after: core.config.create_patience,
            }),
        },
    )
}

/// Tries every rule that is not made yet, at once.
pub(crate) async fn make_rules<R: Router, U: Upstream>(
    core: &Core<R, U>,
    slots: &[RuleSlot],
    cut: Option<Instant>,
) -> [Option<Added>; 2] {
    let (a, b) = tokio::join!(
        make_rule_until(core, slots.first(), cut),
        make_rule_until(core, slots.get(1), cut)
    );
    [a, b]
}

/// The upstream map of an attempt, cut at `cut` (the end of the patience window): an
/// unfinished exchange counts as one the gateway did not answer in time.
pub(crate) async fn map_upstream<R: Router, U: Upstream>(
    core: &Core<R, U>,
    what: &'static str,
    ask: UpstreamMap,
    cut: Option<Instant>,
) -> Result<MapGrant, MappingError> {
    let exchange = core.layers.upstream_map(what, ask);
    let Some(cut) = cut else {
        return exchange.await;
    };
    tokio::time::timeout_at(cut, exchange)
        .await
        .unwrap_or(Err(MappingError::UpstreamTimeout {
            what,
            after: core.config.create_patience,
        }))
}

/// The pacing of the attempts of one patience window (module docs: **Patience**).
pub(crate) struct Patience {
    deadline: Instant,
    pause: Duration,
    tries: u32,
}

/// The first pause between two attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two attempts (also how late a shutdown may see a waiting create).
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl Patience {
    /// A window of `patience` from `started`.
    pub(crate) fn new(started: Instant, patience: Duration) -> Patience {
        Patience {
            deadline: started + patience,
            pause: FIRST_PAUSE,
            tries: 0,
        }
    }

    /// Where the next attempt is cut: nowhere for the first (the layers' own bounds hold),
    /// the window's end for the others.
    pub(crate) fn cut(&self) -> Option<Instant> {
        (self.tries > 0).then_some(self.deadline)
    }

    /// After a transient failure: waits for the next attempt and returns `true`, or `false`
    /// when the window is over (or the daemon is stopping).
    pub(crate) async fn again<R: Router, U: Upstream>(&mut self, core: &Core<R, U>) -> bool {
        self.tries += 1;
        let now = Instant::now();
        if now >= self.deadline || core.is_closing() {
            return false;
        }
        tokio::time::sleep_until((now + self.pause).min(self.deadline)).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Instant::now() < self.deadline && !core.is_closing()
    }

    /// How many attempts failed so far.
    pub(crate) fn failed(&self) -> u32 {
        self.tries
    }
}
