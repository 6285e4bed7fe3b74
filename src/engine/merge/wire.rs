//! The partials' cells on the wire: an accumulator is a bit mask of its
//! fields that are not zero, then those fields. A cell of a sub-bucket
//! counts a few things (a rep's leads and wins, a channel's spend) of
//! the 36 an [`Acc`] holds: on the Kafka bench, rolling sub-buckets take
//! 0.52× the bytes of every field in turn, and partials 0.84× the
//! instructions to encode, 0.71× to decode (docs/performance.md).
//! Checkpoints keep the plain form.

use crate::agg::{Acc, Buyers, Dist};
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A field left out when zero, its default: round trips are exact.
trait Zero {
    fn is_zero(&self) -> bool;
}

macro_rules! zero_when_default {
    ($($t:ty),*) => {
        $(impl Zero for $t {
            fn is_zero(&self) -> bool {
                *self == 0
            }
        })*
    };
}
zero_when_default!(u64, i64, i128);

impl<T: Zero, const N: usize> Zero for [T; N] {
    fn is_zero(&self) -> bool {
        self.iter().all(Zero::is_zero)
    }
}

impl<T> Zero for Vec<T> {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl Zero for Dist {
    fn is_zero(&self) -> bool {
        self.is_default()
    }
}

impl Zero for Buyers {
    fn is_zero(&self) -> bool {
        self.0.is_none()
    }
}

/// An accumulator to encode.
struct Ref<'a>(&'a Acc);

/// A decoded accumulator.
struct Owned(Acc);

macro_rules! sparse {
    ($($f:ident),* $(,)?) => {
        /// Fields of [`Acc`]: bits of the mask.
        const FIELDS: u32 = [$(stringify!($f)),*].len() as u32;

        impl Serialize for Ref<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // Every field, or this does not compile.
                let Acc { $($f),* } = self.0;
                let mut mask = 0u64;
                let mut bit = 1u64;
                $(
                    if !$f.is_zero() {
                        mask |= bit;
                    }
                    bit <<= 1;
                )*
                let mut seq = s.serialize_seq(Some(1 + mask.count_ones() as usize))?;
                seq.serialize_element(&mask)?;
                bit = 1;
                $(
                    if mask & bit != 0 {
                        seq.serialize_element($f)?;
                    }
                    bit <<= 1;
                )*
                let _ = bit;
                seq.end()
            }
        }

        impl<'de> Deserialize<'de> for Owned {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Owned;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an accumulator: a field mask, then those fields")
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Owned, A::Error> {
                        let short = || A::Error::custom("an accumulator ended before its fields");
                        let mask: u64 = seq.next_element()?.ok_or_else(short)?;
                        if mask >> FIELDS != 0 {
                            return Err(A::Error::custom("an accumulator with unknown fields"));
                        }
                        let mut a = Acc::default();
                        let mut bit = 1u64;
                        $(
                            if mask & bit != 0 {
                                a.$f = seq.next_element()?.ok_or_else(short)?;
                            }
                            bit <<= 1;
                        )*
                        let _ = bit;
                        Ok(Owned(a))
                    }
                }
                d.deserialize_seq(V)
            }
        }
    };
}

sparse!(
    leads_created,
    leads_converted,
    leads_mql,
    leads_sql,
    response,
    sla_met,
    sla_breached,
    deals_won,
    deals_lost,
    deals_pushed,
    slipped_cents,
    deals_expired,
    expired_cents,
    revenue_cents,
    cycle,
    stage_moves,
    won_vs_competitor,
    lost_vs_competitor,
    priced_won,
    list_cents,
    priced_amount_cents,
    price_obs,
    our_price_cents,
    their_price_cents,
    customers_acquired,
    customers_cancelled,
    lifetimes,
    lifetime_ms,
    orders,
    order_revenue_cents,
    buyers,
    spend_cents,
    nps,
    csat_count,
    csat_milli,
    activities,
);

/// `#[serde(with = "wire")]` for a list of cells.
pub fn serialize<K: Serialize, S: Serializer>(v: &[(K, Acc)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(k, a)| (k, Ref(a))))
}

/// [`serialize`] of borrowed accumulators: the same bytes.
pub fn serialize_refs<K: Serialize, S: Serializer>(
    v: &[(K, &Acc)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(k, a)| (k, Ref(a))))
}

/// See [`serialize`].
pub fn deserialize<'de, K: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(K, Acc)>, D::Error> {
    let v: Vec<(K, Owned)> = Vec::deserialize(d)?;
    Ok(v.into_iter().map(|(k, a)| (k, a.0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cells(#[serde(with = "super")] Vec<(u32, Acc)>);

    fn roundtrip(c: &Cells) -> (usize, Cells) {
        let b = postcard::to_stdvec(c).unwrap();
        (b.len(), postcard::from_bytes(&b).unwrap())
    }

    #[test]
    fn every_field_and_none_round_trip_and_zeros_cost_nothing() {
        let mut full = Acc {
            leads_created: 1,
            leads_converted: 2,
            leads_mql: 3,
            leads_sql: 4,
            sla_met: 5,
            sla_breached: 6,
            deals_won: 7,
            deals_lost: 8,
            deals_pushed: 9,
            slipped_cents: -10,
            deals_expired: 11,
            expired_cents: 12,
            revenue_cents: 13,
            stage_moves: vec![[1, 2], [0, 0], [3, 4]],
            won_vs_competitor: 14,
            lost_vs_competitor: 15,
            priced_won: 16,
            list_cents: 17,
            priced_amount_cents: 18,
            price_obs: 19,
            our_price_cents: 20,
            their_price_cents: 21,
            customers_acquired: 22,
            customers_cancelled: 23,
            lifetimes: 24,
            lifetime_ms: i128::from(i64::MAX) * 3,
            orders: [1, 0, 2, 3],
            order_revenue_cents: 25,
            spend_cents: [26, 27],
            nps: [28, 0, 29],
            csat_count: 30,
            csat_milli: 31,
            activities: [0, 0, 0, 32],
            ..Default::default()
        };
        for ms in [5, 70_000, 3_600_000] {
            full.response.add(ms);
        }
        for ms in 0..200 {
            full.cycle.add(ms * 86_400_000);
        }
        full.buyers.insert(42);
        let sparse = Acc {
            deals_won: 1,
            revenue_cents: 500_000,
            ..Default::default()
        };
        let cells = Cells(vec![(0, Acc::default()), (1, full), (2, sparse)]);
        let (_, back) = roundtrip(&cells);
        assert_eq!(back, cells);
        assert_eq!(back.0[1].1.buyers, cells.0[1].1.buyers);
        // Seq length, then per cell: key, field count, mask (1 byte when
        // only low fields are set), fields.
        let (len, _) = roundtrip(&Cells(vec![(0, Acc::default())]));
        assert_eq!(len, 1 + 1 + 1 + 1, "a zero accumulator is its empty mask");
        let (len, _) = roundtrip(&Cells(vec![(0, cells.0[2].1.clone())]));
        assert!(len <= 12, "two fields: {len} bytes");
        let plain = postcard::to_stdvec(&cells.0[2].1).unwrap().len();
        assert!(
            plain >= 40,
            "the plain form writes every field: {plain} bytes"
        );
    }

    #[test]
    fn unknown_fields_and_short_input_are_errors() {
        let one = Acc {
            deals_won: 1,
            ..Default::default()
        };
        let b = postcard::to_stdvec(&Cells(vec![(0, one)])).unwrap();
        // One cell, key 0, one element: a mask with a bit past the fields.
        let bad = postcard::to_stdvec(&(1u8, 0u32, 1u8, 1u64 << 40)).unwrap();
        assert!(postcard::from_bytes::<Cells>(&bad).is_err());
        let ok = postcard::to_stdvec(&(1u8, 0u32, 1u8, 0u64)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Cells>(&ok).unwrap(),
            Cells(vec![(0, Acc::default())])
        );
        assert!(postcard::from_bytes::<Cells>(&b[..b.len() - 1]).is_err());
    }
}
