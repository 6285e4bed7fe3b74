//! Events the engine holds back instead of counting at once
//! (docs/time.md):
//!
//! - an event about a lead, deal or customer not seen yet *waits* for it
//!   (until it would be late), so that it counts with the entity's
//!   dimensions, in its own windows, when the entity arrives;
//! - an event far ahead of the clock (`time.max_jump`) is *held* as a
//!   suspected outlier instead of moving the clock, until
//!   `time.jump_confirmations` events in a row confirm the jump, the
//!   clock catches up with it, or the input ends;
//! - an event dated after the wall clock + `time.max_future_skew` is
//!   rejected as `future`.
//!
//! Held events are kept decoded, as the protobuf model's owned `Event`,
//! while fewer than [`DECODED_CAP`] are held, so that counting them
//! later does not decode them again; beyond that, as protobuf bytes
//! (about 460 bytes less each for a deal outcome). Checkpoints store them
//! as protobuf bytes either way ([`HeldEvent`]).

use super::state::*;
use super::Engine;
use crate::decode::{proto, Reject, RejectReason};
use crate::event::Event;
use crate::pb;
use crate::window::format_time;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// Held events kept decoded at most (≈ 460 bytes each more than as
/// bytes for a deal outcome, so ≤ 30 MB more): an event is held decoded
/// only if fewer than this many are held when it comes. That bounds the
/// decoded ones held at any time: the last one held found fewer than the
/// cap held, and every other decoded one still held was among them.
pub const DECODED_CAP: usize = 1 << 16;

/// An event the engine holds back: decoded (the protobuf model's owned
/// `Event`, boxed so that the tables holding it stay small) or as
/// protobuf bytes. Serialized as the bytes, the same as the `Vec<u8>` of
/// checkpoints written before; restored as bytes.
#[derive(Debug, Clone)]
pub enum HeldEvent {
    Decoded(Box<pb::Event>),
    Encoded(Box<[u8]>),
}

impl HeldEvent {
    fn new(e: &Event<'_>, decoded: bool) -> Self {
        let m = proto::from_event(e);
        if decoded {
            Self::Decoded(Box::new(m))
        } else {
            Self::Encoded(prost::Message::encode_to_vec(&m).into_boxed_slice())
        }
    }

    /// Reads the event and hands it to `f` (borrowing the held strings, or
    /// strings decoded for the call).
    pub fn with<R>(&self, f: impl FnOnce(&Event<'_>) -> R) -> Result<R, Reject> {
        match self {
            Self::Decoded(m) => proto::to_event(m).map(|e| f(&e)),
            Self::Encoded(bytes) => {
                let m = proto::decode_message(bytes)?;
                proto::to_event(&m).map(|e| f(&e))
            }
        }
    }
}

impl Serialize for HeldEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Decoded(m) => prost::Message::encode_to_vec(&**m).serialize(s),
            Self::Encoded(bytes) => bytes.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for HeldEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(d).map(|v| Self::Encoded(v.into_boxed_slice()))
    }
}

fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Waiting {
    /// Holds `e` (decoded while fewer than [`DECODED_CAP`] are held).
    fn hold(&self, e: &Event<'_>) -> HeldEvent {
        HeldEvent::new(e, self.facts.len() + self.outliers.len() < DECODED_CAP)
    }

    pub fn rebuild(&mut self) {
        self.by_entity.clear();
        self.stale = 0;
        for (k, (ent, _)) in self.facts.iter() {
            self.by_entity.entry(*ent).or_default().push(*k);
        }
    }

    /// Takes the oldest waiting event if it is older than `before`,
    /// leaving its key in `by_entity` (pruned in one pass over the table
    /// once the keys taken out outnumber the events still waiting).
    pub fn pop_before(&mut self, before: i64) -> Option<(EntityRef, HeldEvent)> {
        if self.facts.first()?.0 .0 >= before {
            return None;
        }
        let (key, fact) = self.facts.pop_first()?;
        self.popped = self.popped.max(key);
        self.stale += 1;
        if self.stale > self.facts.len().max(1024) {
            self.prune();
        }
        Some(fact)
    }

    /// Drops the keys of events no longer waiting from `by_entity`. Only
    /// keys up to `popped` can be stale; they are looked up in `facts`
    /// (near its start, where a lookup stays in cache).
    pub fn prune(&mut self) {
        let (facts, popped) = (&self.facts, self.popped);
        // Keys below the oldest waiting event are not waiting: no lookup.
        let oldest = facts.first().map_or((i64::MAX, u64::MAX), |(k, _)| *k);
        self.by_entity.retain(|_, keys| {
            keys.retain(|k| *k > popped || (*k >= oldest && facts.contains_key(k)));
            !keys.is_empty()
        });
        self.stale = 0;
    }
}

impl Engine {
    fn wall_clock_ms(&self) -> i64 {
        self.settings.now.unwrap_or_else(system_clock_ms)
    }

    /// Rejects an event dated after the wall clock + `time.max_future_skew`.
    /// The wall clock is read again only for an event past the last reading.
    pub(super) fn check_future(&mut self, t: i64) -> Result<(), Reject> {
        let skew = self.settings.max_future_skew;
        if skew == 0 || t <= self.wall_limit {
            return Ok(());
        }
        let now = self.wall_clock_ms();
        self.wall_limit = now.saturating_add(skew);
        if t <= self.wall_limit {
            return Ok(());
        }
        Err(Reject::new(
            RejectReason::Future,
            format!(
                "event time {} is more than time.max_future_skew ({} s) after the wall clock ({})",
                format_time(t),
                skew / 1000,
                format_time(now)
            ),
        ))
    }

    /// Whether an event at `t` is a suspected outlier: more than
    /// `time.max_jump` ahead of the clock, and not near the wall clock (a
    /// live stream that resumes after a quiet spell is not suspect).
    pub(super) fn is_outlier(&self, t: i64) -> bool {
        let jump = self.settings.max_jump;
        jump != 0
            && !self.external_clock
            && self.state.clock != i64::MIN
            && t > self.state.clock.saturating_add(jump)
            && t < self.wall_clock_ms().saturating_sub(jump)
    }

    /// Holds a suspected outlier; `time.jump_confirmations` of them in a
    /// row confirm the jump.
    pub(super) fn hold_outlier(&mut self, e: &Event<'_>) {
        let w = &mut self.state.waiting;
        w.run += 1;
        let event = w.hold(e);
        w.outliers.push(Held {
            time: e.time,
            run: w.run_id,
            event,
        });
        self.state.stats.outliers[0] += 1;
        if w.run == 1 {
            tracing::warn!(
                time = %format_time(e.time),
                clock = %format_time(self.state.clock),
                "an event far ahead of the event-time clock (time.max_jump) is held: it moves the clock only if time.jump_confirmations events in a row confirm the jump (counted in salespulse_time_outliers_total)"
            );
        }
        if w.run >= self.settings.jump_confirmations {
            self.confirm_jump();
        }
    }

    /// An event moved the clock: the outliers held so far were not a jump.
    pub(super) fn end_outlier_run(&mut self) {
        let w = &mut self.state.waiting;
        if w.run > 0 {
            w.run = 0;
            w.run_id += 1;
        }
    }

    /// The current run of outliers is a genuine jump: the clock moves to
    /// the earliest of them, then each counts, in arrival order.
    fn confirm_jump(&mut self) {
        let w = &mut self.state.waiting;
        let run = w.run_id;
        w.run = 0;
        w.run_id += 1;
        let (mine, rest): (Vec<Held>, Vec<Held>) = std::mem::take(&mut w.outliers)
            .into_iter()
            .partition(|h| h.run == run);
        w.outliers = rest;
        let Some(target) = mine.iter().map(|h| h.time).min() else {
            return;
        };
        self.state.stats.jumps += 1;
        tracing::info!(
            to = %format_time(target),
            from = %format_time(self.state.clock),
            events = mine.len(),
            "a jump of the event-time clock is confirmed: it moves on"
        );
        self.advance_clock(target);
        for h in mine {
            self.count_held(h, 1);
        }
    }

    /// Counts the outliers the clock has come within `time.max_jump` of.
    pub(super) fn release_caught_up(&mut self) {
        let w = &self.state.waiting;
        if w.outliers.is_empty() {
            return;
        }
        let reach = self.state.clock.saturating_add(self.settings.max_jump);
        if !w.outliers.iter().any(|h| h.time <= reach) {
            return;
        }
        let (due, rest): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.state.waiting.outliers)
            .into_iter()
            .partition(|h| h.time <= reach);
        self.state.waiting.outliers = rest;
        for h in due {
            self.count_held(h, 2);
        }
    }

    /// Counts a held outlier like a new event (it may be held again if it
    /// is still far ahead); `outcome` indexes `Stats::outliers`.
    fn count_held(&mut self, mut h: Held, outcome: usize) {
        if self.is_outlier(h.time) {
            // Still far ahead: held again, on its own.
            h.run = self.state.waiting.run_id.wrapping_sub(1);
            self.state.waiting.outliers.push(h);
            return;
        }
        self.replay(&h.event, |me, e, stage| {
            me.count_held_event(e, stage, outcome)
        });
    }

    fn count_held_event(&mut self, e: &Event<'_>, stage: Option<u8>, outcome: usize) {
        let cutoff = self.cutoff();
        if e.time < cutoff {
            // The jump closed its windows (it was held against the old
            // clock): late, like an event that arrives after them.
            self.state.stats.rejected[RejectReason::Late as usize] += 1;
            tracing::warn!(time = %format_time(e.time), cutoff = %format_time(cutoff), "a held event is late after the jump it was part of: not counted (salespulse_events_rejected_total{{reason=\"late\"}})");
            return;
        }
        self.state.stats.outliers[outcome] += 1;
        self.admit(e, stage);
    }

    /// End of input (by [`Engine::finish`], or a source engine at the end
    /// of its partition): the outliers still held count in their own
    /// windows, without moving the clock; then every waiting event counts.
    pub fn end_of_input(&mut self) {
        for h in std::mem::take(&mut self.state.waiting.outliers) {
            self.replay(&h.event, |me, e, stage| {
                me.state.stats.outliers[3] += 1;
                me.apply_counting(e, stage);
            });
        }
        self.flush_waiting(i64::MAX);
    }

    /// Hands a held event, with its new stage, to `f`.
    fn replay(&mut self, held: &HeldEvent, f: impl FnOnce(&mut Engine, &Event<'_>, Option<u8>)) {
        let read = held.with(|e| {
            if let Ok(stage) = self.check_stages(e) {
                f(self, e, stage);
            }
        });
        if let Err(e) = read {
            tracing::error!(error = %e, "a held event does not decode: dropped");
        }
    }

    /// Whether an event about an unknown entity may wait for it: not
    /// when waiting is off (`state.max_waiting = 0`), nor for an event
    /// counting after its wait without its entity.
    pub(super) fn may_wait(&self) -> bool {
        !self.unmatched && self.settings.max_waiting != 0
    }

    /// Makes `e`, about entity `ent` that is not known, wait for it.
    /// Returns false when it must count now (with unknown dimensions).
    pub(super) fn wait_for(&mut self, ent: EntityRef, e: &Event<'_>) -> bool {
        if !self.may_wait() {
            return false;
        }
        if self.state.waiting.facts.len() >= self.settings.max_waiting {
            // Full: the oldest counts now.
            let Some((&(t, _), _)) = self.state.waiting.facts.first() else {
                return false;
            };
            self.flush_waiting(t.saturating_add(1));
        }
        let w = &mut self.state.waiting;
        let key = (e.time, w.seq);
        w.seq += 1;
        let held = w.hold(e);
        w.facts.insert(key, (ent, held));
        w.by_entity.entry(ent).or_default().push(key);
        self.state.stats.waited[0] += 1;
        true
    }

    /// Counts the waiting events older than `before` with unknown
    /// dimensions (their entity did not come in time), oldest first.
    pub(super) fn flush_waiting(&mut self, before: i64) {
        while let Some((_, held)) = self.state.waiting.pop_before(before) {
            self.apply_waiting(&held, false);
        }
    }

    /// Entity `ent` arrives at `t`: the events waiting for it from more
    /// than `time.grace` before `t` count with unknown dimensions (so
    /// whether an event is attributed does not depend on arrival order);
    /// call before the entity is created.
    pub(super) fn unmatch_before(&mut self, ent: EntityRef, t: i64) {
        let from = t.saturating_sub(self.settings.grace);
        self.take_waiting(ent, |k| k.0 < from, false);
    }

    /// Entity `ent` has been created: the events waiting for it count
    /// with its dimensions, in time order.
    pub(super) fn release(&mut self, ent: EntityRef) {
        self.take_waiting(ent, |_| true, true);
    }

    fn take_waiting(&mut self, ent: EntityRef, pick: impl Fn(&(i64, u64)) -> bool, matched: bool) {
        let w = &mut self.state.waiting;
        if w.by_entity.is_empty() {
            return;
        }
        let Some(keys) = w.by_entity.get_mut(&ent) else {
            return;
        };
        let mut due: SmallVec<[(i64, u64); 1]> = SmallVec::new();
        keys.retain(|k| {
            let take = pick(k);
            if take {
                due.push(*k);
            }
            !take
        });
        if keys.is_empty() {
            w.by_entity.remove(&ent);
        }
        due.sort_unstable();
        // Keys of events already counted (`Waiting::pop_before` leaves
        // them) are no longer in `facts`: skipped.
        for k in due {
            if let Some((_, held)) = self.state.waiting.facts.remove(&k) {
                self.apply_waiting(&held, matched);
            }
        }
    }

    /// Counts a waiting event: with its entity's dimensions (`matched`)
    /// or, the entity not having come, as unknown.
    fn apply_waiting(&mut self, held: &HeldEvent, matched: bool) {
        self.replay(held, |me, e, stage| {
            me.state.stats.waited[if matched { 1 } else { 2 }] += 1;
            let was = std::mem::replace(&mut me.unmatched, !matched);
            me.apply_counting(e, stage);
            me.unmatched = was;
        });
    }

    /// Events waiting for their entity, and outliers held.
    pub fn waiting_counts(&self) -> [usize; 2] {
        [
            self.state.waiting.facts.len(),
            self.state.waiting.outliers.len(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(w: &mut Waiting, key: (i64, u64), ent: EntityRef) {
        w.facts.insert(key, (ent, HeldEvent::Encoded(Box::new([]))));
        w.by_entity.entry(ent).or_default().push(key);
    }

    #[test]
    fn counted_waiting_events_leave_the_entity_index_lazily_and_prune_keeps_the_waiting_ones() {
        let (a, b, c) = ((1, 7), (1, 8), (0, 9));
        let mut w = Waiting::default();
        fact(&mut w, (10, 0), a);
        fact(&mut w, (20, 1), b);
        fact(&mut w, (50, 2), a);
        // The two oldest count: their keys stay in the index for now.
        assert!(w.pop_before(30).is_some());
        assert!(w.pop_before(30).is_some());
        assert!(w.pop_before(30).is_none());
        assert_eq!(w.popped, (20, 1));
        assert_eq!(w.by_entity[&a].as_slice(), &[(10, 0), (50, 2)]);
        // An event older than those counted still waits (below `popped`).
        fact(&mut w, (5, 3), c);
        w.prune();
        assert_eq!(w.by_entity[&a].as_slice(), &[(50, 2)]);
        assert!(!w.by_entity.contains_key(&b));
        assert_eq!(w.by_entity[&c].as_slice(), &[(5, 3)]);
        assert_eq!(w.stale, 0);
        // Pruned on its own once the stale keys outnumber the waiting.
        for i in 0..3000u64 {
            fact(&mut w, (100 + i as i64, 10 + i), (1, u128::from(i) + 100));
        }
        while w.pop_before(3000).is_some() {}
        let keys: usize = w.by_entity.values().map(|k| k.len()).sum();
        assert!(
            keys <= w.facts.len() + 1025,
            "{keys} keys for {} waiting",
            w.facts.len()
        );
        w.prune();
        let keys: usize = w.by_entity.values().map(|k| k.len()).sum();
        assert_eq!(keys, w.facts.len());
    }
}
