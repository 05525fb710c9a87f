//! The `assent` command: wires configuration, store and server together.

pub mod cli;
pub mod export;
pub mod iab;
pub mod import;
pub mod listen;
pub mod logging;
pub mod migrate;
pub mod serve;

pub use cli::{Cli, Command};
pub use serve::{ExportArgs, LimitArgs, RunningServer, ServeArgs, StoreArgs, TcfArgs};
