//! `colloquium backup` asks a running node for a backup (`POST /admin/backup`: the node takes
//! it while ingest goes on), with its progress on a terminal; `--list` reads a backup
//! directory. `colloquium restore` writes a backup into a new data directory, offline.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use colloquium_storage::{BackupInfo, BackupOutcome};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::{BackupArgs, RestoreArgs};

/// Runs `colloquium backup`.
pub async fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    if args.list {
        let backups = colloquium_storage::backup::list_backups(&args.to)?;
        print_list(&backups);
        return Ok(());
    }
    // The node resolves the directory on its machine: send it absolute, as meant here.
    let to = std::path::absolute(&args.to).context("--to")?;
    let client = crate::client::http_client(&args.credentials)?;
    let url = |path: &str| format!("{}{path}", args.admin.trim_end_matches('/'));
    let body = serde_json::json!({ "to": to, "keep": args.keep });
    let request = client
        .post(url("/admin/backup"))
        .header("content-type", "application/json")
        .body(body.to_string());
    let call = tokio::spawn(request.send());
    // A spinner with the bytes written, not a bar: an incremental backup writes only what is
    // new, so the store's size is an upper bound, not the end.
    let spinner = std::io::stderr().is_terminal().then(|| {
        let spinner = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} backup: {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message("starting");
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    });
    while !call.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(spinner) = &spinner
            && let Some((written, store)) = progress(&client, &url("/admin/backup")).await
        {
            spinner.set_message(format!(
                "{} written (the store holds {})",
                indicatif::HumanBytes(written),
                indicatif::HumanBytes(store)
            ));
        }
    }
    let response = call
        .await
        .context("backup request")?
        .with_context(|| format!("asking the node at {} for a backup", args.admin))?;
    if let Some(spinner) = &spinner {
        spinner.finish_and_clear();
    }
    let response = crate::client::check(response, "the backup").await?;
    let text = response.text().await.context("reading the node's answer")?;
    let BackupOutcome {
        backup,
        kept,
        pruned,
    } = serde_json::from_str(&text).context("the node's answer is not a backup outcome")?;
    println!(
        "backup {} in {}: {} files, {} (verified); {} kept, {pruned} pruned",
        backup.id,
        to.display(),
        backup.files,
        indicatif::HumanBytes(backup.size),
        kept.len(),
    );
    Ok(())
}

/// The running backup's (written, store) bytes, if the node says.
async fn progress(client: &reqwest::Client, url: &str) -> Option<(u64, u64)> {
    let body = client.get(url).send().await.ok()?.bytes().await.ok()?;
    let status: Value = serde_json::from_slice(&body).ok()?;
    let running = status.get("running")?;
    Some((
        running["written_bytes"].as_u64()?,
        running["store_bytes"].as_u64()?,
    ))
}

fn print_list(backups: &[BackupInfo]) {
    println!(
        "{:>4}  {:<20}  {:>10}  {:>6}",
        "id", "taken (UTC)", "size", "files"
    );
    for b in backups {
        let taken =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(b.timestamp).unwrap_or(0));
        let taken = humantime::format_rfc3339_seconds(taken).to_string();
        println!(
            "{:>4}  {:<20}  {:>10}  {:>6}",
            b.id,
            taken,
            indicatif::HumanBytes(b.size).to_string(),
            b.files
        );
    }
}

/// Runs `colloquium restore`.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let restored = colloquium_storage::backup::restore_backup(&args.from, &args.data_dir, args.id)?;
    println!(
        "restored backup {} ({}) into {dir}: start a node on it with --data-dir {dir}",
        restored.id,
        indicatif::HumanBytes(restored.size),
        dir = args.data_dir.display(),
    );
    Ok(())
}
