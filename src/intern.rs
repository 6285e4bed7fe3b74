//! Interning of dimension values (rep, team, channel, product…) into small
//! integer ids, so that aggregate keys are fixed-size arrays of `u32`.
//! Id 0 is reserved for "none"; [`UNKNOWN`] is the series of events that
//! lack a dimension (the value `unknown` maps to it too).

use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize};

/// The id of the `unknown` series of a dimension: the events without a
/// value for it (docs/time.md), so that "all" is the sum of the series.
pub const UNKNOWN: u32 = u32::MAX;
pub const UNKNOWN_NAME: &str = "unknown";

#[derive(Debug, Clone, Serialize)]
pub struct Interner {
    names: Vec<Box<str>>,
    #[serde(skip)]
    ids: FxHashMap<Box<str>, u32>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            names: vec!["".into()],
            ids: FxHashMap::default(),
        }
    }
}

impl<'de> Deserialize<'de> for Interner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            names: Vec<Box<str>>,
        }
        let raw = Raw::deserialize(d)?;
        let ids = raw
            .names
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Ok(Interner {
            names: raw.names,
            ids,
        })
    }
}

impl Interner {
    /// The id of `s`; the empty string is id 0.
    pub fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if s == UNKNOWN_NAME {
            return UNKNOWN;
        }
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    pub fn intern_opt(&mut self, s: Option<&str>) -> u32 {
        s.map_or(0, |s| self.intern(s))
    }

    /// The id of `s` if it was interned before.
    pub fn get(&self, s: &str) -> Option<u32> {
        if s == UNKNOWN_NAME {
            return Some(UNKNOWN);
        }
        self.ids.get(s).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        if id == UNKNOWN {
            return UNKNOWN_NAME;
        }
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}

/// Serializes a map with non-string keys as a list of pairs (JSON object
/// keys must be strings).
pub mod as_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, M, K, V, S>(m: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(m)
    }

    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
