//! Command-line interface.

use crate::serve::{ServeArgs, StoreArgs};
use assent_model::OrganizationId;
use clap::{Args, Parser, Subcommand};

/// Assent: consent and preference management compatible with the Didomi Consents API.
#[derive(Debug, Parser)]
#[command(name = "assent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Apply the schema migrations and stop; or, with `--from` and `--to`, copy an embedded
    /// store into PostgreSQL.
    Migrate(crate::migrate::MigrateArgs),
    /// Send consent history from NDJSON, JSON or CSV files to a server, in batches of 100.
    Import(crate::import::ImportArgs),
    /// Export an organization's users and events as gzip NDJSON in Didomi's batch-export
    /// layout, straight from the store.
    Export(crate::export::ExportArgs),
    /// Decode or encode IAB TCF consent strings.
    #[command(subcommand)]
    Tcf(crate::iab::TcfCommand),
    /// Decode or encode IAB GPP strings.
    #[command(subcommand)]
    Gpp(crate::iab::GppCommand),
}

/// `assent keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and its organization if needed); prints it as JSON with its secret,
    /// which is shown only this once.
    Create(KeysCreateArgs),
}

/// Arguments of `assent keys create`.
#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// The organization the key acts for; created if it does not exist.
    #[arg(long)]
    pub organization: String,
    /// A name to recognise the key by.
    #[arg(long)]
    pub name: Option<String>,
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `assent keys create`: returns the JSON line to print.
pub async fn create_key(args: &KeysCreateArgs) -> Result<String, String> {
    let org =
        OrganizationId::parse(&args.organization).map_err(|e| format!("--organization {e}"))?;
    if let Some(name) = &args.name
        && let Err(e) = assent_model::ids::check_identifier(name)
    {
        return Err(format!("--name {e}"));
    }
    let issued = assent_server::keys::issue(org, args.name.clone());
    match args.store.postgres()? {
        Some(config) => {
            use assent_store::Store;
            let store = assent_store::postgres::PgStore::connect(&config)
                .await
                .map_err(|e| e.to_string())?;
            store
                .create_api_key(issued.record.clone())
                .await
                .map_err(|e| format!("cannot store the key: {e}"))?;
        }
        // Straight into the file: this works while a server runs on the same directory.
        None => assent_store::sqlite::create_api_key_offline(&args.store.data_dir, &issued.record)
            .map_err(|e| {
                format!(
                    "cannot store the key in {}: {e}",
                    args.store.data_dir.display()
                )
            })?,
    }
    Ok(key_json(&issued))
}

/// The one-line JSON that shows a new key and its secret.
pub fn key_json(issued: &assent_server::keys::IssuedKey) -> String {
    serde_json::json!({
        "organization_id": issued.record.organization_id.as_str(),
        "id": issued.record.id,
        "key": issued.record.key,
        "secret": issued.secret,
    })
    .to_string()
}
