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
use std::sync::Arc;
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

/// One raw message of a [`Batch`]: where its bytes end in the batch's
/// buffer, its line (or frame) number in the input (0 for the
/// generator), and a framing error if the reader could not cut a whole
/// message out of the input.
pub(crate) struct Msg {
    end: usize,
    number: u64,
    pub(crate) framing_error: Option<String>,
}

/// A batch of raw messages, one after another in one buffer (no
/// allocation per message), and where the input is after its last one.
pub(crate) struct Batch {
    data: Vec<u8>,
    msgs: Vec<Msg>,
    /// The input's name, for a dead letter's origin (`name:line`).
    source: Arc<str>,
    pub(crate) end: InputPosition,
}

impl Batch {
    /// A batch for about `capacity` messages (room is reserved for at
    /// most 4,096 of ~256 bytes; it grows beyond).
    pub(crate) fn new(source: Arc<str>, capacity: usize) -> Batch {
        let capacity = capacity.min(4096);
        Batch {
            data: Vec::with_capacity(capacity * 256),
            msgs: Vec::with_capacity(capacity),
            source,
            end: InputPosition::Start,
        }
    }

    /// Appends a message; `number` is its line or frame number (0: none).
    pub(crate) fn push(&mut self, bytes: &[u8], number: u64) {
        self.data.extend_from_slice(bytes);
        self.msgs.push(Msg {
            end: self.data.len(),
            number,
            framing_error: None,
        });
    }

    /// Appends a message the reader could not cut out of the input.
    fn push_error(&mut self, number: u64, problem: String) {
        self.msgs.push(Msg {
            end: self.data.len(),
            number,
            framing_error: Some(problem),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.msgs.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Each message's bytes, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &Msg)> {
        let mut start = 0;
        self.msgs.iter().map(move |m| {
            let bytes = &self.data[start..m.end];
            start = m.end;
            (bytes, m)
        })
    }

    /// Where `m` came from, for its dead letter: `input:line`, or the
    /// input's name alone when it has no line numbers (the generator).
    pub(crate) fn origin(&self, m: &Msg) -> String {
        if m.number == 0 {
            self.source.to_string()
        } else {
            format!("{}:{}", self.source, m.number)
        }
    }

    /// The batch so far, ended at `end`; `self` starts a new one.
    fn take(&mut self, end: InputPosition) -> Batch {
        let next = Batch::new(self.source.clone(), self.msgs.capacity());
        Batch {
            end,
            ..std::mem::replace(self, next)
        }
    }
}

/// Reads one length-delimited protobuf frame into `buf`; `Ok(None)` at a
/// clean end.
pub(crate) fn read_frame(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), String>>> {
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
            // Read as it comes (not allocated up front from the prefix,
            // which a corrupt input may make huge).
            buf.clear();
            let got = r.take(len).read_to_end(buf)?;
            return Ok(Some(if got as u64 == len {
                Ok(())
            } else {
                Err(format!("input ends inside a {len}-byte message"))
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
    let mut msgs = Batch::new(name.as_str().into(), batch);
    let mut line = Vec::new();
    // Line (or frame) numbers in origins continue from the checkpoint.
    let mut n = read;
    loop {
        n += 1;
        match format {
            Format::Json => {
                line.clear();
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
            }
            Format::Protobuf => match read_frame(&mut r, &mut line)? {
                None => break,
                Some(Ok(())) => offset += varint_len(line.len() as u64) + line.len() as u64,
                Some(Err(e)) => {
                    msgs.push_error(n, e);
                    break;
                }
            },
        };
        read += 1;
        if read <= skip {
            continue;
        }
        msgs.push(&line, n);
        if msgs.len() >= batch && tx.blocking_send(msgs.take(position(offset, read))).is_err() {
            return Ok(());
        }
    }
    if !msgs.is_empty() {
        let _ = tx.blocking_send(msgs.take(position(offset, read)));
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
    // Fractions carry over (`owed`): below 20 events/s some ticks send none.
    let per_tick = rate * tick.as_secs_f64();
    let mut interval = tokio::time::interval(tick);
    let (mut sent, mut owed) = (skip, 0.0f64);
    let source: Arc<str> = "generator".into();
    let mut msgs = Batch::new(source, per_tick as usize + 1);
    loop {
        interval.tick().await;
        owed += per_tick;
        while owed >= 1.0 && limit.is_none_or(|l| sent < l) {
            let e = g.next().expect("the generator never ends");
            let bytes = match format {
                Format::Json => json::encode(&e).into_bytes(),
                Format::Protobuf => prost::Message::encode_to_vec(&proto::from_event(&e)),
            };
            msgs.push(&bytes, 0);
            owed -= 1.0;
            sent += 1;
        }
        if !msgs.is_empty()
            && tx
                .send(msgs.take(InputPosition::Generator { events: sent }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Below 20 events/s (one per 50 ms tick) the generator keeps its
    /// rate: fractions carry over (it sent one a tick, 20/s, before).
    #[tokio::test(start_paused = true)]
    async fn the_generator_keeps_a_rate_below_one_event_a_tick() {
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(run_generator(
            GenConfig {
                seed: 1,
                start: crate::demo::generator::DEFAULT_START,
                events_per_day: 1000,
                reps: 10,
            },
            4.0,
            None,
            Format::Json,
            tx,
            0,
        ));
        // Paused time: sleeping moves the clock, with every tick due.
        tokio::time::sleep(Duration::from_millis(10_010)).await;
        let mut n = 0;
        while let Ok(b) = rx.try_recv() {
            n += b.len();
        }
        task.abort();
        // Ticks at 0, 50 ms, … 10 s: 201 × 0.2 events.
        assert_eq!(n, 40);
    }

    fn read_all(bytes: &[u8], format: Format, batch: usize) -> Vec<Batch> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, bytes).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        read_file(path, format, batch, tx, InputPosition::Start).unwrap();
        let mut out = Vec::new();
        while let Some(b) = rx.blocking_recv() {
            out.push(b);
        }
        out
    }

    fn contents(b: &Batch) -> Vec<(String, String, Option<String>)> {
        b.iter()
            .map(|(bytes, m)| {
                let origin = b.origin(m);
                let name = origin.rsplit('/').next().unwrap().to_string();
                (
                    String::from_utf8_lossy(bytes).into(),
                    name,
                    m.framing_error.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn json_lines_keep_their_bytes_line_numbers_and_positions_across_batches() {
        let batches = read_all(
            b"{\"a\":1}\n\n  \r\n{\"b\":22}\r\n{\"c\":333}",
            Format::Json,
            2,
        );
        assert_eq!(batches.len(), 2);
        let s = |a: &str, o: &str| (a.to_string(), o.to_string(), None);
        assert_eq!(
            contents(&batches[0]),
            vec![s("{\"a\":1}", "in:1"), s("{\"b\":22}", "in:4")]
        );
        assert_eq!(contents(&batches[1]), vec![s("{\"c\":333}", "in:5")]);
        let offset = |b: &Batch| match &b.end {
            InputPosition::File {
                offset, messages, ..
            } => (*offset, *messages),
            other => panic!("{other:?}"),
        };
        assert_eq!(offset(&batches[0]), (23, 2));
        assert_eq!(offset(&batches[1]), (32, 3));
    }

    #[test]
    fn a_corrupt_length_prefix_is_a_framing_error_read_as_it_comes() {
        // "abc", then a prefix claiming 2^60 bytes followed by 5: the
        // reader must not allocate the claimed size up front.
        let mut input = vec![3, b'a', b'b', b'c'];
        input.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
        input.extend_from_slice(b"12345");
        let batches = read_all(&input, Format::Protobuf, 10);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            contents(&batches[0]),
            vec![
                ("abc".into(), "in:1".into(), None),
                (
                    String::new(),
                    "in:2".into(),
                    Some("input ends inside a 1152921504606846976-byte message".into())
                ),
            ]
        );
        let cut = read_all(&[0x80], Format::Protobuf, 10);
        assert_eq!(
            cut[0].msgs[0].framing_error.as_deref(),
            Some("input ends inside a length prefix")
        );
    }

    #[test]
    fn generator_messages_are_named_without_a_line_number() {
        let mut b = Batch::new("generator".into(), 2);
        b.push(b"x", 0);
        let (_, m) = b.iter().next().unwrap();
        assert_eq!(b.origin(m), "generator");
    }
}
