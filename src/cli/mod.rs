//! The command line: [`main`] parses it and runs the daemon or one of the other subcommands.

pub mod args;
mod bounded;
pub(crate) mod check;
mod check_internet;
pub(crate) mod check_srcnat;
pub(crate) mod client;
#[cfg(feature = "demo")]
pub(crate) mod demo;
#[cfg(feature = "demo")]
mod demo_args;
pub(crate) mod fixes;
pub(crate) mod health;
#[cfg(feature = "demo")]
pub(crate) mod sim;
pub(crate) mod status;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::args::{render_error, Cli, Command};
use crate::config::value::{LogFormat, LogLevel};
use crate::config::DaemonArgs;
use crate::{daemon, logging};

/// The binary's `main`: parses the command line, starts the runtime and runs the chosen
/// subcommand (the daemon when there is none).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", render_error(&e));
            return ExitCode::from(2);
        }
    };
    // One worker thread (beside the main one): the daemon's work waits on the network, a
    // reconcile of 10,000 rules takes some 30 ms of CPU and gives way every 128 rows, and every
    // thread that allocates gets an allocator arena of its own. With a worker per core (two
    // here) the arenas held about 0.6 MiB more at 10,000 mappings (BENCHMARKS.md), with no
    // gain in any figure there.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        None => match Cli::daemon_args(cli.run) {
            Ok(args) => run_daemon(&runtime, args),
            Err(e) => {
                eprintln!("{}", render_error(&e));
                return ExitCode::from(2);
            }
        },
        Some(Command::Run(args)) => run_daemon(&runtime, args),
        #[cfg(feature = "demo")]
        Some(Command::Demo(args)) => {
            logging::init(args.log_level, LogFormat::Text);
            runtime.block_on(demo::run(args)).map_err(|e| e.to_string())
        }
        Some(Command::Client(args)) => {
            logging::init(LogLevel::Warn, LogFormat::Text);
            return runtime.block_on(client::run(args));
        }
        Some(Command::Check(args)) => {
            logging::init(LogLevel::Error, LogFormat::Text);
            return runtime.block_on(check::run(args));
        }
        Some(Command::Health(args)) => return runtime.block_on(health::run(args)),
        Some(Command::Status(args)) => {
            logging::init(LogLevel::Warn, LogFormat::Text);
            return runtime.block_on(status::run(args));
        }
        #[cfg(feature = "demo")]
        Some(Command::SimRouter(args)) => {
            logging::init(LogLevel::Info, LogFormat::Text);
            runtime
                .block_on(async { sim::router(args, daemon::shutdown_on_signals()).await })
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "demo")]
        Some(Command::SimGateway(args)) => {
            logging::init(LogLevel::Info, LogFormat::Text);
            runtime
                .block_on(async { sim::gateway(args, daemon::shutdown_on_signals()).await })
                .map_err(|e| e.to_string())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(runtime: &tokio::runtime::Runtime, args: DaemonArgs) -> Result<(), String> {
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    logging::init(args.log_level, args.log_format);
    runtime
        .block_on(async {
            let shutdown = daemon::shutdown_on_signals();
            daemon::run(args, shutdown).await
        })
        .map_err(|e| e.to_string())
}
