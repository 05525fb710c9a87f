//! The `assent` binary: parses the command line and runs it.

/// mimalloc: the write path allocates per event, and glibc's allocator spent a third of the
/// writer's time in malloc and free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use assent::cli::{Cli, Command, KeysCommand, create_key, key_json};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    assent::logging::init();
    let result = match cli.command {
        Command::Keys(KeysCommand::Create(args)) => runtime()
            .and_then(|rt| rt.block_on(create_key(&args)))
            .map(|line| println!("{line}")),
        Command::Migrate(args) => runtime().and_then(|rt| rt.block_on(assent::migrate::run(args))),
        Command::Serve(args) => serve(args),
        Command::Tcf(command) => {
            assent::iab::tcf(&command, std::io::stdin().lock()).map(|out| println!("{out}"))
        }
        Command::Gpp(command) => {
            assent::iab::gpp(&command, std::io::stdin().lock()).map(|out| println!("{out}"))
        }
        Command::Import(args) => runtime().and_then(|rt| {
            let summary = rt.block_on(assent::import::run(args))?;
            println!("{summary}");
            Ok(())
        }),
        Command::Export(args) => runtime().and_then(|rt| {
            let summary = rt.block_on(assent::export::run(args))?;
            println!("{summary}");
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("assent: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn serve(args: assent::ServeArgs) -> Result<(), String> {
    runtime()?.block_on(async {
        let server = assent::serve::start(args).await?;
        if let Some(key) = &server.bootstrap_key {
            println!(
                "Created organization 'default' and its first API key. \
                 Keep the secret: it is shown only this once."
            );
            println!("{}", key_json(key));
        }
        println!("Assent listening on http://{}", server.addr);
        let (_, stop, task) = server.into_parts();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests under way and pending writes");
            let _ = stop.send(());
        });
        task.await
            .map_err(|e| format!("the server task failed: {e}"))?
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can listen for SIGTERM");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
