//! A lean JSON reader for the fast path of [`super::json::decode`]: a
//! `serde::Deserializer` over the plain shape every CRM connector we know
//! writes, driving the very same derived `Deserialize` impls as
//! serde_json does — so field names, required and optional fields, enum
//! values and defaults cannot drift between the two paths.
//!
//! It accepts a strict subset of JSON and gives up ([`Fallback`]) on
//! anything else: a backslash anywhere in a string (escapes), a negative
//! number, an integer beyond `u64`, a number or literal out of the JSON
//! grammar, nesting deeper than [`MAX_DEPTH`], a struct written as an
//! array, a `RawValue`, or any error a derived impl raises (missing
//! field, wrong type…). The caller then decodes the message again with
//! serde_json, which names the precise reason. Where this reader
//! succeeds, the input is valid JSON and the visitors have seen exactly
//! the calls serde_json would make on it (numbers: `visit_u64` for
//! integers, `visit_f64` for the rest, both correctly rounded — serde_json
//! runs with `float_roundtrip`). The tests of `json.rs` check this against
//! serde_json on generated events of every type and on random mutations
//! of them.
//!
//! Why: serde_json is general (escapes, positions for error messages, a
//! scratch buffer, a reader abstraction); on the 230-byte events of the
//! benchmarks this reader (with the borrowed required strings of
//! `event.rs`) brings decode + validation from about 6,200 to 4,600
//! instructions, most of it in finding where strings end (eight bytes at
//! a time), and JSON decoding was two thirds of the per-event cost at
//! high event rates.

use serde::de::{self, DeserializeSeed, Visitor};
use serde::forward_to_deserialize_any;
use std::fmt;

/// Deeper nesting than this (only ever in ignored fields) goes to serde_json.
pub const MAX_DEPTH: u32 = 32;

/// "Not on the fast path": the caller decodes with serde_json instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback;

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not on the JSON fast path")
    }
}

impl std::error::Error for Fallback {}

impl de::Error for Fallback {
    #[cold]
    fn custom<T: fmt::Display>(_: T) -> Self {
        Fallback
    }
}

type R<T> = Result<T, Fallback>;

/// The reader: a position in a UTF-8 text (checked once by the caller).
pub struct Reader<'de> {
    text: &'de str,
    pos: usize,
    depth: u32,
}

impl<'de> Reader<'de> {
    pub fn new(text: &'de str) -> Reader<'de> {
        Reader {
            text,
            pos: 0,
            depth: 0,
        }
    }

    /// Deserializes one value, then requires nothing but whitespace after it.
    #[inline(always)]
    pub fn whole<T, S: DeserializeSeed<'de, Value = T>>(mut self, seed: S) -> R<T> {
        let v = seed.deserialize(&mut self)?;
        // The end of the text, not a NUL byte (which `skip_ws` also returns).
        self.skip_ws();
        if self.pos != self.text.len() {
            return Err(Fallback);
        }
        Ok(v)
    }

    /// Skips whitespace; the next byte, or 0 at the end (never valid JSON).
    #[inline(always)]
    fn skip_ws(&mut self) -> u8 {
        let b = self.text.as_bytes();
        while let Some(&c) = b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return c;
            }
            self.pos += 1;
        }
        0
    }

    /// Consumes `c` (after whitespace) or gives up.
    #[inline(always)]
    fn expect(&mut self, c: u8) -> R<()> {
        if self.skip_ws() == c {
            self.pos += 1;
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    /// A string at the position (its opening quote), borrowed: no escapes,
    /// no control characters (which JSON forbids raw).
    #[inline(always)]
    fn string(&mut self) -> R<&'de str> {
        let b = self.text.as_bytes();
        let start = self.pos + 1;
        let mut i = start;
        // Eight bytes at a time: the first quote, backslash or control
        // character ends the scan (most values and keys take one or two words).
        while let Some(word) = b.get(i..i + 8) {
            let m = special(u64::from_le_bytes(word.try_into().expect("8 bytes")));
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            i += 1;
        }
        if b.get(i) != Some(&b'"') {
            return Err(Fallback);
        }
        self.pos = i + 1;
        // Both ends are next to ASCII quotes, hence char boundaries.
        Ok(&self.text[start..i])
    }

    /// A number at the position, in the JSON grammar, non-negative.
    fn number<V: Visitor<'de>>(&mut self, v: V) -> R<V::Value> {
        let b = self.text.as_bytes();
        let start = self.pos;
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        let mut i = start;
        let int = digits(&mut i);
        if int == 0 || (int > 1 && b[start] == b'0') {
            return Err(Fallback);
        }
        let int_end = i;
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                return Err(Fallback);
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(Fallback);
            }
        }
        self.pos = i;
        if i == int_end {
            let mut n: u64 = 0;
            for &c in &b[start..i] {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(c - b'0')))
                    .ok_or(Fallback)?;
            }
            v.visit_u64(n)
        } else {
            // serde_json refuses what overflows an f64 ("number out of range").
            let f: f64 = self.text[start..i].parse().map_err(|_| Fallback)?;
            if !f.is_finite() {
                return Err(Fallback);
            }
            v.visit_f64(f)
        }
    }

    /// `true`, `false` or `null` at the position.
    fn literal(&mut self, word: &str) -> R<()> {
        if self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Fallback);
        }
        self.pos += 1;
        Ok(())
    }

    /// An object at the position, through `v`, which must read all of it.
    #[inline(always)]
    fn object<V: Visitor<'de>>(&mut self, v: V) -> R<V::Value> {
        self.enter()?;
        let value = v.visit_map(Entries {
            r: self,
            first: true,
        })?;
        self.expect(b'}')?;
        self.depth -= 1;
        Ok(value)
    }

    fn array<V: Visitor<'de>>(&mut self, v: V) -> R<V::Value> {
        self.enter()?;
        let value = v.visit_seq(Elements {
            r: self,
            first: true,
        })?;
        self.expect(b']')?;
        self.depth -= 1;
        Ok(value)
    }

    /// Whether another entry / element follows (consuming its comma), or
    /// the container ends at `close` (not consumed).
    #[inline(always)]
    fn more(&mut self, first: &mut bool, close: u8) -> R<bool> {
        let c = self.skip_ws();
        if c == close {
            return Ok(false);
        }
        if std::mem::take(first) {
            return Ok(true);
        }
        if c != b',' {
            return Err(Fallback);
        }
        self.pos += 1;
        Ok(true)
    }
}

/// The bytes of `x` (little-endian) that are `"`, `\\` or below 0x20, as
/// their high bits. Only the lowest flagged byte is exact (a borrow can
/// flag a byte above a true one), and only the lowest is used. Bytes of
/// multi-byte UTF-8 characters (≥ 0x80) are never flagged.
#[inline(always)]
fn special(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let quote = x ^ (LO * u64::from(b'"'));
    let backslash = x ^ (LO * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(LO) & !v;
    (zero(quote) | zero(backslash) | (x.wrapping_sub(LO * 0x20) & !x)) & HI
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Fallback;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        match self.skip_ws() {
            b'"' => v.visit_borrowed_str(self.string()?),
            b'{' => self.object(v),
            b'[' => self.array(v),
            b'0'..=b'9' => self.number(v),
            b't' => self.literal("true").and_then(|()| v.visit_bool(true)),
            b'f' => self.literal("false").and_then(|()| v.visit_bool(false)),
            b'n' => self.literal("null").and_then(|()| v.visit_unit()),
            _ => Err(Fallback),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if self.skip_ws() != b'"' {
            return Err(Fallback);
        }
        v.visit_borrowed_str(self.string()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if self.skip_ws() == b'n' {
            self.literal("null")?;
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    #[inline(always)]
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        if self.skip_ws() != b'{' {
            return Err(Fallback);
        }
        self.object(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        self.deserialize_map(v)
    }

    /// Unit variants written as strings, the only enums the events have.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> R<V::Value> {
        if self.skip_ws() != b'"' {
            return Err(Fallback);
        }
        v.visit_enum(UnitVariant(self.string()?))
    }

    /// serde_json's `RawValue` is a newtype with a private name that only
    /// serde_json can fill: not here.
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, v: V) -> R<V::Value> {
        if name.starts_with("$serde_json") {
            return Err(Fallback);
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> R<V::Value> {
        self.deserialize_any(de::IgnoredAny)?;
        v.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes
        byte_buf unit unit_struct seq tuple tuple_struct
    }
}

struct Entries<'a, 'de> {
    r: &'a mut Reader<'de>,
    first: bool,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = Fallback;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if !self.r.more(&mut self.first, b'}')? {
            return Ok(None);
        }
        if self.r.skip_ws() != b'"' {
            return Err(Fallback);
        }
        let key = self.r.string()?;
        self.r.expect(b':')?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> R<S::Value> {
        seed.deserialize(&mut *self.r)
    }
}

struct Elements<'a, 'de> {
    r: &'a mut Reader<'de>,
    first: bool,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Fallback;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> R<Option<S::Value>> {
        if !self.r.more(&mut self.first, b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.r).map(Some)
    }
}

/// An enum value given as a string: a unit variant.
struct UnitVariant<'de>(&'de str);

impl<'de> de::EnumAccess<'de> for UnitVariant<'de> {
    type Error = Fallback;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> R<(S::Value, Self)> {
        let v = seed.deserialize(de::value::BorrowedStrDeserializer::new(self.0))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'de> {
    type Error = Fallback;

    fn unit_variant(self) -> R<()> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _: S) -> R<S::Value> {
        Err(Fallback)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> R<V::Value> {
        Err(Fallback)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> R<V::Value> {
        Err(Fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn fast<T: Deserialize<'static>>(s: &'static str) -> R<T> {
        Reader::new(s).whole(std::marker::PhantomData)
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        assert_eq!(fast::<f64>("12.5"), Ok(12.5));
        assert_eq!(fast::<f64>(" 20 "), Ok(20.0));
        assert_eq!(fast::<f64>("1e3"), Ok(1000.0));
        assert_eq!(fast::<f64>("0.1"), Ok(0.1));
        assert_eq!(fast::<u8>("9"), Ok(9));
        for bad in [
            "01",
            "1.",
            ".5",
            "+1",
            "-1",
            "1e",
            "1e+",
            "18446744073709551616",
            "NaN",
        ] {
            assert_eq!(fast::<f64>(bad), Err(Fallback), "{bad}");
        }
        assert_eq!(fast::<u8>("9.0"), Err(Fallback));
        assert_eq!(fast::<u8>("300"), Err(Fallback));
    }

    #[test]
    fn strings_borrow_and_escapes_fall_back() {
        assert_eq!(fast::<&str>(r#""Chloé A""#), Ok("Chloé A"));
        assert_eq!(fast::<&str>(r#""a\"b""#), Err(Fallback));
        assert_eq!(fast::<&str>("\"a\tb\""), Err(Fallback));
        assert_eq!(fast::<&str>(r#""open"#), Err(Fallback));
        // Every position of the stop byte within and after the 8-byte words.
        for n in 0..20 {
            let body: String = "é".repeat(n / 2) + &"x".repeat(n % 2);
            let ok: &'static str = Box::leak(format!("\"{body}\"").into_boxed_str());
            assert_eq!(fast::<&str>(ok), Ok(&ok[1..ok.len() - 1]), "{ok}");
            for stop in ["\\n", "\u{1}", "\u{1f}"] {
                let bad: &'static str = Box::leak(format!("\"{body}{stop}\"").into_boxed_str());
                assert_eq!(fast::<&str>(bad), Err(Fallback), "{bad:?}");
            }
        }
    }

    #[test]
    fn ignored_values_are_checked_and_trailing_bytes_refused() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct S {
            a: u32,
        }
        assert_eq!(
            fast::<S>(r#"{"x":[1,{"y":null},true,false,"s"],"a":1}"#),
            Ok(S { a: 1 })
        );
        for bad in [
            r#"{"x":[1,,2],"a":1}"#,
            r#"{"x":[1,2,],"a":1}"#,
            r#"{"x":tru,"a":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"[1]"#,
            r#"{"a":1,"a":2}"#,
            r#"{}"#,
        ] {
            assert_eq!(fast::<S>(bad), Err(Fallback), "{bad}");
        }
        let deep = format!("{{\"x\":{}1{},\"a\":1}}", "[".repeat(40), "]".repeat(40));
        let deep: &'static str = Box::leak(deep.into_boxed_str());
        assert_eq!(fast::<S>(deep), Err(Fallback));
    }
}
