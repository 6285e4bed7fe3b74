//! Personal data: the keyed pseudonyms entities are remembered by, and
//! the redaction of personal fields in dead letters (docs/privacy.md).
//!
//! An entity (lead, deal, customer) is kept under a 128-bit keyed hash of
//! its CRM id — SipHash-2-4 with a 128-bit secret key, a pseudo-random
//! function made to be keyed — so that a list of candidate ids cannot be
//! matched against a checkpoint or changelog without the key. The key is
//! never logged, never written to a checkpoint or changelog; its
//! fingerprint (a hash of a fixed text under the key, which tells nothing
//! of the key) is, so that a restore under another key is refused
//! instead of silently splitting every entity in two.

use siphasher::sip128::SipHasher24;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The hashing key of entity ids and event ids, and its fingerprint.
#[derive(Clone)]
pub struct Pseudonyms {
    hasher: SipHasher24,
    /// What a checkpoint records of the key (see the module doc).
    fingerprint: String,
}

/// Never shows the key.
impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pseudonyms({})", self.fingerprint)
    }
}

/// The built-in key: all zeros, public. Used when no key is configured
/// where a key cannot be generated (Kafka mode, whose instances must
/// agree), with a warning at start-up; and by tests and benches.
impl Default for Pseudonyms {
    fn default() -> Self {
        Pseudonyms {
            hasher: SipHasher24::new_with_key(&[0; 16]),
            fingerprint: UNKEYED.into(),
        }
    }
}

/// The fingerprint of the built-in key.
pub const UNKEYED: &str = "none (built-in public key)";

/// A text hashed under the key to make its fingerprint.
const FINGERPRINT_TEXT: &[u8] = b"salespulse pseudonym key fingerprint v1";

impl Pseudonyms {
    pub fn new(key: [u8; 16]) -> Pseudonyms {
        let hasher = SipHasher24::new_with_key(&key);
        let f = u128::from(hasher.hash(FINGERPRINT_TEXT));
        Pseudonyms {
            hasher,
            fingerprint: format!("key {:016x}", (f >> 64) as u64),
        }
    }

    /// The pseudonym of an entity id.
    #[inline]
    pub fn entity(&self, id: &str) -> u128 {
        self.hasher.hash(id.as_bytes()).into()
    }

    /// The dedup key of an event: its `id` hashed under the key, seeded
    /// with its `source` (event ids can embed entity ids).
    #[inline]
    pub fn event(&self, source: &str, id: &str) -> u128 {
        use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64};
        // The keyed hash of the id, then an unkeyed mix with the source:
        // one SipHash per event; (source, id) pairs still differ.
        let h: u128 = self.hasher.hash(id.as_bytes()).into();
        h ^ xxh3_128_with_seed(&h.to_le_bytes(), xxh3_64(source.as_bytes()))
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn is_keyed(&self) -> bool {
        self.fingerprint != UNKEYED
    }

    /// A fresh random key, from the operating system.
    pub fn generate() -> std::io::Result<[u8; 16]> {
        use std::io::Read;
        let mut key = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(key)
    }
}

/// A key as written in `privacy.key` or a key file: 32 hex digits
/// (surrounding whitespace ignored).
pub fn parse_key(text: &str) -> Result<[u8; 16], String> {
    let t = text.trim();
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a key is 32 hexadecimal digits (128 bits); this one has {} characters{}",
            t.len(),
            if t.bytes().all(|b| b.is_ascii_hexdigit()) {
                ""
            } else {
                " and some are not hexadecimal"
            }
        ));
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("hex checked");
    }
    Ok(key)
}

/// Where the key of a run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `privacy.key` (from the environment, normally).
    Setting,
    /// `privacy.key_file`.
    File(PathBuf),
    /// Generated at the first run and kept next to the checkpoint.
    NextToCheckpoint(PathBuf),
    /// Generated for this run only (nothing is persisted).
    Ephemeral,
    /// The built-in public key (Kafka mode without a key).
    BuiltIn,
}

/// The key file kept next to checkpoint `ckpt` when no key is configured.
pub fn key_next_to(ckpt: &Path) -> PathBuf {
    let mut p = ckpt.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// Reads the key file `path`, or creates it (mode 0600) with a fresh key.
pub fn read_or_create_key(path: &Path) -> Result<[u8; 16], String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Pseudonyms::generate().map_err(|e| format!("no random source: {e}"))?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, &format!("{hex}\n"))
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a file only its owner can read (created new: an existing file is an error).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// What replaces a redacted value in a dead letter.
pub const REDACTED: &str = "[redacted]";

/// `raw` with the value of every JSON member whose name is in `fields`
/// (ASCII case-insensitive, at any depth) replaced by `"[redacted]"`;
/// everything else is kept byte for byte. Works on broken JSON too (a
/// dead letter is often not valid): it scans string tokens, and a name
/// followed by `:` has its value — a string, number or literal; an object
/// or array whole — replaced. Not UTF-8 text (protobuf): returned as is.
/// Also returns how many values were replaced.
pub fn redact<'a>(raw: &'a [u8], fields: &[String]) -> (Cow<'a, [u8]>, usize) {
    if fields.is_empty() || std::str::from_utf8(raw).is_err() {
        return (Cow::Borrowed(raw), 0);
    }
    let mut count = 0;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // raw[..copied] is in `out`
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(raw, i);
        let name = &raw[i + 1..end.saturating_sub(1).max(i + 1)];
        i = end;
        let mut j = skip_ws(raw, i);
        if j >= raw.len() || raw[j] != b':' {
            continue;
        }
        if !fields
            .iter()
            .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
        {
            continue;
        }
        j = skip_ws(raw, j + 1);
        let value_end = value_end(raw, j);
        if value_end == j {
            continue;
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(raw.len()));
        o.extend_from_slice(&raw[copied..j]);
        o.extend_from_slice(b"\"");
        o.extend_from_slice(REDACTED.as_bytes());
        o.extend_from_slice(b"\"");
        copied = value_end;
        i = value_end;
        count += 1;
    }
    match out {
        None => (Cow::Borrowed(raw), 0),
        Some(mut o) => {
            o.extend_from_slice(&raw[copied..]);
            (Cow::Owned(o), count)
        }
    }
}

/// The index just past the string starting at `raw[start] == '"'` (or the end).
fn string_end(raw: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    raw.len()
}

fn skip_ws(raw: &[u8], mut i: usize) -> usize {
    while i < raw.len() && raw[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index just past the JSON value starting at `i`: a string, an
/// object or array (brackets balanced, strings skipped), or a bare token
/// up to the next `,` `}` `]` or whitespace.
fn value_end(raw: &[u8], i: usize) -> usize {
    match raw.get(i) {
        None => i,
        Some(b'"') => string_end(raw, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut k = i;
            while k < raw.len() {
                match raw[k] {
                    b'"' => {
                        k = string_end(raw, k);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return k + 1;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            raw.len()
        }
        Some(_) => {
            let mut k = i;
            while k < raw.len() && !matches!(raw[k], b',' | b'}' | b']') {
                if raw[k].is_ascii_whitespace() {
                    break;
                }
                k += 1;
            }
            k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(raw: &str) -> String {
        let fields = vec!["email".to_string(), "phone".to_string(), "name".to_string()];
        String::from_utf8(redact(raw.as_bytes(), &fields).0.into_owned()).unwrap()
    }

    #[test]
    fn personal_fields_are_redacted_at_any_depth_and_the_rest_kept() {
        assert_eq!(
            r(
                r#"{"id":"e1","data":{"lead_id":"L1","Email":"a@b.c","phone": 33612, "name" : {"first":"Ann"},"x":"name"}}"#
            ),
            r#"{"id":"e1","data":{"lead_id":"L1","Email":"[redacted]","phone": "[redacted]", "name" : "[redacted]","x":"name"}}"#
        );
        // Broken JSON (what a dead letter often is), escapes in strings.
        assert_eq!(
            r(r#"{"data":{"email":"a\"@b.c","amount":"x"#),
            r#"{"data":{"email":"[redacted]","amount":"x"#
        );
        assert_eq!(r(r#"{"email":"#), r#"{"email":"#);
        assert_eq!(r(r#"["email", "phone"]"#), r#"["email", "phone"]"#);
        let bin = [0xff, 0x00, b'"'];
        assert!(matches!(
            redact(&bin, &["email".into()]),
            (Cow::Borrowed(_), 0)
        ));
        let (_, n) = redact(br#"{"email":"a","data":{"email":1}}"#, &["email".into()]);
        assert_eq!(n, 2);
    }

    #[test]
    fn keys_parse_and_fingerprints_tell_keys_apart() {
        let k = parse_key(" 000102030405060708090a0b0c0d0e0f\n").unwrap();
        assert_eq!(k[15], 15);
        assert!(parse_key("abc")
            .unwrap_err()
            .contains("32 hexadecimal digits"));
        assert!(parse_key(&"g".repeat(32))
            .unwrap_err()
            .contains("not hexadecimal"));
        let a = Pseudonyms::new(k);
        let b = Pseudonyms::new([1; 16]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.entity("lead-1"), b.entity("lead-1"));
        assert_eq!(a.entity("lead-1"), Pseudonyms::new(k).entity("lead-1"));
        assert_ne!(a.event("s1", "e"), a.event("s2", "e"));
        assert!(!format!("{a:?}").contains("0001020304"));
        assert!(!Pseudonyms::default().is_keyed());
    }
}
