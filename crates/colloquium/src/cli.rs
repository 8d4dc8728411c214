//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use colloquium_config::Config;
use colloquium_telemetry::logging::LogFormat;

/// A real-time event stream processor: ingest JSON events, store them durably, query and
/// replay them.
#[derive(Debug, Parser)]
#[command(name = "colloquium", version, propagate_version = true)]
pub struct Cli {
    /// Log line format (logs go to stderr; level from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Human)]
    pub log_format: LogFormatArg,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node (with no config: the embedded defaults, 127.0.0.1:8080, ./data).
    Run(RunArgs),
    /// Check a config file (schema, scripts, references) and print every problem; exits
    /// non-zero when there is one.
    Validate(ConfigArgs),
    /// Run the unit tests in a config's `tests:` section; exits non-zero when one fails.
    Test(ConfigArgs),
    /// Print a stopped node's stored events as NDJSON, oldest first.
    Replay(ReplayArgs),
    /// Evaluate a Computo script on JSON inputs and print the result as JSON.
    Computo(ComputoArgs),
    /// Score NDJSON events from stdin with the `anomaly` stage's detector (StreamGuard's
    /// per-user baseline model) and print one result per line.
    Anomaly(AnomalyArgs),
    /// Make a new bearer token: prints it and its SHA-256 (for `server.auth.tokens[].sha256`,
    /// so the token itself need not be on the node).
    Token,
    /// Back a running node up (the node takes it while ingest goes on: consistent,
    /// incremental, verified), or list a backup directory.
    Backup(BackupArgs),
    /// Restore a backup into a new data directory (offline: then start a node on it).
    Restore(RestoreArgs),
    /// Stream the events passing a point of a running node (a stage, or the log) as NDJSON,
    /// a table on a terminal; `--since` replays the log first, then follows.
    Tap(TapArgs),
    /// A live terminal view of a running node: sources, lanes, pipelines and stages, sinks,
    /// with rates, lag, errors and the control-plane level (`/` filters by name, `q` quits).
    Top(TopArgs),
    /// Load generators for benchmarking a running node.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// The config file option shared by subcommands.
#[derive(Clone, Debug, Args)]
pub struct ConfigArgs {
    /// Config file (YAML or JSON; `${ENV_VAR}` substituted).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Names the config for messages.
    pub fn describe(&self) -> String {
        self.config
            .as_ref()
            .map_or_else(|| "default config".to_owned(), |p| p.display().to_string())
    }
}

/// `colloquium run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address (overrides server.listen; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listen address (overrides server.admin_listen; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
}

impl RunArgs {
    /// Applies command-line overrides to `config`.
    pub fn apply(&self, mut config: Config) -> Config {
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(listen) = self.admin_listen {
            config.server.admin_listen = listen;
        }
        config
    }
}

/// `colloquium backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup directory (on the node's machine; created if missing). Backups into one
    /// directory share their unchanged files.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Keep only the newest N backups there afterwards.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// List the backups in the directory instead (no node needed).
    #[arg(long, conflicts_with = "keep")]
    pub list: bool,
    /// The node's admin listener.
    #[arg(
        long,
        value_name = "URL",
        env = "COLLOQUIUM_ADMIN",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// How the client tools (`backup`, `tap`, `top`) prove who they are and whom they trust.
#[derive(Clone, Debug, Args)]
pub struct Credentials {
    /// A bearer token with the scope the command needs (`admin` for `backup`, `read` for `tap`
    /// and `top`), when the node has tokens.
    #[arg(long, env = "COLLOQUIUM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` URL.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// How the terminal tools reach a node's API.
#[derive(Clone, Debug, Args)]
pub struct ApiArgs {
    /// The node's API listener.
    #[arg(
        long,
        value_name = "URL",
        env = "COLLOQUIUM_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// `colloquium tap`.
#[derive(Debug, Args)]
pub struct TapArgs {
    /// Tap this pipeline's stage outputs (without it: the log, every event stored).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// A stage of `--pipeline`: what it emits (without it: the pipeline's outputs, what goes to
    /// its sinks).
    #[arg(long, requires = "pipeline")]
    pub stage: Option<String>,
    /// Only events from this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Every Nth event.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Replay the log from this time (RFC 3339 or epoch ms) first, then follow.
    #[arg(long, value_name = "TIME", conflicts_with = "pipeline")]
    pub since: Option<String>,
    /// Events the node buffers for this tap before it drops (default 1000).
    #[arg(long, value_name = "N")]
    pub buffer: Option<usize>,
    /// NDJSON even on a terminal.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `colloquium top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Show only sources, pipelines, stages and sinks whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// How often to refresh.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `colloquium restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The new data directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The backup's id (`colloquium backup --to DIR --list`); default the newest.
    #[arg(long, value_name = "ID")]
    pub id: Option<u32>,
}

/// `colloquium replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Earliest ingest time, inclusive: RFC 3339 or epoch milliseconds.
    #[arg(long, value_name = "TIME")]
    pub since: colloquium_event::Timestamp,
    /// Latest ingest time, inclusive (default: everything).
    #[arg(long, value_name = "TIME")]
    pub until: Option<colloquium_event::Timestamp>,
    /// Only events from this source.
    #[arg(long)]
    pub source: Option<String>,
}

/// `colloquium computo`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["script", "expr"]))]
pub struct ComputoArgs {
    /// Script file (a JSON document).
    #[arg(short, long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// The script inline, as JSON text (instead of --script).
    #[arg(short = 'e', long = "expr", value_name = "EXPR")]
    pub expr: Option<String>,
    /// Input files in order (`$input` is the first, `$inputs` all); `-` reads one from stdin.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Indent the result.
    #[arg(long)]
    pub pretty: bool,
}

/// `colloquium anomaly`.
#[derive(Debug, Args)]
pub struct AnomalyArgs {
    /// Score at or above which an event is an anomaly (clamped to [0, 1]).
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true)]
    pub threshold: f64,
    /// Events a user's baseline learns before scoring starts.
    #[arg(long, default_value_t = 100)]
    pub min_events: u64,
    /// The model: `streamguard` (the reference, exactly) or `robust` (ours, with the
    /// reference's flaws fixed; its settings at their defaults).
    #[arg(long, value_enum, default_value_t = AnomalyModel::Streamguard)]
    pub model: AnomalyModel,
}

/// `--model`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AnomalyModel {
    /// StreamGuard's detector, exactly.
    Streamguard,
    /// Ours (`docs/anomaly-models.md`).
    Robust,
}

/// `colloquium bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive `POST /events` and report events/s and ack latency percentiles.
    Http(BenchHttpArgs),
    /// Stream EventStream frames to a `tcp` source with `ack: true` and report durable
    /// frames/s and MiB/s (counted from the node's acks).
    Tcp(BenchTcpArgs),
    /// Send EventStream frames as UDP datagrams as fast as possible; report sent, stored
    /// (from the node's metrics) and lost.
    Udp(BenchUdpArgs),
    /// Kafka: fill a topic, read it with a plain consumer loop (the baseline), or follow a
    /// node's Kafka source or sink through its metrics.
    Kafka(BenchKafkaArgs),
}

/// `colloquium bench kafka`.
#[derive(Debug, Args)]
pub struct BenchKafkaArgs {
    /// `produce` (fill the topic), `consume` (a plain rdkafka loop that reads and drops),
    /// `source` (follow a node's kafka source until it stored `--count`), `sink` (follow a
    /// node's kafka sink until it delivered `--count`).
    pub mode: String,
    /// Bootstrap brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The topic.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Messages to produce, read or wait for.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Payload bytes per produced message (a JSON object padded to this size).
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// The node's HTTP address (`source`, `sink`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Pid of the node, to report its peak resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A librdkafka setting for `consume`, `KEY=VALUE` (repeatable): the plain loop with the
    /// source's own settings.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

/// `colloquium bench udp`.
#[derive(Debug, Args)]
pub struct BenchUdpArgs {
    /// The `udp` source's address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub addr: SocketAddr,
    /// The node's HTTP address, to read how many events it stored.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Payload bytes per datagram (a JSON object padded to this size; at least 32).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Sending sockets.
    #[arg(long, default_value_t = 1)]
    pub sockets: usize,
    /// Target datagrams/s across all sockets (default: as fast as they go).
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// `colloquium bench tcp`.
#[derive(Debug, Args)]
pub struct BenchTcpArgs {
    /// The `tcp` source's address (its config needs `ack: true`).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Payload bytes per frame (a JSON object padded to this size; at least 32).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Frames a connection may have sent but not yet seen acked.
    #[arg(long, default_value_t = 65_536)]
    pub window: u64,
    /// The frames' priority byte (critical, high, medium, low, batch).
    #[arg(long, default_value = "medium")]
    pub priority: colloquium_event::Priority,
    /// Target frames/s across all connections (default: as fast as the node acks), sent
    /// every millisecond.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured run time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Pid of the node, to report its peak resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// `colloquium bench http`.
#[derive(Debug, Args)]
pub struct BenchHttpArgs {
    /// Node address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Events per request: 1 sends a JSON object, more send NDJSON.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Measured run time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Target events/s across all connections (default: as fast as the node answers).
    /// Latency is measured from each request's scheduled time, so a stall is not hidden.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Pid of the node, to report its peak resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Send the window benchmark's events instead (issue 15): `{k, v, t}` with `k` one of
    /// this many keys chosen uniformly, `v` uniform in [0, 1000), and `t` the event's index
    /// in ms minus up to 500 ms. Use one connection: concurrent requests would add disorder.
    #[arg(long)]
    pub window_keys: Option<u32>,
    /// Send StreamGuard events instead (issue 16), of this many users chosen uniformly: each
    /// user's own IP and place, office hours, two events per user per day of event time; one
    /// event in 100 from a new IP and country at 3 AM.
    #[arg(long, conflicts_with = "window_keys")]
    pub streamguard_users: Option<u32>,
    /// Bearer token sent with every request (a node with `server.auth` tokens).
    #[arg(long, env = "COLLOQUIUM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Speak TLS, trusting the certificate authority in this PEM file (`server.tls`).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}
