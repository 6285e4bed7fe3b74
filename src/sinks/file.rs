//! The file sinks of file and live mode: KPI and leaderboard records as
//! JSON lines (a file or standard output), dead letters as JSON lines;
//! both cut back to their checkpointed length on a resume.

use super::alert::Dispatcher;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::output::{DeadLetter, JsonRecords};
use anyhow::Context;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Cuts a file back to `len` bytes (what it held at the checkpoint).
pub(crate) fn cut_back(p: &Path, len: Option<u64>) -> anyhow::Result<()> {
    let Some(len) = len else { return Ok(()) };
    if p.as_os_str() == "-" {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .with_context(|| format!("cannot open {} to resume it", p.display()))?;
    let now = f.metadata()?.len();
    if now < len {
        anyhow::bail!(
            "{} holds {now} bytes, fewer than the {len} it held at the checkpoint: it was replaced or cut (fix: put it back, or start over with --fresh)",
            p.display()
        );
    }
    f.set_len(len)?;
    Ok(())
}

/// Length of a file (`None` for standard output).
pub(crate) fn file_len(p: &Path) -> Option<u64> {
    (p.as_os_str() != "-").then(|| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
}

/// Opens the record output; `append` when resuming from a checkpoint
/// (records after the checkpoint are written again, with the same revisions).
pub(crate) fn open_output(p: &PathBuf, append: bool) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(if p.as_os_str() == "-" {
        Box::new(BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(p)
            .with_context(|| format!("cannot create output file {}", p.display()))?;
        Box::new(BufWriter::new(f))
    })
}

/// The record output and the dead-letter file of one run.
pub(crate) struct Sinks {
    pub(crate) output_path: Option<PathBuf>,
    pub(crate) output: Option<Box<dyn Write + Send>>,
    pub(crate) dlq_path: PathBuf,
    pub(crate) dlq: Option<BufWriter<File>>,
    /// Encodes the records (and its reused buffer).
    pub(crate) json: (JsonRecords, Vec<u8>),
    /// The KPI history, when `[postgres]` is set.
    pub(crate) pg: Option<super::postgres::PgSink>,
}

impl Sinks {
    /// The publish step ([`super::take`]), then the records written out
    /// (and handed to the KPI history) and the engine's counters copied
    /// to the metrics.
    pub(crate) async fn publish(
        &mut self,
        m: &Metrics,
        engine: &mut Engine,
        records: &mut u64,
        alerts: &Dispatcher,
    ) -> anyhow::Result<()> {
        let (recs, boards) = super::take(engine, m, records, alerts);
        if let Some(o) = &mut self.output {
            let (json, buf) = &mut self.json;
            buf.clear();
            for r in &recs {
                json.write(r, buf);
                buf.push(b'\n');
                if buf.len() >= 1 << 16 {
                    o.write_all(buf)?;
                    buf.clear();
                }
            }
            for b in &boards {
                serde_json::to_writer(&mut *buf, b)?;
                buf.push(b'\n');
            }
            o.write_all(buf)?;
            buf.clear();
        }
        m.sync(engine);
        if let Some(pg) = &self.pg {
            pg.send(&recs, &boards).await?;
        }
        Ok(())
    }

    pub(crate) fn dead_letter(&mut self, d: &DeadLetter) -> anyhow::Result<()> {
        if self.dlq.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.dlq_path)
                .with_context(|| {
                    format!("cannot open dead-letter file {}", self.dlq_path.display())
                })?;
            self.dlq = Some(BufWriter::new(f));
        }
        let w = self.dlq.as_mut().expect("opened");
        serde_json::to_writer(&mut *w, d)?;
        w.write_all(b"\n")?;
        Ok(())
    }

    /// Flushes the files (the KPI history writes on its own interval).
    pub(crate) fn flush_files(&mut self) -> anyhow::Result<()> {
        if let Some(o) = &mut self.output {
            o.flush()?;
        }
        if let Some(d) = &mut self.dlq {
            d.flush()?;
        }
        Ok(())
    }

    /// Flushes the files, and waits until the KPI history holds every
    /// record handed to it (before a checkpoint, at the end).
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        self.flush_files()?;
        if let Some(pg) = &self.pg {
            pg.flush().await?;
        }
        Ok(())
    }

    /// The last flush; stops the KPI history writer.
    pub(crate) async fn close(mut self) -> anyhow::Result<()> {
        self.flush().await?;
        if let Some(pg) = self.pg.take() {
            pg.close().await?;
        }
        Ok(())
    }
}
