//! A RouterOS API emulator that follows the real wire protocol and reply texts
//! (docs/routeros-api.md §1, §2 and §5).
//!
//! [`RouterSim::start`] listens on a TCP port (api, or api-ssl when [`RouterSimConfig::tls`] is
//! set); each connection is its own task. Commands on one connection run one at a time, in
//! order; only `/ip/route/check` without `once` keeps running (streaming a row per second) until
//! `/cancel`. Tags are echoed as the second word of every reply sentence.
//!
//! Choices where the real behaviour is unknown (docs/routeros-api.md §6):
//! * a user without the `api` policy gets the bad-credentials trap, like a wrong password;
//! * a failed login leaves the connection open, so the client may retry;
//! * the pre-6.43 challenge login is not emulated: `/login` without a name is a failed login;
//! * `/ip/route/check` with no matching route answers `!re =status=unreachable`;
//! * `/cancel` of an unknown tag just answers `!done`;
//! * an interrupted connection: a command runs as soon as its sentence is complete, so a client
//!   that disconnects early still gets its command executed (at-least-once);
//! * `?<`/`?>` compare numbers numerically, `*HEX` ids by value, other text lexically; `?x=no`
//!   matches `x=false`;
//! * while [`RouterSim::set_hang`] is on, commands are read and counted but neither executed nor
//!   answered.

mod commands;
mod config;
mod nft;
mod query;
pub mod schema;
mod session;
mod state;
mod table;
mod trap;

pub use config::{RouterSimConfig, SimRoute, SimService, SimUser};
pub use nft::NftMirror;
pub use table::SimNatRule;
pub use trap::SimTrap;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use session::accept_loop;
use state::{lock, Faults, Shared};
use table::{NatTable, RuleChange};

/// A running emulated router. Dropping it stops the listener and every session.
pub struct RouterSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RouterSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RouterSim {
    /// Listens on `bind` (use `127.0.0.1:0` in tests) and serves until dropped.
    pub async fn start(config: RouterSimConfig, bind: SocketAddr) -> io::Result<RouterSim> {
        if let Some(v) = &config.command_tree {
            schema::command_tree()
                .and_then(|t| t.at(v).map(|_| ()))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let nft = match &config.nft_mirror {
            Some(m) => Some(nft::Mirror::start(
                m.clone(),
                config.interface_lists.clone(),
            )?),
            None => None,
        };
        let shared = Arc::new(Shared {
            nft,
            version: Mutex::new(config.version.clone()),
            routes: Mutex::new(config.routes.clone()),
            addresses: Mutex::new(config.addresses.clone()),
            down: Mutex::new(std::collections::HashSet::new()),
            config,
            table: Mutex::new(NatTable::new()),
            faults: Mutex::new(Faults::default()),
            started: Instant::now(),
            commands: AtomicU64::new(0),
            per_path: Mutex::new(HashMap::new()),
            logins: AtomicU64::new(0),
            login_attempts: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(RouterSim {
            shared,
            addr,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Command sentences received after login (all paths, `/cancel` and `/quit` included).
    pub fn command_count(&self) -> u64 {
        self.shared.commands.load(Ordering::SeqCst)
    }

    /// Command sentences with this path received after login, e.g. `/ip/firewall/nat/add`.
    pub fn command_count_for(&self, path: &str) -> u64 {
        lock(&self.shared.per_path).get(path).copied().unwrap_or(0)
    }

    /// Successful logins.
    pub fn login_count(&self) -> u64 {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// `/login` commands received, successful or not.
    pub fn login_attempt_count(&self) -> u64 {
        self.shared.login_attempts.load(Ordering::SeqCst)
    }

    /// Connections open right now (logged in or not).
    pub fn open_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Zeroes the command and login counters (not `open_sessions`).
    pub fn reset_counters(&self) {
        self.shared.commands.store(0, Ordering::SeqCst);
        self.shared.logins.store(0, Ordering::SeqCst);
        self.shared.login_attempts.store(0, Ordering::SeqCst);
        lock(&self.shared.per_path).clear();
    }

    /// The NAT table in rule order.
    pub fn nat_rules(&self) -> Vec<SimNatRule> {
        lock(&self.shared.table).rows().to_vec()
    }

    /// Adds a rule as if the admin typed it (no validation; pass `("dynamic", "true")` for a
    /// dynamic rule, `("invalid", "true")` for an invalid one). Returns its id.
    pub fn insert_nat_rule(&self, fields: &[(&str, &str)]) -> String {
        let id = lock(&self.shared.table).insert_raw(fields);
        if let Some(rule) = self.nat_rules().into_iter().find(|r| r.id == id) {
            self.shared.mirror(vec![RuleChange::Added {
                rule,
                following: Vec::new(),
            }]);
        }
        id
    }

    /// Deletes a rule behind the client's back. False when there was no such rule.
    pub fn delete_nat_rule(&self, id: &str) -> bool {
        let removed = lock(&self.shared.table).remove_raw(id);
        match removed {
            Some(rule) => {
                self.shared.mirror(vec![RuleChange::Removed(rule)]);
                true
            }
            None => false,
        }
    }

    /// Renumbers every NAT rule `*1`, `*2`, … in rule order, as a reboot may, so an id a client
    /// held can now belong to another rule. Sessions stay open (call [`RouterSim::go_down`]
    /// and [`RouterSim::come_up`] around it for a whole reboot).
    pub fn renumber_ids(&self) {
        let pairs = lock(&self.shared.table).renumber();
        let mut changes: Vec<RuleChange> = pairs
            .iter()
            .map(|(old, _)| RuleChange::Removed(old.clone()))
            .collect();
        // In table order, each at the end: the order comes out as the table has it.
        changes.extend(pairs.into_iter().map(|(_, new)| RuleChange::Added {
            rule: new,
            following: Vec::new(),
        }));
        self.shared.mirror(changes);
    }

    /// Adds an `/ip/address` row (`address` as `a.b.c.d/nn`) as if the admin typed it.
    pub fn add_address(&self, address: &str, interface: &str) {
        lock(&self.shared.addresses).push((address.to_owned(), interface.to_owned()));
    }

    /// Replaces the routes `/ip/route/check` finds.
    pub fn set_routes(&self, routes: Vec<SimRoute>) {
        *lock(&self.shared.routes) = routes;
    }

    /// Sets an interface's link state (`running`).
    pub fn set_interface_running(&self, name: &str, running: bool) {
        let mut down = lock(&self.shared.down);
        if running {
            down.remove(name);
        } else {
            down.insert(name.to_owned());
        }
    }

    /// Delay before every reply (the command itself runs at once).
    pub fn set_latency(&self, d: Duration) {
        lock(&self.shared.faults).latency = d;
    }

    /// While `Some`, every `/ip/firewall/nat/add` fails with `!trap =message=<m>` + `!done`
    /// and adds nothing.
    pub fn set_trap_on_add(&self, message: Option<String>) {
        lock(&self.shared.faults).trap_on_add = message;
    }

    /// The next command with this path (on any connection) runs, then its reply is cut off
    /// half way and the connection closed. Calling it twice arms two commands.
    pub fn close_mid_reply_next(&self, path: &str) {
        *lock(&self.shared.faults)
            .close_mid_reply
            .entry(path.to_owned())
            .or_default() += 1;
    }

    /// The next command with this path (on any connection) runs, then the connection closes
    /// before any reply. Calling it twice arms two commands.
    pub fn cut_after_execute_next(&self, path: &str) {
        *lock(&self.shared.faults)
            .cut_after_execute
            .entry(path.to_owned())
            .or_default() += 1;
    }

    /// While on, commands are read (and counted) but neither run nor answered; connections
    /// stay open.
    pub fn set_hang(&self, on: bool) {
        lock(&self.shared.faults).hang = on;
    }

    /// While on, every login gets the bad-credentials trap.
    pub fn set_refuse_logins(&self, on: bool) {
        lock(&self.shared.faults).refuse_logins = on;
    }

    /// While on, an empty sentence (a lone 0x00) precedes every reply sentence; clients must
    /// skip it (GO `TestRunEmptySentence`).
    pub fn set_empty_sentence_before_reply(&self, on: bool) {
        lock(&self.shared.faults).empty_sentence_before_reply = on;
    }

    /// Changes the reported version; `!empty` follows it (on from 7.18).
    pub fn set_version(&self, version: &str) {
        *lock(&self.shared.version) = version.to_owned();
    }

    /// Resolves once every NAT change so far has been applied to the nftables mirror
    /// (at once when there is no mirror).
    pub async fn nft_synced(&self) {
        if let Some(m) = &self.shared.nft {
            m.synced().await;
        }
    }

    /// Closes the listener and every session; new connections are refused until
    /// [`RouterSim::come_up`].
    pub async fn go_down(&self) {
        let accept = lock(&self.accept).take();
        if let Some(h) = accept {
            h.abort();
            let _ = h.await;
        }
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        tasks.shutdown().await;
    }

    /// Listens again on the same address after [`RouterSim::go_down`]. The NAT table survives.
    pub async fn come_up(&self) -> io::Result<()> {
        if lock(&self.accept).is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        let h = tokio::spawn(accept_loop(self.shared.clone(), listener));
        let mut slot = lock(&self.accept);
        if slot.is_some() {
            // A concurrent come_up won; ours is surplus.
            h.abort();
        } else {
            *slot = Some(h);
        }
        Ok(())
    }

    /// Stops everything and waits until every connection is closed.
    pub async fn shutdown(self) {
        self.go_down().await;
    }
}

impl Drop for RouterSim {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.accept).take() {
            h.abort();
        }
        lock(&self.shared.tasks).abort_all();
    }
}

#[cfg(test)]
mod tests;
