//! The `skiff` binary: parse arguments, set up logging, run, map errors to exit codes.

use clap::Parser;

// The API server works on serde_json trees and components decode watch streams: many small,
// short-lived allocations across threads, where glibc's allocator spent a third of the API
// server's CPU time (consolidating and unlinking chunks) and fragmented component heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = skiff_cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("skiff: starting the async runtime failed: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(skiff_cli::run(cli)) {
        let mut message = format!("skiff: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("{message}");
        std::process::exit(err.exit_code());
    }
}
