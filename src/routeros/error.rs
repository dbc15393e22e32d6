//! [`RouterError`]: a failed RouterOS operation, in words a router owner understands, with a
//! variant for each case that code must tell apart (never matched by message text).

use thiserror::Error;

use double_natpmp_codec::routeros::wire::Reply;

/// A failed RouterOS operation, in words a router owner understands.
#[derive(Clone, Debug, Error)]
pub enum RouterError {
    /// The item does not exist (`no such item`).
    #[error("RouterOS: no such item {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The API user lacks a policy (`not enough permissions`).
    #[error("RouterOS refused {command}: {message}{}", policy.map(|p| format!(" (the API user's group needs the '{p}' policy)")).unwrap_or_default())]
    PermissionDenied {
        /// The command.
        command: String,
        /// The router's text.
        message: String,
        /// The policy that is probably missing, where it can be told.
        policy: Option<&'static str>,
    },
    /// A value the router did not accept (e.g. an unknown interface).
    #[error("RouterOS rejected {command}: {message}")]
    InvalidValue {
        /// The command.
        command: String,
        /// The router's text.
        message: String,
    },
    /// Any other `!trap`.
    #[error("RouterOS error on {command}: {message}")]
    Trap {
        /// The command.
        command: String,
        /// The router's text.
        message: String,
        /// The `category`, if given.
        category: Option<u8>,
    },
    /// Login refused.
    #[error("RouterOS API login failed for user '{user}' at {address}: {message}")]
    LoginRefused {
        /// The user name.
        user: String,
        /// The API address.
        address: String,
        /// The router's text.
        message: String,
    },
    /// The connection could not be made or broke: TCP connect, read or write failed, the
    /// router closed it, a protocol error, or a TLS handshake cut short by the network.
    #[error("RouterOS API at {address}: {message}")]
    Connection {
        /// The API address.
        address: String,
        /// What happened.
        message: String,
    },
    /// The router ended the session with `!fatal` (rebooting, `/quit`, the user removed, a
    /// protocol violation). When it answered a command, that command may have run.
    #[error("RouterOS API at {address}: the router closed the session (!fatal): {reason}")]
    Fatal {
        /// The API address.
        address: String,
        /// The router's reason.
        reason: String,
    },
    /// api-ssl could not be set up, or the router's certificate was not accepted. Raised before
    /// any command (the login included) is sent.
    #[error("RouterOS API at {address}: {message}")]
    Tls {
        /// The API address.
        address: String,
        /// What kind of problem, for code that must tell them apart.
        kind: TlsProblem,
        /// What happened and what to set, for the router owner.
        message: String,
    },
    /// No answer in time (connect, login, command, or waiting for a pooled connection).
    #[error("RouterOS API at {address}: no answer to {what} within {after:?}")]
    Timeout {
        /// The API address.
        address: String,
        /// What timed out.
        what: String,
        /// The limit.
        after: std::time::Duration,
    },
    /// The command was carried out (`!done`) but its reply lacked what it must carry (an add
    /// without `=ret=`): the item may exist, and only a lookup can tell.
    #[error("RouterOS carried out {command} but its reply lacked {missing}")]
    IncompleteReply {
        /// The command.
        command: String,
        /// What was missing, e.g. `=ret= (the new id)`.
        missing: &'static str,
    },
}

/// What was wrong with api-ssl ([`RouterError::Tls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate is not signed by the CA of MIKROTIK_API_TLS_CA_FILE.
    UnknownIssuer,
    /// The certificate does not carry the name checked (the address's host, or
    /// MIKROTIK_API_TLS_SERVER_NAME).
    NameMismatch,
    /// The certificate has expired, or is not valid yet.
    Expired,
    /// The certificate's SHA-256 is not MIKROTIK_API_TLS_FINGERPRINT.
    FingerprintMismatch,
    /// Any other reason the certificate is refused (revoked, badly encoded, wrong usage).
    BadCertificate,
    /// The CA file cannot be read or holds no usable certificate.
    BadCaFile,
    /// The TLS settings cannot be used (no way to trust the router, a server name that is
    /// neither a DNS name nor an IP address).
    Settings,
    /// The handshake failed for another reason: an alert from the router, no common protocol
    /// version or cipher suite.
    Handshake,
}

/// The policy a command probably needs, to name it when the router says `not enough
/// permissions` (docs/routeros-api.md §2.6).
fn policy_for(path: &str) -> Option<&'static str> {
    let verb = path.rsplit('/').next().unwrap_or("");
    if path.starts_with("/ip/route/check") {
        Some("test")
    } else if matches!(
        verb,
        "add" | "remove" | "set" | "move" | "enable" | "disable"
    ) {
        Some("write")
    } else if matches!(verb, "print" | "getall") {
        Some("read")
    } else {
        None
    }
}

/// Maps a `!trap` of command `path` to a typed error (docs/routeros-api.md §2.1, §2.3, §2.6).
pub(crate) fn trap_error(path: &str, trap: &Reply) -> RouterError {
    let message = trap.get("message").unwrap_or("(no message)").to_owned();
    let category = trap.get("category").and_then(|c| c.parse::<u8>().ok());
    let command = path.to_owned();
    if message.starts_with("no such item") {
        return RouterError::NotFound {
            what: format!("({message}) for {path}"),
        };
    }
    if message.starts_with("not enough permissions") {
        return RouterError::PermissionDenied {
            command,
            message,
            policy: policy_for(path),
        };
    }
    if path.starts_with("/ip/route/check") && message.starts_with("no such command") {
        return RouterError::Trap {
            command,
            message: format!(
                "{message}: this RouterOS has no /ip/route/check, so the VPN interface cannot be found by itself; set MIKROTIK_IN_INTERFACE"
            ),
            category,
        };
    }
    if message.starts_with("input does not match any value of")
        || message.starts_with("invalid value")
        || message.starts_with("unknown parameter")
        || category == Some(1)
    {
        return RouterError::InvalidValue { command, message };
    }
    RouterError::Trap {
        command,
        message,
        category,
    }
}
