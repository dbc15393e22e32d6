//! Typed RouterOS operations the daemon needs, over the pooled connections: [`RouterApi`],
//! the RouterOS implementation of the mapping core's router seam ([`Router`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::conn::{ApiConfig, Response};
pub(crate) use super::error::{trap_error, RouterError};
use super::nat::{flag, NAT_PROPLIST};
use super::pool::ApiPool;
pub(crate) use crate::mapping::router::seam::{
    DstNatRule, InterfaceInfo, ListMember, NatRule, Router, RouterAddress, RuleId, ServiceInfo,
    SrcNatRule,
};
use double_natpmp_codec::routeros::wire::{Command, Reply};

/// What the router says about itself, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterInfo {
    /// `/system/identity` name.
    pub identity: String,
    /// `/system/resource` version, e.g. `7.18.2 (stable)`.
    pub version: String,
    /// `/system/resource` board-name, if given.
    pub board: Option<String>,
}

/// The response, or the first `!trap` as a typed error.
fn checked(path: &str, resp: Response) -> Result<Response, RouterError> {
    match resp.traps.first() {
        Some(trap) => Err(trap_error(path, trap)),
        None => Ok(resp),
    }
}

/// The id an `add` returned in `!done =ret=`; its absence is an incomplete reply (the rule may
/// exist).
fn new_rule_id(path: &str, resp: Response) -> Result<RuleId, RouterError> {
    match resp.ret() {
        Some(id) if !id.is_empty() => Ok(RuleId::new(id)),
        _ => Err(RouterError::IncompleteReply {
            command: path.into(),
            missing: "=ret= (the new rule's id)",
        }),
    }
}

/// `/ip/firewall/nat/print` of the whole `chain`, with our `.proplist`; a caller may add
/// queries.
fn nat_listing(chain: &str) -> Command {
    Command::new("/ip/firewall/nat/print")
        .attr(".proplist", NAT_PROPLIST)
        .query(format!("chain={chain}"))
}

/// The RouterOS API client the daemon uses: typed operations over a connection pool.
#[derive(Clone, Debug)]
pub struct RouterApi {
    pool: ApiPool,
    address: String,
}

impl RouterApi {
    /// A client with up to `pool_size` connections (MIKROTIK_POOL_SIZE, 4 by default)
    /// where a caller waits at most `wait_timeout` for a free one. Connects lazily; fails only
    /// when the TLS settings cannot be used.
    pub fn new(
        cfg: ApiConfig,
        pool_size: usize,
        wait_timeout: Duration,
    ) -> Result<RouterApi, RouterError> {
        let address = cfg.address.clone();
        Ok(RouterApi {
            pool: ApiPool::new(cfg, pool_size, wait_timeout)?,
            address,
        })
    }

    /// The pool underneath, for status and raw commands.
    pub fn pool(&self) -> &ApiPool {
        &self.pool
    }

    /// Runs a `/ip/firewall/nat/print` and reads its rows.
    async fn nat_rows(&self, cmd: Command) -> Result<Vec<NatRule>, RouterError> {
        let mut rules = Vec::new();
        self.nat_each(cmd, &mut |rule| rules.push(rule)).await?;
        Ok(rules)
    }

    /// Runs a `/ip/firewall/nat/print`, handing each rule to `each` as it arrives; how many
    /// there were.
    async fn nat_each(
        &self,
        cmd: Command,
        each: &mut (dyn FnMut(NatRule) + Send),
    ) -> Result<usize, RouterError> {
        let mut count = 0;
        self.run_each(cmd, &mut |row| {
            count += 1;
            each(NatRule::from_row(row));
        })
        .await?;
        Ok(count)
    }

    /// Runs any command; a `!trap` becomes a typed error.
    pub async fn run(&self, cmd: Command) -> Result<Response, RouterError> {
        let mut rows = Vec::new();
        let mut resp = self.run_each(cmd, &mut |row| rows.push(row)).await?;
        resp.rows = rows;
        Ok(resp)
    }

    /// Like [`RouterApi::run`], with each `!re` row handed to `each` as it arrives.
    pub async fn run_each(
        &self,
        cmd: Command,
        each: &mut (dyn FnMut(Reply) + Send),
    ) -> Result<Response, RouterError> {
        let path = cmd.path.clone();
        // Boxed: a pooled command (checkout, exchange, timeouts) is the largest future here,
        // and every caller's state (a create holds several at once) would carry it inline.
        checked(&path, Box::pin(self.pool.run_each(cmd, each)).await?)
    }

    /// Identity, version and board, for the start-up log.
    pub async fn info(&self) -> Result<RouterInfo, RouterError> {
        let identity = self.run(Command::new("/system/identity/print")).await?;
        let identity = identity
            .rows
            .first()
            .and_then(|r| r.get("name"))
            .unwrap_or("")
            .to_owned();
        let resource = self.run(Command::new("/system/resource/print")).await?;
        let row = resource.rows.first();
        let version = row
            .and_then(|r| r.get("version"))
            .ok_or_else(|| RouterError::Trap {
                command: "/system/resource/print".into(),
                message: "the router did not report its version".into(),
                category: None,
            })?
            .to_owned();
        let board = row.and_then(|r| r.get("board-name")).map(str::to_owned);
        Ok(RouterInfo {
            identity,
            version,
            board,
        })
    }

    /// The address this client talks to.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Router for RouterApi {
    async fn add_dstnat(&self, rule: &DstNatRule) -> Result<RuleId, RouterError> {
        const PATH: &str = "/ip/firewall/nat/add";
        let cmd = Command::new(PATH)
            .attr("chain", "dstnat")
            .attr("action", "dst-nat")
            .attr("protocol", rule.protocol.as_str())
            .attr("in-interface", rule.in_interface.as_str())
            .attr("dst-port", rule.dst_port.to_string())
            .attr("to-addresses", rule.to_address.to_string())
            .attr("to-ports", rule.to_port.to_string())
            .attr("comment", rule.comment.as_str());
        new_rule_id(PATH, self.run(cmd).await?)
    }

    async fn remove_rule(&self, id: &RuleId) -> Result<(), RouterError> {
        let cmd = Command::new("/ip/firewall/nat/remove").attr(".id", id.as_str());
        match self.run(cmd).await {
            Ok(_) => Ok(()),
            Err(RouterError::NotFound { .. }) => Err(RouterError::NotFound {
                what: format!("NAT rule {id}"),
            }),
            Err(e) => Err(e),
        }
    }

    async fn set_comment(&self, id: &RuleId, comment: &str) -> Result<(), RouterError> {
        let cmd = Command::new("/ip/firewall/nat/set")
            .attr(".id", id.as_str())
            .attr("comment", comment);
        self.run(cmd).await.map(|_| ())
    }

    async fn list_dstnat(&self) -> Result<Vec<NatRule>, RouterError> {
        self.nat_rows(nat_listing("dstnat")).await
    }

    async fn scan_dstnat<F: FnMut(NatRule) + Send>(
        &self,
        mut each: F,
    ) -> Result<usize, RouterError> {
        self.nat_each(nat_listing("dstnat"), &mut each).await
    }

    async fn find_dstnat(&self, dst_port: u16) -> Result<Vec<NatRule>, RouterError> {
        let cmd = nat_listing("dstnat").query(format!("dst-port={dst_port}"));
        self.nat_rows(cmd).await
    }

    async fn add_srcnat(&self, rule: &SrcNatRule) -> Result<RuleId, RouterError> {
        const PATH: &str = "/ip/firewall/nat/add";
        let (src, sport, to) = (
            rule.src_address.to_string(),
            rule.src_port.to_string(),
            rule.to_port.to_string(),
        );
        // Two literal commands, so tests/component/routeros_commands.rs checks both argument lists.
        let cmd = match &rule.place_before {
            Some(anchor) => Command::new(PATH)
                .attr("chain", "srcnat")
                .attr("action", "masquerade")
                .attr("protocol", rule.protocol.as_str())
                .attr("src-address", src)
                .attr("src-port", sport)
                .attr("out-interface", rule.out_interface.as_str())
                .attr("to-ports", to)
                .attr("comment", rule.comment.as_str())
                .attr("place-before", anchor.as_str()),
            None => Command::new(PATH)
                .attr("chain", "srcnat")
                .attr("action", "masquerade")
                .attr("protocol", rule.protocol.as_str())
                .attr("src-address", src)
                .attr("src-port", sport)
                .attr("out-interface", rule.out_interface.as_str())
                .attr("to-ports", to)
                .attr("comment", rule.comment.as_str()),
        };
        new_rule_id(PATH, self.run(cmd).await?)
    }

    async fn list_srcnat(&self) -> Result<Vec<NatRule>, RouterError> {
        self.nat_rows(nat_listing("srcnat")).await
    }

    async fn find_srcnat(&self, to_port: u16) -> Result<Vec<NatRule>, RouterError> {
        let cmd = nat_listing("srcnat").query(format!("to-ports={to_port}"));
        self.nat_rows(cmd).await
    }

    async fn list_members(&self) -> Result<Vec<ListMember>, RouterError> {
        let cmd = Command::new("/interface/list/member/print").attr(".proplist", "list,interface");
        let resp = self.run(cmd).await?;
        Ok(resp
            .rows
            .iter()
            .filter_map(|r| {
                Some(ListMember {
                    list: r.get("list")?.to_owned(),
                    interface: r.get("interface")?.to_owned(),
                })
            })
            .collect())
    }

    async fn services(&self) -> Result<Vec<ServiceInfo>, RouterError> {
        let cmd = Command::new("/ip/service/print").attr(".proplist", "name,port,disabled");
        let resp = self.run(cmd).await?;
        Ok(resp
            .rows
            .iter()
            .filter_map(|r| {
                Some(ServiceInfo {
                    name: r.get("name")?.to_owned(),
                    port: r.get("port")?.parse().ok()?,
                    disabled: flag(r, "disabled"),
                })
            })
            .collect())
    }

    async fn interface(&self, name: &str) -> Result<Option<InterfaceInfo>, RouterError> {
        let cmd = Command::new("/interface/print")
            .attr(".proplist", "name,type,running,disabled")
            .query(format!("name={name}"));
        let resp = self.run(cmd).await?;
        Ok(resp.rows.first().map(|r| InterfaceInfo {
            name: r.get("name").unwrap_or(name).to_owned(),
            kind: r.get("type").unwrap_or("").to_owned(),
            running: flag(r, "running"),
            disabled: flag(r, "disabled"),
        }))
    }

    async fn route_interface(&self, dst: Ipv4Addr) -> Result<String, RouterError> {
        const PATH: &str = "/ip/route/check";
        let resp = self
            .run(
                Command::new(PATH)
                    .attr("dst-ip", dst.to_string())
                    .attr("once", ""),
            )
            .await?;
        let row = resp.rows.first().ok_or_else(|| RouterError::Trap {
            command: PATH.into(),
            message: format!("no answer rows for the route to {dst}"),
            category: None,
        })?;
        let status = row.get("status").unwrap_or("");
        match row.get("interface") {
            Some(interface) if status == "ok" && !interface.is_empty() => Ok(interface.to_owned()),
            _ => Err(RouterError::Trap {
                command: PATH.into(),
                message: format!(
                    "the router has no usable route to {dst} (status {status:?}); set MIKROTIK_IN_INTERFACE"
                ),
                category: None,
            }),
        }
    }

    async fn interface_addresses(&self, interface: &str) -> Result<Vec<Ipv4Addr>, RouterError> {
        let cmd = Command::new("/ip/address/print")
            .attr(".proplist", "address,interface,disabled")
            .query(format!("interface={interface}"));
        let resp = self.run(cmd).await?;
        Ok(resp
            .rows
            .iter()
            .filter(|r| !flag(r, "disabled"))
            .filter_map(|r| {
                let address = r.get("address")?;
                address.split('/').next()?.parse().ok()
            })
            .collect())
    }

    async fn addresses(&self) -> Result<Vec<RouterAddress>, RouterError> {
        let cmd = Command::new("/ip/address/print")
            .attr(".proplist", "address,interface,disabled,invalid,dynamic");
        let resp = self.run(cmd).await?;
        Ok(resp
            .rows
            .iter()
            .filter_map(RouterAddress::from_row)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use double_natpmp_codec::routeros::wire::ReplyKind;

    fn trap(message: &str, category: Option<&str>) -> Reply {
        let r = Reply::new(ReplyKind::Trap).attr("message", message);
        match category {
            Some(c) => r.attr("category", c),
            None => r,
        }
    }

    #[test]
    fn no_such_item_maps_to_not_found() {
        let e = trap_error("/ip/firewall/nat/remove", &trap("no such item (4)", None));
        assert!(matches!(e, RouterError::NotFound { .. }), "{e}");
    }

    #[test]
    fn permission_denied_names_the_policy_by_command() {
        for (path, policy) in [
            ("/ip/firewall/nat/add", "write"),
            ("/ip/firewall/nat/remove", "write"),
            ("/ip/firewall/nat/print", "read"),
            ("/ip/route/check", "test"),
        ] {
            let e = trap_error(path, &trap("not enough permissions (9)", None));
            match &e {
                RouterError::PermissionDenied { policy: p, .. } => assert_eq!(*p, Some(policy)),
                other => panic!("{path}: {other}"),
            }
            assert!(e.to_string().contains(&format!("'{policy}' policy")), "{e}");
        }
    }

    #[test]
    fn bad_values_map_to_invalid_value() {
        for (msg, cat) in [
            ("input does not match any value of in-interface", Some("1")),
            ("invalid value for argument dst-port", None),
            ("unknown parameter foo", None),
            ("something odd", Some("1")),
        ] {
            let e = trap_error("/ip/firewall/nat/add", &trap(msg, cat));
            assert!(matches!(e, RouterError::InvalidValue { .. }), "{msg}: {e}");
        }
    }

    #[test]
    fn missing_route_check_says_to_set_the_interface() {
        let e = trap_error("/ip/route/check", &trap("no such command", Some("0")));
        assert!(e.to_string().contains("MIKROTIK_IN_INTERFACE"), "{e}");
    }

    #[test]
    fn other_traps_keep_their_text_and_category() {
        let e = trap_error(
            "/x/add",
            &trap("failure: already have such rule", Some("4")),
        );
        match e {
            RouterError::Trap {
                message, category, ..
            } => {
                assert_eq!(message, "failure: already have such rule");
                assert_eq!(category, Some(4));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn nat_row_is_read_with_flags_and_missing_fields() {
        let row = Reply::new(ReplyKind::Re)
            .attr(".id", "*1F")
            .attr("chain", "dstnat")
            .attr("dst-port", "40001")
            .attr("disabled", "false")
            .attr("dynamic", "true");
        let r = NatRule::from_row(row);
        assert_eq!(r.id, Some(RuleId::new("*1F")));
        assert_eq!(r.dst_port.as_deref(), Some("40001"));
        assert_eq!(r.comment, None);
        assert!(!r.disabled);
        assert!(r.dynamic);
    }
}
