//! [`SimTrap`]: an error the emulated router reports as `!trap`, with the real texts.

use thiserror::Error;

use double_natpmp_codec::routeros::wire::{Reply, ReplyKind};

/// An error the emulated router reports as `!trap =message=<text>` (then `!done`).
/// The texts are the real ones where known (docs/routeros-api.md §2.1).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SimTrap {
    /// Login with a wrong name or password, a user without the `api` policy, or refused logins.
    #[error("invalid user name or password (6)")]
    BadLogin,
    /// remove/set/place-before with an id that is not in the table.
    #[error("no such item (4)")]
    NoSuchItem,
    /// The user's group lacks the policy the command needs.
    #[error("not enough permissions (9)")]
    NotEnoughPermissions,
    /// An attribute the command does not take.
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    /// An interface name that does not exist (category 1).
    #[error("input does not match any value of {0}")]
    NoMatchingValue(String),
    /// A value that cannot be parsed for that argument (category 1).
    #[error("invalid value for argument {0}")]
    InvalidValue(String),
    /// A port number above 65535 (category 1).
    #[error("value of {0} out of range (0..65535)")]
    PortOutOfRange(String),
    /// A required argument is missing (category 1).
    #[error("missing value(s) of argument(s) {0}")]
    MissingArgument(String),
    /// An unknown menu.
    #[error("no such command prefix")]
    NoSuchCommandPrefix,
    /// A known menu without that command.
    #[error("no such command")]
    NoSuchCommand,
    /// A streaming command stopped by `/cancel` (category 2).
    #[error("interrupted")]
    Interrupted,
    /// A message set by a fault hook ([`super::RouterSim::set_trap_on_add`]).
    #[error("{0}")]
    Injected(String),
}

impl SimTrap {
    /// The `=category=` RouterOS attaches, where the spec gives one.
    pub fn category(&self) -> Option<u8> {
        match self {
            SimTrap::NoMatchingValue(_)
            | SimTrap::InvalidValue(_)
            | SimTrap::PortOutOfRange(_)
            | SimTrap::MissingArgument(_) => Some(1),
            SimTrap::Interrupted => Some(2),
            _ => None,
        }
    }

    /// The `!trap` sentence for this error, tagged.
    pub(crate) fn trap(&self, tag: &Option<String>) -> Reply {
        let mut r = Reply::new(ReplyKind::Trap).tagged(tag.clone());
        if let Some(c) = self.category() {
            r = r.attr("category", c.to_string());
        }
        r.attr("message", self.to_string())
    }

    /// `!trap` then `!done`, both tagged.
    pub(crate) fn replies(&self, tag: &Option<String>) -> Vec<Reply> {
        vec![self.trap(tag), done(tag)]
    }
}

/// The `!done` that ends every reply, tagged.
pub(crate) fn done(tag: &Option<String>) -> Reply {
    Reply::new(ReplyKind::Done).tagged(tag.clone())
}
