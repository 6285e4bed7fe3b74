//! The events waiting for their entity ([`super::state::Waiting::facts`]),
//! in key order: (event time, arrival number).
//!
//! A sorted `VecDeque` rather than a `BTreeMap`: events come nearly in
//! time order and leave oldest first, so an insert is a push at the back
//! and a pop one at the front, where a B-tree rebalances its nodes (most
//! of the table's cost on a stream where most events wait). An event
//! taken out of the middle (its entity came) leaves a tombstone, skipped
//! at the front and dropped in one pass once tombstones outnumber the
//! events. Serialized as the map the `BTreeMap` was, so checkpoints are
//! unchanged.

use super::hold::HeldEvent;
use super::state::EntityRef;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, VecDeque};

pub type Key = (i64, u64);
pub type Fact = (EntityRef, HeldEvent);

#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Ascending keys; `None` where an event was taken out. The front,
    /// when there is one, is never a tombstone.
    slots: VecDeque<(Key, Option<Fact>)>,
    /// Events in `slots` (not tombstones).
    live: usize,
}

impl Facts {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The oldest event.
    pub fn first(&self) -> Option<(&Key, &Fact)> {
        let (k, f) = self.slots.front()?;
        f.as_ref().map(|f| (k, f))
    }

    /// Takes the oldest event out.
    pub fn pop_first(&mut self) -> Option<(Key, Fact)> {
        let (k, f) = self.slots.pop_front()?;
        let f = f?;
        self.live -= 1;
        self.trim();
        Some((k, f))
    }

    /// Adds an event; `key` is not in the table (arrival numbers are unique).
    pub fn insert(&mut self, key: Key, fact: Fact) {
        push_sorted(&mut self.slots, (key, Some(fact)), |(k, _)| *k);
        self.live += 1;
    }

    fn find(&self, key: &Key) -> Option<usize> {
        self.slots.binary_search_by(|(k, _)| k.cmp(key)).ok()
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.find(key)
            .is_some_and(|i| self.slots.get(i).is_some_and(|(_, f)| f.is_some()))
    }

    /// Takes the event of `key` out, if it is waiting.
    pub fn remove(&mut self, key: &Key) -> Option<Fact> {
        let i = self.find(key)?;
        let fact = self.slots.get_mut(i)?.1.take()?;
        self.live -= 1;
        self.trim();
        if self.slots.len() > 2 * self.live + 1024 {
            self.slots.retain(|(_, f)| f.is_some());
        }
        Some(fact)
    }

    /// Drops the tombstones at the front.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|(_, f)| f.is_none()) {
            self.slots.pop_front();
        }
    }

    /// The events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Fact)> {
        self.slots
            .iter()
            .filter_map(|(k, f)| f.as_ref().map(|f| (k, f)))
    }

    /// Keeps the events `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Key, &Fact) -> bool) {
        self.slots
            .retain(|(k, f)| f.as_ref().is_some_and(|f| keep(k, f)));
        self.live = self.slots.len();
    }
}

/// Adds `item` to `q`, kept in ascending `key` order, after the items
/// with an equal key: a push at the back when it is the newest (the
/// usual case of a time-ordered table), else an insert in place.
pub(crate) fn push_sorted<T, K: Ord>(q: &mut VecDeque<T>, item: T, key: impl Fn(&T) -> K) {
    let k = key(&item);
    if q.back().is_none_or(|last| key(last) <= k) {
        q.push_back(item);
    } else {
        let at = q.partition_point(|x| key(x) <= k);
        q.insert(at, item);
    }
}

impl Serialize for Facts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.live))?;
        for (k, f) in self.iter() {
            m.serialize_entry(k, f)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Facts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Key, Fact>::deserialize(d)?;
        Ok(Facts {
            live: map.len(),
            slots: map.into_iter().map(|(k, f)| (k, Some(f))).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(n: u8) -> Fact {
        (
            (1, n as u128),
            HeldEvent::Encoded(vec![n].into_boxed_slice()),
        )
    }

    fn keys(f: &Facts) -> Vec<Key> {
        f.iter().map(|(k, _)| *k).collect()
    }

    /// The same operations on the table and on a `BTreeMap` give the
    /// same events in the same order, and the same checkpoint bytes.
    #[test]
    fn facts_behave_like_the_btreemap_they_replace() {
        let mut f = Facts::default();
        let mut b = BTreeMap::new();
        let mut rnd = 7u64;
        let mut next = || {
            rnd ^= rnd << 13;
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            rnd
        };
        for seq in 0..20_000u64 {
            let r = next();
            match r % 10 {
                // mostly in time order, sometimes out of it
                0..=4 => {
                    let t = (seq / 3) as i64 - (r / 10 % 4) as i64 * (r % 3 == 0) as i64;
                    let key = (t, seq);
                    f.insert(key, fact(seq as u8));
                    b.insert(key, fact(seq as u8));
                }
                5..=7 => {
                    assert_eq!(f.pop_first().map(|(k, _)| k), b.pop_first().map(|(k, _)| k));
                }
                _ => {
                    // an event from the middle, or one no longer there
                    let pick = b.keys().nth((r / 10) as usize % (b.len() + 1)).copied();
                    let key = pick.unwrap_or((-1, seq));
                    assert_eq!(f.contains_key(&key), b.contains_key(&key));
                    assert_eq!(f.remove(&key).map(|x| x.0), b.remove(&key).map(|x| x.0));
                }
            }
            assert_eq!(f.len(), b.len());
            assert_eq!(
                f.first().map(|(k, _)| *k),
                b.first_key_value().map(|(k, _)| *k)
            );
        }
        assert_eq!(keys(&f), b.keys().copied().collect::<Vec<_>>());
        assert_eq!(
            postcard::to_stdvec(&f).unwrap(),
            postcard::to_stdvec(&b).unwrap()
        );
        let back: Facts = postcard::from_bytes(&postcard::to_stdvec(&b).unwrap()).unwrap();
        assert_eq!(keys(&back), keys(&f));
        f.retain(|k, _| k.1 % 2 == 0);
        b.retain(|k, _| k.1 % 2 == 0);
        assert_eq!(keys(&f), b.keys().copied().collect::<Vec<_>>());
        assert_eq!(f.len(), b.len());
    }
}
