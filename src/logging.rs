//! Log set-up: LOG_LEVEL and LOG_FORMAT (text or json), to standard error.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber. Calling it twice keeps the first one.
pub fn init(level: LogLevel, format: LogFormat) {
    // Our crate at the chosen level; dependencies one step quieter unless debugging.
    let directive = match level {
        LogLevel::Debug => "debug".to_owned(),
        other => format!("warn,double_natpmp={}", other.directive()),
    };
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
