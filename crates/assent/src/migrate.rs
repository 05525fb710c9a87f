//! `assent migrate`: apply the schema migrations alone, or copy an embedded store into
//! PostgreSQL.

use crate::serve::StoreArgs;
use assent_store::postgres::{PgStore, PostgresConfig};
use assent_store::sqlite::{SqliteConfig, SqliteStore};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `assent migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Copy from this embedded store (`sqlite:DIR`) …
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// … into this PostgreSQL database (`postgres://…`). Resumable: run it again after an
    /// interruption and it continues where it stopped.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Without `--from`/`--to`: the store whose schema to migrate.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `assent migrate`.
pub async fn run(args: MigrateArgs) -> Result<(), String> {
    match (&args.from, &args.to) {
        (Some(from), Some(to)) => copy(from, to).await,
        _ => migrate_only(&args.store).await,
    }
}

async fn migrate_only(store: &StoreArgs) -> Result<(), String> {
    match store.postgres()? {
        Some(config) => {
            let pg = PgStore::connect_unmigrated(&config)
                .await
                .map_err(|e| e.to_string())?;
            let version = pg.migrate().await.map_err(|e| e.to_string())?;
            println!("PostgreSQL schema is at version {version}");
        }
        None => {
            let config = SqliteConfig::new(&store.data_dir);
            let dir = store.data_dir.clone();
            tokio::task::spawn_blocking(move || SqliteStore::open(config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot open the store in {}: {e}", dir.display()))?;
            println!(
                "SQLite schema in {} is at version {}",
                store.data_dir.display(),
                assent_store::sqlite::SCHEMA_VERSION
            );
        }
    }
    Ok(())
}

async fn copy(from: &str, to: &str) -> Result<(), String> {
    let dir = PathBuf::from(
        from.strip_prefix("sqlite:")
            .ok_or("--from must be sqlite:DIR (the data directory of an embedded store)")?,
    );
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err("--to must be a postgres:// URL".into());
    }
    let target = PostgresConfig {
        url: to.to_owned(),
        pool_size: 2,
    };
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(0);
    if terminal {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>13} [{bar:40}] {pos}/{len} rows, {per_sec}, eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut phase = "";
    let report = assent_store::copy::sqlite_to_postgres(&dir, &target, |p| {
        if p.phase != phase {
            phase = p.phase;
            bar.set_message(p.phase);
            bar.set_length(p.total);
            bar.reset_eta();
        }
        bar.set_position(p.done);
        // Without a terminal, a plain line every few seconds and at the end of each table.
        if !terminal && (last_line.elapsed() > Duration::from_secs(5) || p.done == p.total) {
            eprintln!("{}: {}/{} rows", p.phase, p.done, p.total);
            last_line = Instant::now();
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!(
        "Copied {} organizations, {} API keys, {} integrations, {} secrets, {} proofs, {} users and {} events in {:.1} s{}; counts verified.",
        report.organizations,
        report.api_keys,
        report.integrations,
        report.secrets,
        report.proofs,
        report.users,
        report.events,
        started.elapsed().as_secs_f64(),
        if report.resumed {
            " (continuing an interrupted copy)"
        } else {
            ""
        }
    );
    if report.purposes + report.settings > 0 {
        println!(
            "Copied {} purposes ({} versions) and {} settings.",
            report.purposes, report.purpose_versions, report.settings
        );
    }
    Ok(())
}
