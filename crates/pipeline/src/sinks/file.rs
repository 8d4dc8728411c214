//! `file`: results appended as NDJSON, rotated by size and age.
//!
//! Each batch is written and (with `sync: true`, the default) fsynced before the step commits,
//! so a crash re-delivers at most the last step: at-least-once. When the file would pass
//! `max_size`, or was opened more than `max_age` ago, it is renamed to `PATH.<epoch ms>` (with
//! `-<n>` appended if that name is taken) and a new one is started. A relative `path` is relative to the node's working directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use colloquium_config::ConfigError;
use colloquium_event::Timestamp;
use colloquium_storage::PipelineCommit;
use serde::Deserialize;

use crate::sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError};

/// `{type: file, path: out/orders.ndjson, max_size: 64MiB, max_age: 1h, sync: true}`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file results are appended to.
    pub path: PathBuf,
    /// Rotate before the file would grow past this.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// Rotate a file opened longer ago than this.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Fsync each batch before the step commits (survives power loss, not only a crash).
    #[serde(default = "default_sync")]
    pub sync: bool,
}

fn default_max_size() -> ByteSize {
    ByteSize::mib(64)
}

fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

fn default_sync() -> bool {
    true
}

impl SinkConfig for FileConfig {
    const KIND: &'static str = "file";
    const PLACEMENT: Placement = Placement::Exclusive;
    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new(cx.key("path"), "must not be empty"));
        }
        if self.max_size.as_u64() == 0 || self.max_age.is_zero() {
            return Err(ConfigError::new(
                &cx.at,
                "`max_size` and `max_age` must be greater than 0",
            ));
        }
        Ok(Box::new(FileSink {
            name: cx.name.clone(),
            file: Some(NdjsonFile {
                config: self.clone(),
                open: None,
            }),
            config: self,
        }))
    }
}

struct FileSink {
    name: Arc<str>,
    config: FileConfig,
    /// Lent to a blocking thread for each write (`None` meanwhile).
    file: Option<NdjsonFile>,
}

/// The file and where it stands; written on a blocking thread, since a write and its fsync
/// may take long on a busy disk.
struct NdjsonFile {
    config: FileConfig,
    open: Option<Open>,
}

struct Open {
    file: File,
    size: u64,
    since: Instant,
}

impl NdjsonFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let rotate = self.open.as_ref().is_some_and(|o| {
            (o.size > 0 && o.size + len > self.config.max_size.as_u64())
                || o.since.elapsed() >= self.config.max_age
        });
        if rotate {
            self.open = None;
            std::fs::rename(&self.config.path, self.rotated_name())?;
        }
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                if let Some(dir) = self
                    .config
                    .path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir)?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.config.path)?;
                let size = file.metadata()?.len();
                self.open.insert(Open {
                    file,
                    size,
                    since: Instant::now(),
                })
            }
        };
        let written = open.file.write_all(bytes).and_then(|()| {
            if self.config.sync {
                open.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                open.size += len;
                Ok(())
            }
            Err(e) => {
                // Cut a partial line off, so the retried step appends whole lines only.
                let _ = open.file.set_len(open.size);
                self.open = None;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        _commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        let mut bytes = Vec::with_capacity(batch.len() * 256);
        for routed in &batch {
            serde_json::to_writer(&mut bytes, &routed.event)
                .map_err(|e| self.error(e.to_string()))?;
            bytes.push(b'\n');
        }
        // A write that panicked lost the file's handle: the next one reopens it.
        let mut file = self.file.take().unwrap_or_else(|| NdjsonFile {
            config: self.config.clone(),
            open: None,
        });
        let (file, written) = tokio::task::spawn_blocking(move || {
            let written = file.write(&bytes);
            (file, written)
        })
        .await
        .map_err(|e| self.error(format!("the write failed: {e}")))?;
        self.file = Some(file);
        // On failure the step is retried and re-delivers this batch: at-least-once.
        written.map_err(|e| self.error(format!("{}: {e}", self.config.path.display())))
    }
}

impl NdjsonFile {
    /// `PATH.<epoch ms>`, or `PATH.<epoch ms>-<n>` when that exists: two rotations within one
    /// millisecond must not overwrite each other.
    fn rotated_name(&self) -> PathBuf {
        let base = format!(
            "{}.{}",
            self.config.path.display(),
            Timestamp::now().as_millis()
        );
        let mut name = PathBuf::from(&base);
        let mut n = 1;
        while name.exists() {
            name = PathBuf::from(format!("{base}-{n}"));
            n += 1;
        }
        name
    }
}

impl FileSink {
    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: self.name.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::test_routed as routed;
    use colloquium_event::Event;

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appends_ndjson_and_rotates_by_age_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/out.ndjson");
        let build = |options: serde_json::Value| {
            let config: FileConfig = serde_json::from_value(options).unwrap();
            config
                .build(&SinkBuildContext {
                    name: Arc::from("f"),
                    at: "sinks.f".into(),
                    metrics: Default::default(),
                })
                .unwrap()
        };
        let mut sink = build(serde_json::json!({"path": path, "max_age": "1ms", "sync": false}));
        let mut commit = PipelineCommit::default();
        crate::sink::block_on(sink.send(vec![routed(1), routed(2)], &mut commit)).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.lines().count(), 2);
        assert_eq!(
            serde_json::from_str::<Event>(first.lines().next().unwrap())
                .unwrap()
                .data["n"],
            1
        );
        std::thread::sleep(Duration::from_millis(5)); // past max_age: the next batch rotates
        crate::sink::block_on(sink.send(vec![routed(3)], &mut commit)).unwrap();
        let names = files(&dir.path().join("nested"));
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[1].starts_with("out.ndjson."), "{names:?}");

        let sized = dir.path().join("sized.ndjson");
        let mut sink = build(serde_json::json!({"path": sized, "max_size": "100B"}));
        for n in 0..4 {
            crate::sink::block_on(sink.send(vec![routed(n)], &mut commit)).unwrap();
        }
        // Each line is over 100 bytes, so every batch after the first starts a new file.
        let rotated = files(dir.path())
            .iter()
            .filter(|n| n.starts_with("sized.ndjson"))
            .count();
        assert_eq!(rotated, 4);
        assert!(commit.outputs.is_empty() && commit.dead_letters.is_empty());
    }
}
