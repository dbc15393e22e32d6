//! The command line: the subcommands and their arguments ([`Cli`], [`Command`]), and how a
//! parse error is shown ([`render_error`]: one line naming the environment variable).
//!
//! The daemon's own settings are [`DaemonArgs`] in `config`; the subcommands' argument types
//! that belong to one subcommand live with it (`check`, `client`, `health`).

use clap::{Parser, Subcommand};

use crate::cli::check::CheckArgs;
use crate::cli::client::ClientArgs;
#[cfg(feature = "demo")]
pub use crate::cli::demo_args::{DemoArgs, SimGatewayArgs, SimRouterArgs};
use crate::cli::health::HealthArgs;
use crate::cli::status::StatusCmdArgs;
use crate::config::DaemonArgs;

/// `double-natpmp`: the daemon (default) and its helper subcommands.
#[derive(Debug, Parser)]
#[command(
    name = "double-natpmp",
    version,
    about = "NAT-PMP for LAN clients behind a MikroTik router, through a VPN gateway that speaks NAT-PMP",
    long_about = "NAT-PMP for LAN clients behind a MikroTik router, through a VPN gateway that \
                  speaks NAT-PMP (ProtonVPN-style).\n\nWithout a subcommand it runs the daemon, \
                  configured by the environment variables shown with each option.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to run; the daemon when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The daemon's settings, when no subcommand is given; here so that they are checked and
    /// shown in `--help`. Always `None` in practice (clap does not tell whether a group with a
    /// nested flatten is present): use [`Cli::daemon_args`].
    #[command(flatten)]
    pub run: Option<DaemonArgs>,
}

/// The daemon's settings alone, parsed again when [`Cli::run`] is `None`.
#[derive(Debug, Parser)]
#[command(name = "double-natpmp")]
struct DaemonOnly {
    #[command(flatten)]
    run: DaemonArgs,
}

impl Cli {
    /// The daemon's settings when no subcommand was given, from the process's flags and
    /// environment alike.
    pub fn daemon_args(run: Option<DaemonArgs>) -> Result<DaemonArgs, clap::Error> {
        match run {
            Some(args) => Ok(args),
            None => DaemonOnly::try_parse().map(|d| d.run),
        }
    }
}

/// The daemon's settings alone from `argv` (program name first) and the environment: for the
/// demo and tests, which build a daemon's settings themselves.
pub fn daemon_args_from<I, T>(argv: I) -> Result<DaemonArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    DaemonOnly::try_parse_from(argv).map(|d| d.run)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the same as giving no subcommand).
    Run(DaemonArgs),
    /// Run the daemon against built-in RouterOS and VPN-gateway emulators on loopback.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Ask a NAT-PMP gateway for the external address, or map or delete a port (like natpmpc).
    Client(ClientArgs),
    /// Diagnose a set-up: router API, login, policies, VPN interface, upstream NAT-PMP, and a
    /// test mapping made and removed on both layers; with --from-internet, have the running
    /// daemon prove its forwarded port from the internet.
    Check(CheckArgs),
    /// Exit 0 when the daemon answers NAT-PMP (for a container HEALTHCHECK; needs no shell).
    Health(HealthArgs),
    /// Print the daemon's mappings as a table, from its status server (STATUS_ADDR).
    Status(StatusCmdArgs),
    /// (testing) Run only the NAT-PMP gateway emulator.
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    SimGateway(SimGatewayArgs),
    /// (testing) Run only the RouterOS API emulator.
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    SimRouter(SimRouterArgs),
}

/// Renders a clap error as one line that names the environment variable, the value and what is
/// expected. Help and version output pass through unchanged.
pub fn render_error(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let cmd = <Cli as clap::CommandFactory>::command();
    let arg_name = |ctx: Option<&ContextValue>| -> Option<String> {
        match ctx {
            Some(ContextValue::String(s)) => Some(s.clone()),
            Some(ContextValue::Strings(v)) => v.first().cloned(),
            _ => None,
        }
    };
    // "--vpn-gateway <VPN_GATEWAY>" -> the env var of the arg with that long name.
    let env_of = |rendered: &str| -> String {
        let long = rendered
            .trim_start_matches('-')
            .split([' ', '='])
            .next()
            .unwrap_or_default()
            .to_owned();
        find_env(&cmd, &long).unwrap_or_else(|| rendered.to_owned())
    };
    match err.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let arg = arg_name(err.get(ContextKind::InvalidArg)).unwrap_or_default();
            let value = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            let why = std::error::Error::source(err)
                .map(|s| s.to_string())
                .or_else(|| match err.get(ContextKind::ValidValue) {
                    Some(ContextValue::Strings(v)) => {
                        Some(format!("expected one of {}", v.join(", ")))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| "invalid value".to_owned());
            if is_secret(
                &cmd,
                arg.trim_start_matches('-')
                    .split([' ', '='])
                    .next()
                    .unwrap_or_default(),
            ) {
                // A secret's value is never shown, not even a wrong one (it may be nearly right).
                return format!("error: {}: {} (the value is not shown)", env_of(&arg), why);
            }
            format!("error: {}='{}': {}", env_of(&arg), value, why)
        }
        ErrorKind::MissingRequiredArgument => {
            let names: Vec<String> = match err.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(v)) => v.iter().map(|a| env_of(a)).collect(),
                Some(ContextValue::String(s)) => vec![env_of(s)],
                _ => Vec::new(),
            };
            let extra = if names.iter().any(|n| n == "MIKROTIK_API_PASSWORD") {
                " (or MIKROTIK_API_PASSWORD_FILE)"
            } else {
                ""
            };
            let verb = if names.len() == 1 { "is" } else { "are" };
            format!(
                "error: {} {verb} not set{extra}; see --help",
                names.join(", ")
            )
        }
        _ => err.to_string().trim_end().to_owned(),
    }
}

/// Whether the argument with this long name holds a secret (its env value is hidden).
fn is_secret(cmd: &clap::Command, long: &str) -> bool {
    cmd.get_arguments()
        .any(|a| a.get_long() == Some(long) && a.is_hide_env_values_set())
        || cmd.get_subcommands().any(|sub| is_secret(sub, long))
}

fn find_env(cmd: &clap::Command, long: &str) -> Option<String> {
    for arg in cmd.get_arguments() {
        if arg.get_long() == Some(long) {
            return arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .or_else(|| Some(format!("--{long}")));
        }
    }
    cmd.get_subcommands().find_map(|sub| find_env(sub, long))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_value_error_names_variable_value_and_expectation() {
        let err = Cli::try_parse_from([
            "double-natpmp",
            "--vpn-gateway",
            "notanip",
            "--mikrotik-api-address",
            "r",
            "--mikrotik-api-password",
            "p",
        ])
        .unwrap_err();
        let line = render_error(&err);
        assert!(line.contains("VPN_GATEWAY"), "{line}");
        assert!(line.contains("'notanip'"), "{line}");
        assert!(line.contains("IPv4"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn zero_upstream_retry_error_names_variable_value_and_bounds() {
        let err = daemon_args_from([
            "double-natpmp",
            "--vpn-gateway=10.2.0.1",
            "--mikrotik-api-address=r",
            "--mikrotik-api-password=p",
            "--upstream-retry=0",
        ])
        .unwrap_err();
        let line = render_error(&err);
        assert!(
            line.starts_with("error: UPSTREAM_RETRY='0': expected a duration from 1ms to 1d"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn no_debug_of_a_parsed_command_line_shows_a_password() {
        let secret = "s3cret-Pa55";
        let password = format!("--mikrotik-api-password={secret}");
        let check = Cli::try_parse_from([
            "double-natpmp",
            "check",
            "--vpn-gateway=10.2.0.1",
            "--mikrotik-api-address=r",
            &password,
        ])
        .unwrap();
        let run = daemon_args_from([
            "double-natpmp",
            "--vpn-gateway=10.2.0.1",
            "--mikrotik-api-address=r",
            &password,
        ])
        .unwrap();
        let sim = Cli::try_parse_from([
            "double-natpmp",
            "sim-router",
            &format!("--password={secret}"),
        ])
        .unwrap();
        for shown in [
            format!("{check:?}"),
            format!("{run:?}"),
            format!("{sim:#?}"),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        match sim.command {
            Some(Command::SimRouter(args)) => assert_eq!(args.password.expose(), secret),
            other => panic!("not sim-router: {other:?}"),
        }
    }
}
