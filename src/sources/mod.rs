//! Where events come from in file and live mode: a file or standard input
//! (JSON lines or length-delimited protobuf) read to its end, or the
//! demo generator paced in real time. Each reader sends batches of raw
//! messages, with the input position after each batch, through a bounded
//! channel (backpressure).

use crate::checkpoint::InputPosition;
use crate::decode::{json, proto, Format};
use crate::demo::generator::{GenConfig, Generator};
use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, or `-` for standard input, read to its end.
    File(PathBuf),
    /// The built-in generator, paced at `rate` events/s; stops after `limit` events if set.
    Generator {
        gen: GenConfig,
        rate: f64,
        limit: Option<u64>,
    },
}

/// One raw message, where it came from, and a framing error if the
/// reader could not cut a whole message out of the input.
pub(crate) struct Msg {
    pub(crate) bytes: Vec<u8>,
    pub(crate) origin: String,
    pub(crate) framing_error: Option<String>,
}

impl Msg {
    pub(crate) fn new(bytes: Vec<u8>, origin: String) -> Msg {
        Msg {
            bytes,
            origin,
            framing_error: None,
        }
    }
}

/// A batch of raw messages, and where the input is after its last one.
pub(crate) struct Batch {
    pub(crate) msgs: Vec<Msg>,
    pub(crate) end: InputPosition,
}

/// Reads one length-delimited protobuf frame; `Ok(None)` at a clean end.
pub(crate) fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Result<Vec<u8>, String>>> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            return Ok(if i == 0 {
                None
            } else {
                Some(Err("input ends inside a length prefix".into()))
            });
        }
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            let mut buf = vec![0; len as usize];
            return Ok(Some(match r.read_exact(&mut buf) {
                Ok(()) => Ok(buf),
                Err(_) => Err(format!("input ends inside a {len}-byte message")),
            }));
        }
    }
    Ok(Some(Err("length prefix longer than 10 bytes".into())))
}

/// Where a file or stdin reader starts: byte offset and messages read
/// (file), or messages to skip (stdin, which cannot seek).
pub(crate) fn start_of(path: &Path, resume: &InputPosition) -> anyhow::Result<(u64, u64, u64)> {
    let stdin = path.as_os_str() == "-";
    let name = path.display().to_string();
    match resume {
        InputPosition::Start => Ok((0, 0, 0)),
        InputPosition::Stdin { messages } if stdin => Ok((0, 0, *messages)),
        InputPosition::File {
            path: p,
            offset,
            messages,
        } if !stdin && *p == name => Ok((*offset, *messages, 0)),
        other => anyhow::bail!(
            "the checkpoint was taken reading {other:?}, and this run reads {}: its position does not apply (fix: give the same input, or start over with --fresh)",
            if stdin { "stdin" } else { name.as_str() }
        ),
    }
}

/// Reads a file or stdin to its end, in batches of `batch` messages.
pub(crate) fn read_file(
    path: PathBuf,
    format: Format,
    batch: usize,
    tx: mpsc::Sender<Batch>,
    resume: InputPosition,
) -> anyhow::Result<()> {
    let (mut offset, mut read, skip) = start_of(&path, &resume)?;
    let stdin = path.as_os_str() == "-";
    let (name, input): (String, Box<dyn Read + Send>) = if stdin {
        ("stdin".into(), Box::new(std::io::stdin()))
    } else {
        let mut f =
            File::open(&path).with_context(|| format!("cannot open input {}", path.display()))?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))
            .with_context(|| format!("cannot seek {} to the checkpoint", path.display()))?;
        (path.display().to_string(), Box::new(f))
    };
    let position = |offset: u64, read: u64| {
        if stdin {
            InputPosition::Stdin { messages: read }
        } else {
            InputPosition::File {
                path: name.clone(),
                offset,
                messages: read,
            }
        }
    };
    let mut r = BufReader::with_capacity(1 << 20, input);
    let mut msgs = Vec::with_capacity(batch);
    // Line (or frame) numbers in origins continue from the checkpoint.
    let mut n = read;
    loop {
        n += 1;
        let item = match format {
            Format::Json => {
                let mut line = Vec::new();
                let len = r.read_until(b'\n', &mut line)?;
                if len == 0 {
                    break;
                }
                offset += len as u64;
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                line
            }
            Format::Protobuf => match read_frame(&mut r)? {
                None => break,
                Some(Ok(m)) => {
                    offset += varint_len(m.len() as u64) + m.len() as u64;
                    m
                }
                Some(Err(e)) => {
                    msgs.push(Msg {
                        bytes: Vec::new(),
                        origin: format!("{name}:{n}"),
                        framing_error: Some(e),
                    });
                    break;
                }
            },
        };
        read += 1;
        if read <= skip {
            continue;
        }
        msgs.push(Msg::new(item, format!("{name}:{n}")));
        if msgs.len() >= batch
            && tx
                .blocking_send(Batch {
                    msgs: std::mem::take(&mut msgs),
                    end: position(offset, read),
                })
                .is_err()
        {
            return Ok(());
        }
    }
    if !msgs.is_empty() {
        let _ = tx.blocking_send(Batch {
            msgs,
            end: position(offset, read),
        });
    }
    Ok(())
}

/// Bytes of a protobuf varint.
fn varint_len(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Paces the generator at `rate` events/s, after skipping what a checkpoint holds.
pub(crate) async fn run_generator(
    gen: GenConfig,
    rate: f64,
    limit: Option<u64>,
    format: Format,
    tx: mpsc::Sender<Batch>,
    skip: u64,
) {
    let mut g = Generator::new(gen);
    // Seeded: skipping what a checkpoint already holds resumes the same stream.
    for _ in 0..skip {
        g.next();
    }
    let tick = Duration::from_millis(50);
    let per_tick = (rate * tick.as_secs_f64()).max(1.0);
    let mut interval = tokio::time::interval(tick);
    let (mut sent, mut owed) = (skip, 0.0f64);
    loop {
        interval.tick().await;
        owed += per_tick;
        let mut msgs = Vec::new();
        while owed >= 1.0 && limit.is_none_or(|l| sent < l) {
            let e = g.next().expect("the generator never ends");
            let bytes = match format {
                Format::Json => json::encode(&e).into_bytes(),
                Format::Protobuf => prost::Message::encode_to_vec(&proto::from_event(&e)),
            };
            msgs.push(Msg::new(bytes, "generator".to_string()));
            owed -= 1.0;
            sent += 1;
        }
        if !msgs.is_empty()
            && tx
                .send(Batch {
                    msgs,
                    end: InputPosition::Generator { events: sent },
                })
                .await
                .is_err()
        {
            return;
        }
        if limit.is_some_and(|l| sent >= l) {
            // Keep the channel open: a live run serves until it is stopped.
            tx.closed().await;
            return;
        }
    }
}
