//! Log set-up: LOG_LEVEL and LOG_FORMAT (text or json), to standard error.
//!
//! The filter is a plain per-target level table (`tracing_subscriber::filter::Targets`), not
//! `EnvFilter`: it needs no regex engine, which keeps the static binary for small routers lean.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::value::{LogFormat, LogLevel};

fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// Installs the global subscriber. Calling it twice keeps the first one.
pub(crate) fn init(log_level: LogLevel, format: LogFormat) {
    // Our crate at the chosen level; dependencies at WARN unless debugging.
    let ours = level(log_level);
    let others = if log_level == LogLevel::Debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN.min(ours)
    };
    let filter = Targets::new()
        .with_default(others)
        .with_target("double_natpmp", ours);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs (RouterOS /log) show escapes as text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
}
