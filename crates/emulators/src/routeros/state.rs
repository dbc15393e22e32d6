//! The state shared by the emulator's handle, its listener and every session, and the faults
//! a test can inject.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::config::{RouterSimConfig, SimRoute};
use super::nft;
use super::table::{NatTable, RuleChange};

/// Injected faults; see the setters on [`RouterSim`].
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) latency: Duration,
    pub(crate) trap_on_add: Option<String>,
    pub(crate) close_mid_reply: HashMap<String, u32>,
    pub(crate) cut_after_execute: HashMap<String, u32>,
    pub(crate) hang: bool,
    pub(crate) refuse_logins: bool,
    pub(crate) empty_sentence_before_reply: bool,
}

/// Consumes one armed "next" fault for `path`.
pub(crate) fn take_armed(armed: &mut HashMap<String, u32>, path: &str) -> bool {
    match armed.get_mut(path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            if *n == 0 {
                armed.remove(path);
            }
            true
        }
        _ => false,
    }
}

/// State shared by the handle, the listener and every session.
pub(crate) struct Shared {
    pub(crate) config: RouterSimConfig,
    pub(crate) version: Mutex<String>,
    /// Routes for `/ip/route/check`, changeable at run time.
    pub(crate) routes: Mutex<Vec<SimRoute>>,
    /// `/ip/address` rows (address/prefix, interface), changeable at run time.
    pub(crate) addresses: Mutex<Vec<(String, String)>>,
    /// Interfaces whose link is down (`running=false`).
    pub(crate) down: Mutex<HashSet<String>>,
    pub(crate) table: Mutex<NatTable>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) started: Instant,
    pub(crate) commands: AtomicU64,
    pub(crate) per_path: Mutex<HashMap<String, u64>>,
    pub(crate) logins: AtomicU64,
    pub(crate) login_attempts: AtomicU64,
    pub(crate) sessions: AtomicUsize,
    /// Session and streaming tasks; aborted on `go_down` and drop.
    pub(crate) tasks: Mutex<JoinSet<()>>,
    /// The nftables mirror, when configured.
    pub(crate) nft: Option<nft::Mirror>,
}

/// Locks a std mutex, ignoring poisoning: every critical section here leaves the data
/// consistent, so a panicked holder (only possible in tests) does not make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn mirror(&self, changes: Vec<RuleChange>) {
        if let Some(m) = &self.nft {
            m.send(changes);
        }
    }
}
