//! `colloquium`: the node binary.
//!
//! - [`cli`]: arguments and subcommands.
//! - [`node`]: `run`: opens the store, wires sources and the API onto one listener, and shuts
//!   down cleanly on SIGINT/SIGTERM.
//! - [`accept`]: the [`Accept`](colloquium_ingest::Accept) handle that makes ingested batches
//!   durable in the store.
//! - [`control`]: the control plane's clock and the lane metrics.
//! - [`server`]: the HTTP/1.1 listener: connection cap, header deadline, draining.
//! - [`registry`]: every stage kind, one line each.
//! - [`reload`]: hot reload of the config file (file watch, SIGHUP, `POST /admin/reload`).
//! - [`replay`]: `replay`: NDJSON of a stopped node's events.
//! - [`bench`]: `bench http`: the load generator behind BENCHMARKS.md.
//! - [`computo`]: `computo`: evaluate a script on JSON files, as the conformance suite does.

mod accept;
mod allocator;
mod anomaly;
mod backup;
mod bench;
mod bench_kafka;
mod cli;
mod client;
mod computo;
mod control;
mod node;
mod registry;
mod reload;
mod replay;
mod security;
mod server;
mod tap;
mod top;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use colloquium_config::Config;
use colloquium_pipeline::Topology;
use colloquium_telemetry::logging;

use crate::cli::{Cli, Command, ConfigArgs};

/// glibc's allocator took about 40% of the pipeline worker's time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_)) {
        allocator::return_memory_after_bursts();
    }
    // A node logs its lifecycle; one-shot commands speak only when something is wrong.
    let level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    logging::init(cli.log_format.into(), level);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let Some(config) = load_config(&args.config)? else {
                return Ok(ExitCode::FAILURE);
            };
            let config = args.apply(config);
            runtime()?.block_on(node::run(config, args))?;
        }
        Command::Validate(args) => {
            let errors = validate(&args)?;
            if !errors.is_empty() {
                print_invalid(&args, &errors);
                return Ok(ExitCode::FAILURE);
            }
            println!("{}: ok", args.describe());
        }
        Command::Test(args) => {
            let Some(config) = load_config(&args)? else {
                return Ok(ExitCode::FAILURE);
            };
            return Ok(config_tests(&args, &config));
        }
        Command::Replay(args) => {
            let Some(config) = load_config(&args.config)? else {
                return Ok(ExitCode::FAILURE);
            };
            replay::run(&args, config)?;
        }
        Command::Computo(args) => computo::run(&args)?,
        Command::Anomaly(args) => anomaly::run(&args)?,
        Command::Token => security::print_new_token()?,
        Command::Backup(args) => runtime()?.block_on(backup::backup(&args))?,
        Command::Restore(args) => backup::restore(&args)?,
        Command::Tap(args) => runtime()?.block_on(tap::run(&args))?,
        Command::Top(args) => runtime()?.block_on(top::run(&args))?,
        Command::Bench(args) => runtime()?.block_on(bench::run(args))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the config's `tests:` and prints a line per test, with what differed.
fn config_tests(args: &ConfigArgs, config: &Config) -> ExitCode {
    let kinds = match registry::with_ai(registry::registry(), config, None) {
        Ok((kinds, _)) => kinds,
        Err(error) => {
            print_invalid(args, &[error]);
            return ExitCode::FAILURE;
        }
    };
    let results = match colloquium_pipeline::run_tests(config, &kinds) {
        Ok(results) => results,
        Err(errors) => {
            print_invalid(args, &errors);
            return ExitCode::FAILURE;
        }
    };
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for result in &results {
        match &result.failure {
            None => println!("test {} ... ok", result.name),
            Some(report) => {
                println!("test {} ... FAILED", result.name);
                for line in report.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    println!(
        "{}: {} tests, {} passed, {failed} failed",
        args.describe(),
        results.len(),
        results.len() - failed
    );
    if failed == 0 && !results.is_empty() {
        ExitCode::SUCCESS
    } else {
        if results.is_empty() {
            eprintln!("error: {} has no `tests:`", args.describe());
        }
        ExitCode::FAILURE
    }
}

fn print_invalid(args: &ConfigArgs, errors: &[colloquium_config::ConfigError]) {
    eprintln!("error: invalid config {}:", args.describe());
    for error in errors {
        eprintln!("  {error}");
    }
}

/// Every problem of the config named by `args`: its shape and values, and, when it has the
/// right shape, every script, stage and sink built as a node would (each problem once).
fn validate(args: &ConfigArgs) -> anyhow::Result<Vec<colloquium_config::ConfigError>> {
    let checked = match &args.config {
        None => colloquium_config::Checked::ok(Config::default()),
        Some(path) => colloquium_config::check_file(path)
            .with_context(|| format!("loading config {}", path.display()))?,
    };
    let mut errors = checked.errors.clone();
    if let Some(config) = &checked.config {
        let metrics = colloquium_ingest::IngestMetrics::register(&Default::default());
        let settings = node::ingest_settings(config);
        let sources = colloquium_ingest::source::check_sources(
            &registry::sources(),
            &config.sources,
            &settings,
            &metrics,
        );
        for error in sources.into_iter().filter_map(|e| checked.place(e)) {
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
    }
    let kinds = match &checked.config {
        Some(config) => {
            registry::with_ai(registry::registry(), config, None).map(|(kinds, _)| kinds)
        }
        None => Ok(registry::registry()),
    };
    let kinds = kinds.unwrap_or_else(|error| {
        if let Some(error) = checked.place(error)
            && !errors.contains(&error)
        {
            errors.push(error);
        }
        registry::registry()
    });
    if let Some(config) = &checked.config
        && let Err(built) = Topology::build(config, &kinds)
    {
        for error in built.into_iter().filter_map(|e| checked.place(e)) {
            // A script file that could not be read is reported by the loader already.
            let unread = error.message == "the script file was not loaded"
                && errors.iter().any(|e| e.path == error.path);
            if !unread && !errors.contains(&error) {
                errors.push(error);
            }
        }
    }
    Ok(errors)
}

/// Loads the config named by `args` (or the default); `None` after printing every error.
fn load_config(args: &ConfigArgs) -> anyhow::Result<Option<Config>> {
    let Some(path) = &args.config else {
        return Ok(Some(Config::default()));
    };
    match colloquium_config::from_file(path) {
        Ok(config) => Ok(Some(config)),
        Err(colloquium_config::LoadError::Invalid(errors)) => {
            print_invalid(args, &errors);
            Ok(None)
        }
        Err(error) => {
            Err(anyhow::Error::new(error).context(format!("loading config {}", path.display())))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(allocator::idle::on_thread_park)
        .build()?)
}
