//! `double-natpmp check`'s src-nat step (UDP_SRCNAT, RFC 6886 §3.9): does a rule in the
//! `srcnat` chain take a mapped client's outbound UDP before our src-nat rule, and how to fix
//! it. It reads the chain and the interface lists (two prints) and judges them with
//! `mapping::router::srcnat`, the same reading the daemon places its rules and warns by.

use std::time::Duration;

use crate::cli::bounded::bounded;
use crate::cli::fixes::router_fix;
use crate::mapping::router::rule::{RuleKind, RuleOwner};
use crate::mapping::router::srcnat::{anchor, describe, shadowed, OutScope};
use crate::routeros::api::{Router, RouterApi, RouterError};

/// What the step found: one line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// `OK   <text>`.
    Ok(String),
    /// `FAIL <what>: <error>. Fix: <fix>`.
    Fail {
        /// The step.
        what: String,
        /// What is wrong.
        error: String,
        /// What to do.
        fix: String,
    },
}

/// The step's name in the report.
pub(crate) const WHAT: &str = "src-nat order (UDP_SRCNAT)";

/// Checks the `srcnat` chain for `in_interface`, with UDP_SRCNAT `on` or off.
pub(crate) async fn srcnat_order(
    router: &RouterApi,
    in_interface: &str,
    on: bool,
    limit: Duration,
) -> Verdict {
    let address = router.address().to_owned();
    let listed = async {
        let rules = bounded(
            limit,
            &address,
            "/ip/firewall/nat/print",
            router.list_srcnat(),
        )
        .await?;
        let members = bounded(
            limit,
            &address,
            "/interface/list/member/print",
            router.list_members(),
        )
        .await?;
        Ok::<_, RouterError>((rules, members))
    };
    let (rules, members) = match listed.await {
        Ok(v) => v,
        Err(e) => {
            return Verdict::Fail {
                what: WHAT.to_owned(),
                error: e.to_string(),
                fix: router_fix(&e),
            }
        }
    };
    let scope = OutScope::new(in_interface, &members);
    // The first foreign rule that takes tunnel-bound UDP: where new rules of ours go.
    let first =
        anchor(&rules, &scope).and_then(|id| rules.iter().find(|r| r.id.as_ref() == Some(id)));
    if !on {
        return Verdict::Ok(match first {
            Some(rule) => format!(
                "{WHAT}: off; a mapped client's outbound UDP leaves through rule {} with the port it picks, not the mapped one (set UDP_SRCNAT=true to pair them, RFC 6886 §3.9)",
                describe(rule)
            ),
            None => format!(
                "{WHAT}: off; no srcnat rule takes UDP out of '{in_interface}'"
            ),
        });
    }
    let late = shadowed(&rules, &scope);
    if let Some(s) = late.first() {
        let ours = s.ours_id.as_ref().map_or("<ours>", |i| i.as_str());
        let theirs = s.by.id.as_ref().map_or("<its id>", |i| i.as_str());
        return Verdict::Fail {
            what: WHAT.to_owned(),
            error: format!(
                "rule {} comes before our src-nat rule {ours} for {}:{}, so that client's outbound UDP leaves with the port the masquerade picks, not the mapped one ({} of our src-nat rules are behind such a rule)",
                describe(&s.by),
                s.ours.key.client,
                s.ours.key.internal_port,
                late.len()
            ),
            fix: format!(
                "move our src-nat rules above it (/ip firewall nat move {ours} destination={theirs}, for each), or remove them (/ip firewall nat remove [find comment~\"k=snat\"]) and the daemon adds them again before it at its next reconcile; keep new masquerade rules below the double-natpmp ones"
            ),
        };
    }
    let ours = rules
        .iter()
        .filter(|r| {
            matches!(
                RuleOwner::of(r.comment.as_deref(), r.dynamic),
                RuleOwner::Ours(Some(c)) if c.kind == RuleKind::SrcNat
            )
        })
        .count();
    Verdict::Ok(match first {
        Some(rule) => format!(
            "{WHAT}: {ours} src-nat rules of ours come first; new ones go before rule {}",
            describe(rule)
        ),
        None => format!(
            "{WHAT}: no srcnat rule takes UDP out of '{in_interface}' before ours ({ours} src-nat rules of ours)"
        ),
    })
}
