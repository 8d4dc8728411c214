//! Opening RocksDB: column families, compression, bloom filters, the shared block cache.
//!
//! On-disk layout: one RocksDB database per data directory. Column families:
//! - `events`: key = 16-byte [`EventId`](colloquium_event::EventId) (big-endian ULID, so key
//!   order is ingest-time order); value = the event as JSON.
//! - `dlq`: key = 16-byte ULID of the failure; value = [`DeadLetter`](crate::DeadLetter) JSON.
//! - `outputs`: key = pipeline name, `0x00`, the input event's 16-byte id, a 4-byte big-endian
//!   output index; value = the output event as JSON (see [`crate::pipelines`]).
//! - `checkpoints`: key = pipeline name; value = [`Checkpoint`](crate::Checkpoint) JSON.
//! - `state`: key = pipeline name, `0x00`, stage label, `0x00`, the stage's own key; value =
//!   the stage's bytes (e.g. dedup: a seen key → when it was seen).
//! - `positions`: key = source name, `0x00`, the source's own key (Kafka: topic, `0x00`,
//!   4-byte big-endian partition); value = the next position to read, 8-byte big-endian.
//!   Written in the same batch as the events it covers (see [`crate::positions`]).
//! - `results`: key = pipeline, `0x00`, stage, `0x00`, table, `0x00`, key length (u32 BE),
//!   key, time (i64 BE, sign bit flipped), optionally an event id; value = the stage's bytes
//!   (see [`crate::results`]). `windows` and `anomalies` are earlier layouts, emptied into it
//!   on open.
//! - `ledger`: AI spend per UTC day and pipeline, and open reservations (see [`crate::ledger`]).
//!
//! Adding a column family is one entry in [`ColumnFamily`]. RocksDB's `LOCK` file keeps a
//! second process out of the directory; we turn its error into [`StorageError::Locked`].

use std::path::{Path, PathBuf};

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Options};

use crate::StorageError;

/// The column families this version knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnFamily {
    /// The event log.
    Events,
    /// The dead-letter queue.
    Dlq,
    /// Results of pipelines' `store` sinks.
    Outputs,
    /// Each pipeline's position in the log.
    Checkpoints,
    /// Stages' state, one row per entry, changed together with the checkpoints.
    State,
    /// Earlier layout of window results: moved to `results` on open, then empty.
    Windows,
    /// Earlier layout of anomalies: moved to `results` on open, then empty.
    Anomalies,
    /// Where each source with positions (Kafka partitions) reads next.
    Positions,
    /// Stages' kept results, by pipeline, stage, table, key and time ([`crate::results`]).
    Results,
    /// AI spend per day and pipeline, and the reservations of calls in flight.
    Ledger,
}

impl ColumnFamily {
    /// Every column family, created on open when missing.
    pub const ALL: [ColumnFamily; 10] = [
        ColumnFamily::Events,
        ColumnFamily::Dlq,
        ColumnFamily::Outputs,
        ColumnFamily::Checkpoints,
        ColumnFamily::State,
        ColumnFamily::Windows,
        ColumnFamily::Anomalies,
        ColumnFamily::Positions,
        ColumnFamily::Results,
        ColumnFamily::Ledger,
    ];

    /// Returns the RocksDB name.
    pub fn name(self) -> &'static str {
        match self {
            ColumnFamily::Events => "events",
            ColumnFamily::Dlq => "dlq",
            ColumnFamily::Outputs => "outputs",
            ColumnFamily::Checkpoints => "checkpoints",
            ColumnFamily::State => "state",
            ColumnFamily::Windows => "windows",
            ColumnFamily::Anomalies => "anomalies",
            ColumnFamily::Positions => "positions",
            ColumnFamily::Results => "results",
            ColumnFamily::Ledger => "ledger",
        }
    }
}

/// Block compression for stored data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// LZ4: fast, moderate ratio.
    #[default]
    Lz4,
    /// Zstandard: slower, better ratio.
    Zstd,
    /// None.
    None,
}

/// How to open the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Create the directory and database when missing (a node); `false` for readers such as
    /// `colloquium replay`, for which a missing directory is an error naming it.
    pub create_if_missing: bool,
    /// Fsync the WAL on every group commit.
    pub sync: bool,
    /// Block compression.
    pub compression: Compression,
    /// Shared block cache size in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size per column family in bytes.
    pub write_buffer_bytes: usize,
}

impl StoreOptions {
    /// Returns options with defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            create_if_missing: true,
            sync: true,
            compression: Compression::Lz4,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
        }
    }
}

/// Opens (or creates) the database with every known column family.
pub(crate) fn open(options: &StoreOptions) -> Result<DB, StorageError> {
    let dir = &options.data_dir;
    if !options.create_if_missing {
        // RocksDB would create an empty database there; a reader of a typo wants an error.
        if !dir.join("CURRENT").is_file() {
            return Err(StorageError::Open {
                dir: dir.clone(),
                message: "no colloquium data directory there (it has no RocksDB CURRENT file)"
                    .into(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
        dir: dir.clone(),
        message: format!("creating directory: {e}"),
    })?;

    let mut db_options = Options::default();
    db_options.create_if_missing(options.create_if_missing);
    db_options.create_missing_column_families(true);
    db_options.increase_parallelism(2);
    db_options.set_max_background_jobs(2);
    db_options.set_keep_log_file_num(5);
    // Caps WAL growth when a rarely written family (dlq) pins old WAL files.
    db_options.set_max_total_wal_size(256 << 20);
    db_options.set_bytes_per_sync(1 << 20);

    let cache = Cache::new_lru_cache(options.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_block_size(16 * 1024);

    let mut cf_options = Options::default();
    cf_options.set_block_based_table_factory(&table);
    cf_options.set_compression_type(match options.compression {
        Compression::Lz4 => rocksdb::DBCompressionType::Lz4,
        Compression::Zstd => rocksdb::DBCompressionType::Zstd,
        Compression::None => rocksdb::DBCompressionType::None,
    });
    cf_options.set_write_buffer_size(options.write_buffer_bytes);
    cf_options.set_max_write_buffer_number(3);
    cf_options.set_level_compaction_dynamic_level_bytes(true);

    // Families written by a newer version must be opened too, or RocksDB refuses the directory.
    let mut names: Vec<String> = ColumnFamily::ALL
        .iter()
        .map(|cf| cf.name().to_owned())
        .collect();
    if let Ok(existing) = DB::list_cf(&db_options, dir) {
        for name in existing {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    // What pipelines write (an output row, stage-state rows, per event and pipeline) is most
    // of the bytes, rarely read, and mostly in key order: universal compaction rewrites it far
    // less often than levelled compaction, which took a third of the CPU with 4 pipelines
    // (BENCHMARKS.md). The event log stays levelled: retention's `compact_range` would be a
    // full compaction under universal.
    let mut derived = cf_options.clone();
    derived.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
    let descriptors = names.into_iter().map(|name| {
        let write_heavy = [
            ColumnFamily::Outputs,
            ColumnFamily::State,
            ColumnFamily::Results,
        ]
        .iter()
        .any(|cf| cf.name() == name);
        let options = if write_heavy { &derived } else { &cf_options };
        ColumnFamilyDescriptor::new(name, options.clone())
    });
    let db =
        DB::open_cf_descriptors(&db_options, dir, descriptors).map_err(|e| open_error(dir, e))?;
    crate::results::migrate(&db)?;
    Ok(db)
}

fn open_error(dir: &Path, e: rocksdb::Error) -> StorageError {
    let message = e.into_string();
    if message.contains("lock") || message.contains("LOCK") {
        StorageError::Locked {
            dir: dir.to_owned(),
        }
    } else {
        StorageError::Open {
            dir: dir.to_owned(),
            message,
        }
    }
}
