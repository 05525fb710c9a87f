//! `assent tcf` and `assent gpp`: IAB strings decoded to JSON, and JSON encoded to strings,
//! with the `assent-tcf` crate the server uses.

use clap::Subcommand;
use std::io::Read;

/// `assent tcf ...`: IAB TCF v2.2 consent strings.
#[derive(Debug, Subcommand)]
pub enum TcfCommand {
    /// Print the fields of a TC string as JSON.
    Decode {
        /// The TC string.
        string: String,
    },
    /// Read the fields as JSON on standard input (the shape `decode` prints) and print the TC
    /// string.
    Encode,
}

/// `assent gpp ...`: IAB GPP strings (header, `tcfeuv2`, `uspv1`, `usnat`).
#[derive(Debug, Subcommand)]
pub enum GppCommand {
    /// Print the sections of a GPP string as JSON.
    Decode {
        /// The GPP string.
        string: String,
    },
    /// Read the sections as JSON on standard input (the shape `decode` prints) and print the
    /// GPP string.
    Encode,
}

/// Runs `assent tcf`: returns what to print, or the error as one sentence.
pub fn tcf(command: &TcfCommand, input: impl Read) -> Result<String, String> {
    match command {
        TcfCommand::Decode { string } => {
            let model = assent_tcf::decode(string.trim())
                .map_err(|e| format!("not a valid TC string: {e}"))?;
            to_json(&model)
        }
        TcfCommand::Encode => {
            let model: assent_tcf::TcModel = from_json(input, "TC string")?;
            assent_tcf::encode(&model).map_err(|e| e.to_string())
        }
    }
}

/// Runs `assent gpp`: returns what to print, or the error as one sentence.
pub fn gpp(command: &GppCommand, input: impl Read) -> Result<String, String> {
    match command {
        GppCommand::Decode { string } => {
            let gpp = assent_tcf::gpp::decode(string.trim())
                .map_err(|e| format!("not a valid GPP string: {e}"))?;
            to_json(&gpp)
        }
        GppCommand::Encode => {
            let gpp: assent_tcf::gpp::GppString = from_json(input, "GPP string")?;
            assent_tcf::gpp::encode(&gpp).map_err(|e| e.to_string())
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| format!("cannot write the fields as JSON: {e}"))
}

fn from_json<T: serde::de::DeserializeOwned>(
    mut input: impl Read,
    what: &str,
) -> Result<T, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("standard input does not hold the fields of a {what}: {e}"))
}
