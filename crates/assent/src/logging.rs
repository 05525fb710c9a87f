//! The log: `ASSENT_LOG` (default `info`) filters what goes to stderr, and the database driver
//! is kept quiet.
//!
//! At debug level the PostgreSQL driver logs every statement with its parameters: user ids,
//! event bodies, proof bytes, key hashes. Logs must never hold those, so the driver is held to
//! `info` at most unless the filter names it explicitly (`ASSENT_LOG=debug,tokio_postgres=debug`),
//! which an operator chasing a database problem may do on purpose.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The variable that sets the log filter.
pub const LOG_VARIABLE: &str = "ASSENT_LOG";

/// Crates that log request data at debug level, and the most they may log.
const QUIET: &[(&str, LevelFilter)] = &[("tokio_postgres", LevelFilter::INFO)];

/// The filter of `spec` (the value of `ASSENT_LOG`; `None`, empty or invalid: `info`).
pub fn filter(spec: Option<&str>) -> EnvFilter {
    spec.map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// The ceiling on the quiet crates that `spec` does not name.
pub fn ceiling(spec: Option<&str>) -> Targets {
    QUIET
        .iter()
        .filter(|(target, _)| !spec.is_some_and(|s| s.contains(target)))
        .fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |targets, (target, level)| targets.with_target(*target, *level),
        )
}

/// Sends the log to stderr, filtered by `ASSENT_LOG`.
pub fn init() {
    let spec = std::env::var(LOG_VARIABLE).ok();
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter(spec.as_deref()))
                .with_filter(ceiling(spec.as_deref())),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::{ceiling, filter};
    use tracing::Level;

    #[test]
    fn the_database_driver_is_held_to_info_unless_named() {
        let held = ceiling(Some("debug"));
        assert!(!held.would_enable("tokio_postgres::query", &Level::DEBUG));
        assert!(held.would_enable("tokio_postgres::connection", &Level::INFO));
        assert!(held.would_enable("assent_server", &Level::TRACE));
        assert!(!ceiling(None).would_enable("tokio_postgres::query", &Level::DEBUG));
        let named = ceiling(Some("debug,tokio_postgres=debug"));
        assert!(named.would_enable("tokio_postgres::query", &Level::DEBUG));
    }

    #[test]
    fn the_filter_defaults_to_info() {
        assert_eq!(filter(None).to_string(), "info");
        assert_eq!(filter(Some(" ")).to_string(), "info");
        assert_eq!(filter(Some("not a filter[")).to_string(), "info");
        assert_eq!(filter(Some("warn")).to_string(), "warn");
    }
}
