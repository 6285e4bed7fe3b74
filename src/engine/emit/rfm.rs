//! RFM segments of the active customers that ordered, with each gauge
//! emission: recency (newest order), frequency (orders) and monetary
//! (Σ order amount) scored 1–5 by quintile among them, and a segment
//! from recency and the mean of the other two (docs/kpis.md, "RFM").

use super::*;

/// Label values of `rfm_segment`, in the order of [`segment`]'s results.
pub const SEGMENTS: [&str; 11] = [
    "champions",
    "loyal",
    "potential_loyalists",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose",
    "hibernating",
    "lost",
];

/// The segment (index into [`SEGMENTS`]) of recency score `r` and
/// frequency-monetary score `fm`, both 1–5.
pub fn segment(r: u8, fm: u8) -> usize {
    match (r, fm) {
        (5, 4..) => 0,
        (4 | 3, 4..) => 1,
        (4 | 5, 2 | 3) => 2,
        (5, _) => 3,
        (4, _) => 4,
        (3, 3) => 5,
        (3, _) => 6,
        (_, 5) => 8,
        (_, 3 | 4) => 7,
        (2, _) => 9,
        _ => 10,
    }
}

/// Quintile score 1–5 of `v` among `sorted`: 1 + ⌊5 × (values below v) ÷ n⌋
/// (ties share the lower score).
pub fn score<T: Ord>(sorted: &[T], v: &T) -> u8 {
    let below = sorted.partition_point(|x| x < v);
    (1 + 5 * below / sorted.len().max(1)) as u8
}

impl Engine {
    pub(super) fn emit_rfm(&mut self, w: &Win) {
        let active: Vec<(DimKey, Rfm)> = if self.merge.is_some() {
            // The sources' customers.
            self.merged_rfm()
        } else {
            let s = &self.state;
            let active = s.rfm.iter().filter_map(|(id, r)| {
                let c = s.customers.get(id)?;
                (c.acquired.is_some() && c.cancelled.is_none()).then(|| (c.key(), *r))
            });
            active.collect()
        };
        let mut last: Vec<i64> = active.iter().map(|(_, r)| r.last).collect();
        let mut orders: Vec<u32> = active.iter().map(|(_, r)| r.orders).collect();
        let mut cents: Vec<i64> = active.iter().map(|(_, r)| r.cents).collect();
        last.sort_unstable();
        orders.sort_unstable();
        cents.sort_unstable();
        // (scope, segment) → (customers, Σ cents)
        let mut cells: BTreeMap<(Scope, usize), (u64, i64)> = BTreeMap::new();
        for s in 0..SEGMENTS.len() {
            cells.insert((ALL, s), (0, 0));
        }
        for (key, r) in &active {
            let fm = (score(&orders, &r.orders) + score(&cents, &r.cents)).div_ceil(2);
            let seg = segment(score(&last, &r.last), fm);
            for s in scopes(&self.mask(*key)) {
                let c = cells.entry((s, seg)).or_default();
                c.0 += 1;
                c.1 += r.cents;
            }
        }
        for ((scope, seg), (n, sum)) in cells {
            let values = [
                Value {
                    def: kpi::RFM_CUSTOMERS,
                    extra: None,
                    value: Some(n as f64),
                    numerator: Some(n as f64),
                    denominator: None,
                    sample_size: n,
                },
                ratio(kpi::RFM_CLV, money(sum), n as f64, n),
            ];
            self.push_with_extra(w, scope, &values, Some(("rfm_segment", SEGMENTS[seg])));
        }
    }
}
