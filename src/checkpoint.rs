//! Checkpoints of the complete engine state (entities, windows, dedup
//! memory, alert instances, watermark clock) and of the input position,
//! written atomically to a local file.
//!
//! File layout: the 8-byte magic `SPCKPT` + format version, the payload
//! length (u64 LE), the payload's xxh3-64 (u64 LE), then the payload
//! ([`Checkpoint`] in postcard, a compact serde format). A torn write
//! cannot happen (temp file, fsync, rename, fsync of the directory); a
//! damaged or foreign file is refused with an error that names it and
//! the way out — never restored into silently wrong numbers.

use crate::engine::state::State;
use crate::engine::Settings;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Magic and format version: the last byte is the version.
const MAGIC: [u8; 8] = *b"SPCKPT\x00\x0b";

/// Where the input was when the checkpoint was taken: the next message to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputPosition {
    /// Nothing read yet.
    Start,
    /// A file: byte offset of the next line (or frame), and messages read before it.
    File {
        path: String,
        offset: u64,
        messages: u64,
    },
    /// Standard input, which cannot seek: messages to skip when it is fed again.
    Stdin { messages: u64 },
    /// The seeded generator: events already generated.
    Generator { events: u64 },
    /// One Kafka partition (scale-out: one checkpoint per partition, in
    /// the changelog topic): the next offset to read.
    Kafka {
        topic: String,
        partition: i32,
        next: i64,
    },
}

/// Lengths of the output files when the checkpoint was taken: on restore
/// they are cut back to these, so a record or dead letter written after
/// the checkpoint (and written again after the restore) is not doubled,
/// and a line torn by a crash disappears.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkLengths {
    pub output: Option<u64>,
    pub dead_letter: Option<u64>,
}

/// What a checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub salespulse_version: String,
    /// The settings the state's layout depends on (see [`Settings::layout`]).
    pub layout: Vec<(String, String)>,
    pub input: InputPosition,
    pub sinks: SinkLengths,
    /// Wall time it was written (RFC 3339), for operators.
    pub written_at: String,
    pub state: State,
}

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is not a salespulse checkpoint or is damaged ({problem}) (fix: {FIX})"
    )]
    Corrupt { path: PathBuf, problem: String },
    #[error("checkpoint {path} was written with {setting} = {was}, the configuration now says {now}: its state does not fit (fix: restore that setting, or {FIX})")]
    Incompatible {
        path: PathBuf,
        setting: String,
        was: String,
        now: String,
    },
}

const FIX: &str = "start over with `salespulse run --fresh …`, which moves the file aside to <file>.rejected and replays the input from its start; or put back a good copy of the file";

/// Checkpoints take at most 1/`TIME_SHARE` of the time: see [`next_after`].
pub const TIME_SHARE: u32 = 20;

/// How long to wait after a checkpoint that took `took` (encoding,
/// writing, waiting for it to be durable: the pipeline is paused that
/// long) before the next one: the configured interval, or
/// `took × (TIME_SHARE − 1)` if that is longer. The state a checkpoint
/// holds grows with the entities (0.36 s per million on this project's
/// machine): with a fixed 5 s interval a state of ten million entities
/// would spend most of the time checkpointing. Longer apart, a crash
/// replays more input (from the offsets or position of the last
/// checkpoint), which is far cheaper per second than checkpointing.
/// At most 30 years, so that it can be added to an instant.
pub fn next_after(interval: std::time::Duration, took: std::time::Duration) -> std::time::Duration {
    let far = std::time::Duration::from_secs(86_400 * 365 * 30);
    interval.max(took.saturating_mul(TIME_SHARE - 1)).min(far)
}

/// Header + checksum around an encoded checkpoint.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed checkpoint, or what is wrong with it.
pub fn unframe(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 24 || bytes[..6] != MAGIC[..6] {
        return Err("no salespulse checkpoint header".into());
    }
    if bytes[6..8] != MAGIC[6..8] {
        return Err(format!(
            "format version {} is not the version {} this salespulse reads",
            u16::from_be_bytes([bytes[6], bytes[7]]),
            u16::from_be_bytes([MAGIC[6], MAGIC[7]])
        ));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let sum = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[24..];
    if payload.len() != len {
        return Err(format!(
            "{} payload bytes where the header says {len}: truncated or appended to",
            payload.len()
        ));
    }
    if xxhash_rust::xxh3::xxh3_64(payload) != sum {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// The merger's checkpoint (scale-out), in the changelog topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeCheckpoint {
    pub salespulse_version: String,
    pub layout: Vec<(String, String)>,
    /// Next offset of the partials topic to read.
    pub partials_next: i64,
    pub written_at: String,
    pub state: State,
    pub merge: crate::engine::merge::MergeState,
}

impl MergeCheckpoint {
    pub fn encode(
        settings: &Settings,
        partials_next: i64,
        state: &State,
        merge: &crate::engine::merge::MergeState,
    ) -> Vec<u8> {
        #[derive(Serialize)]
        struct Ref<'a> {
            salespulse_version: &'a str,
            layout: Vec<(String, String)>,
            partials_next: i64,
            written_at: String,
            state: &'a State,
            merge: &'a crate::engine::merge::MergeState,
        }
        let payload = postcard::to_stdvec(&Ref {
            salespulse_version: env!("CARGO_PKG_VERSION"),
            layout: settings.layout(),
            partials_next,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            state,
            merge,
        })
        .expect("the merger state encodes");
        frame(&payload)
    }
}

/// Checks a decoded checkpoint's layout against the settings (`name` says where it came from).
pub fn check_layout(
    saved: &[(String, String)],
    name: &Path,
    s: &Settings,
) -> Result<(), CheckpointError> {
    for ((setting, was), (_, now)) in saved.iter().zip(s.layout()) {
        if *was != now {
            return Err(CheckpointError::Incompatible {
                path: name.into(),
                setting: setting.clone(),
                was: was.clone(),
                now,
            });
        }
    }
    Ok(())
}

/// The same fields as [`Checkpoint`], borrowing the state (serialized identically).
#[derive(Serialize)]
pub struct CheckpointRef<'a> {
    pub salespulse_version: &'a str,
    pub layout: Vec<(String, String)>,
    pub input: &'a InputPosition,
    pub sinks: SinkLengths,
    pub written_at: String,
    pub state: &'a State,
}

impl<'a> CheckpointRef<'a> {
    pub fn new(
        settings: &Settings,
        input: &'a InputPosition,
        sinks: SinkLengths,
        state: &'a State,
    ) -> Self {
        CheckpointRef {
            salespulse_version: env!("CARGO_PKG_VERSION"),
            layout: settings.layout(),
            input,
            sinks,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            state,
        }
    }

    /// Writes atomically: a temp file next to `path`, fsync, rename, fsync
    /// of the directory. Returns the file size.
    pub fn write(&self, path: &Path) -> std::io::Result<u64> {
        let bytes = self.encode()?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint")
        ));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(bytes.len() as u64)
    }

    /// The framed bytes (what the file or the changelog holds).
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let payload = postcard::to_stdvec(self)
            .map_err(|e| std::io::Error::other(format!("cannot encode the checkpoint: {e}")))?;
        Ok(frame(&payload))
    }
}

impl Checkpoint {
    /// Reads and checks a checkpoint; `Ok(None)` when there is no file.
    pub fn read(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        Checkpoint::decode(&bytes, path).map(Some)
    }

    /// Decodes framed bytes (`name` says where they came from, for errors).
    pub fn decode(bytes: &[u8], name: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |problem: String| CheckpointError::Corrupt {
            path: name.into(),
            problem,
        };
        let payload = unframe(bytes).map_err(corrupt)?;
        // The dedup set is rebuilt by `Engine::from_state`.
        postcard::from_bytes(payload).map_err(|e| corrupt(format!("cannot decode the state: {e}")))
    }

    /// Checks that the state was saved under the same layout settings.
    pub fn check_layout(&self, path: &Path, s: &Settings) -> Result<(), CheckpointError> {
        check_layout(&self.layout, path, s)
    }

    /// Moves a refused checkpoint aside (`<file>.rejected`) for `--fresh`.
    pub fn set_aside(path: &Path) -> std::io::Result<Option<PathBuf>> {
        if !path.exists() {
            return Ok(None);
        }
        let mut aside = path.as_os_str().to_owned();
        aside.push(".rejected");
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside)?;
        Ok(Some(aside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slow_checkpoint_spaces_the_next_so_checkpoints_take_at_most_a_twentieth() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Quick checkpoints keep the configured interval.
        assert_eq!(next_after(s(5), ms(10)), s(5));
        assert_eq!(next_after(s(5), Duration::ZERO), s(5));
        // 0.5 s for 5 s would be a tenth of the time: 9.5 s apart instead.
        assert_eq!(next_after(s(5), ms(500)), ms(9_500));
        // Several seconds (millions of entities): a twentieth at most.
        for took in [s(2), s(4), ms(3_600)] {
            let wait = next_after(s(5), took);
            assert!(took.as_secs_f64() / (took + wait).as_secs_f64() <= 1.0 / 20.0 + 1e-9);
        }
        // Never past what an instant can hold.
        let far = s(86_400 * 365 * 30);
        assert_eq!(next_after(s(5), Duration::MAX), far);
        assert_eq!(next_after(Duration::MAX, ms(1)), far);
        let _ = std::time::Instant::now() + next_after(Duration::MAX, Duration::MAX);
    }
}
