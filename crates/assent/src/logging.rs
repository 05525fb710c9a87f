//! The log filter: `ASSENT_LOG` (default `info`), with the database driver kept quiet.
//!
//! At debug level the PostgreSQL driver logs every statement with its parameters: user ids,
//! event bodies, proof bytes, key hashes. Logs must never hold those, so the driver is capped
//! at `info` unless the filter names it explicitly (`ASSENT_LOG=debug,tokio_postgres=debug`),
//! which an operator chasing a database problem may do on purpose.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// The variable that sets the log filter.
pub const LOG_VARIABLE: &str = "ASSENT_LOG";

/// Crates that log request data at debug level, and the level they are held to.
const QUIET: &[&str] = &["tokio_postgres=info"];

/// The filter for `spec` (the value of `ASSENT_LOG`; `None` or invalid: `info`).
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.map(str::trim).filter(|s| !s.is_empty());
    let mut filter = spec
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    for quiet in QUIET {
        let target = quiet.split('=').next().unwrap_or(quiet);
        if !spec.is_some_and(|s| s.contains(target)) {
            filter = filter.add_directive(quiet.parse::<Directive>().expect("a valid directive"));
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn the_database_driver_is_quiet_unless_named() {
        assert_eq!(filter(None).to_string(), "tokio_postgres=info,info");
        assert_eq!(
            filter(Some("debug")).to_string(),
            "tokio_postgres=info,debug"
        );
        assert_eq!(
            filter(Some("debug,tokio_postgres=debug")).to_string(),
            "tokio_postgres=debug,debug"
        );
        assert_eq!(
            filter(Some("not a filter[")).to_string(),
            "tokio_postgres=info,info"
        );
    }
}
