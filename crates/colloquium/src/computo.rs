//! `colloquium computo`: evaluates a Computo script on JSON inputs and prints the result.
//!
//! The script comes from `--script FILE` or `-e EXPR`; inputs are files in order, `-` meaning
//! stdin. The result goes to stdout as one JSON document; any failure (unreadable file, bad
//! JSON, a script that does not compile or fails) is one line on stderr and a non-zero exit.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::ComputoArgs;

/// Runs the subcommand.
pub fn run(args: &ComputoArgs) -> anyhow::Result<()> {
    let (text, origin) = match (&args.script, &args.expr) {
        (Some(path), _) => (read_file(path)?, path.display().to_string()),
        (None, Some(expr)) => (expr.clone(), "-e".to_owned()),
        (None, None) => bail!("give a script with --script FILE or -e EXPR"),
    };
    let script: Value =
        serde_json::from_str(&text).with_context(|| format!("script {origin} is not JSON"))?;
    let script = computo::compile(&script).with_context(|| format!("script {origin}"))?;

    let mut stdin_used = false;
    let mut inputs = Vec::with_capacity(args.inputs.len());
    for path in &args.inputs {
        let (text, origin) = if path.as_os_str() == "-" {
            if std::mem::replace(&mut stdin_used, true) {
                bail!("`-` (stdin) can be given only once");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading an input from stdin")?;
            (text, "stdin".to_owned())
        } else {
            (read_file(path)?, path.display().to_string())
        };
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("input {origin} is not JSON"))?;
        inputs.push(value);
    }

    let result = script.eval(&inputs)?;
    let mut out = std::io::stdout().lock();
    if args.pretty {
        serde_json::to_writer_pretty(&mut out, &result)?;
    } else {
        serde_json::to_writer(&mut out, &result)?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
