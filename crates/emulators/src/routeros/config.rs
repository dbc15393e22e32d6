//! What the emulated router looks like: users, interfaces, routes, services, addresses.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::nft::NftMirror;

/// A RouterOS user of the emulated router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimUser {
    /// Login name.
    pub name: String,
    /// Plain-text password.
    pub password: String,
    /// Group policies, e.g. `["read", "write", "api", "test"]`.
    pub policies: Vec<String>,
}

impl SimUser {
    /// A user with these policies.
    pub fn new(name: &str, password: &str, policies: &[&str]) -> SimUser {
        SimUser {
            name: name.to_owned(),
            password: password.to_owned(),
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

/// A route `/ip/route/check` can find: `dst/prefix_len` via `gateway` on `interface`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRoute {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
    /// Outgoing interface.
    pub interface: String,
    /// Next hop.
    pub gateway: Ipv4Addr,
}

/// One `/ip/service` entry of the emulated router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimService {
    /// `name`, e.g. `api`.
    pub name: String,
    /// `port`.
    pub port: u16,
    /// `disabled`.
    pub disabled: bool,
}

impl SimService {
    /// RouterOS 7's default services: telnet, ftp, www, ssh, www-ssl (disabled), api, winbox,
    /// api-ssl.
    pub fn defaults() -> Vec<SimService> {
        [
            ("telnet", 23, false),
            ("ftp", 21, false),
            ("www", 80, false),
            ("ssh", 22, false),
            ("www-ssl", 443, true),
            ("api", 8728, false),
            ("winbox", 8291, false),
            ("api-ssl", 8729, false),
        ]
        .into_iter()
        .map(|(name, port, disabled)| SimService {
            name: name.to_owned(),
            port,
            disabled,
        })
        .collect()
    }
}

/// What the emulated router looks like.
#[derive(Clone, Debug)]
pub struct RouterSimConfig {
    /// Users that may log in. Default: `admin` / `admin` with read,write,api,test.
    pub users: Vec<SimUser>,
    /// Interface names `in-interface`/`out-interface` may name. Default: ether1, bridge, wg-proton.
    pub interfaces: Vec<String>,
    /// Routes for `/ip/route/check`. Default: 10.2.0.0/24 on wg-proton via 10.2.0.1, and
    /// 0.0.0.0/0 on ether1 (via 192.168.1.1).
    pub routes: Vec<SimRoute>,
    /// `/system/identity` name. Default `MikroTik`.
    pub identity: String,
    /// RouterOS version, e.g. `7.18.2 (stable)`; `!empty` is sent only from 7.18.
    pub version: String,
    /// Board name. Default `hAP ax2`.
    pub board: String,
    /// When set, connections speak TLS (api-ssl) with this server configuration.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// When set, dst-nat rules are mirrored into nftables in a namespace.
    pub nft_mirror: Option<NftMirror>,
    /// `/interface/print` types by name, over the guess from the name (`wg…` → `wg`,
    /// `bridge…` → `bridge`, else `ether`).
    pub interface_types: Vec<(String, String)>,
    /// `/interface/list/member` rows: (list, interface). Default: none.
    pub interface_lists: Vec<(String, String)>,
    /// `/ip/service` rows. Default: RouterOS 7's.
    pub services: Vec<SimService>,
    /// `/ip/address` rows: (address/prefix, interface). Default: 10.2.0.2/32 on wg-proton and
    /// 192.168.88.1/24 on bridge.
    pub addresses: Vec<(String, String)>,
    /// The RouterOS version whose command tree ([`schema`](super::schema), e.g. `7.22.3`)
    /// decides which arguments a command takes: any other gets `unknown parameter <name>`, as
    /// on that RouterOS. Default: the newest version in the data (7.24); `None` checks
    /// nothing. Apart from `version` (the reported version string, which drives `!empty`),
    /// since the data starts at 7.19.6; [`RouterSim::start`](super::RouterSim::start) refuses
    /// a version the data does not have.
    pub command_tree: Option<String>,
}

impl Default for RouterSimConfig {
    fn default() -> Self {
        RouterSimConfig {
            users: vec![SimUser::new(
                "admin",
                "admin",
                &["read", "write", "api", "test"],
            )],
            interfaces: vec!["ether1".into(), "bridge".into(), "wg-proton".into()],
            routes: vec![
                SimRoute {
                    dst: Ipv4Addr::new(10, 2, 0, 0),
                    prefix_len: 24,
                    interface: "wg-proton".into(),
                    gateway: Ipv4Addr::new(10, 2, 0, 1),
                },
                SimRoute {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    interface: "ether1".into(),
                    gateway: Ipv4Addr::new(192, 168, 1, 1),
                },
            ],
            identity: "MikroTik".into(),
            version: "7.18.2 (stable)".into(),
            board: "hAP ax2".into(),
            tls: None,
            nft_mirror: None,
            interface_types: Vec::new(),
            interface_lists: Vec::new(),
            services: SimService::defaults(),
            addresses: vec![
                ("10.2.0.2/32".into(), "wg-proton".into()),
                ("192.168.88.1/24".into(), "bridge".into()),
            ],
            command_tree: super::schema::newest_version(),
        }
    }
}
