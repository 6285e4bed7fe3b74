//! A source's exports: everything changed since the last one, encoded
//! item by item into messages of about a given size, the accumulators
//! from the source's state (copied only for a merger on this instance).

use super::*;

/// Local ids → a compact name table.
pub(super) struct Names<'a> {
    interner: &'a crate::intern::Interner,
    index: FxHashMap<u32, u32>,
    names: Vec<String>,
}

impl Names<'_> {
    pub(super) fn id(&mut self, id: u32) -> u32 {
        if id == 0 {
            return 0;
        }
        let n = self.names.len() as u32;
        let interner = self.interner;
        let names = &mut self.names;
        *self.index.entry(id).or_insert_with(|| {
            names.push(interner.name(id).to_string());
            n
        })
    }
    pub(super) fn key(&mut self, k: &DimKey) -> DimKey {
        DimKey(k.map(|v| self.id(v)))
    }
    /// Sorted by reference: an [`Acc`] is a few hundred bytes, too many
    /// to move around in a sort, or to copy only to encode it.
    fn cells<'r>(&mut self, r: &'r Rolled) -> CellsRef<'r> {
        let mut scopes: Vec<(Scope, &Acc)> = r
            .scopes
            .iter()
            .map(|((d, v), a)| ((*d, self.id(*v)), a))
            .collect();
        scopes.sort_unstable_by_key(|c| c.0);
        let mut pairs: Vec<((u32, u32), &Acc)> = r
            .pairs
            .iter()
            .map(|((p, c), a)| ((self.id(*p), self.id(*c)), a))
            .collect();
        pairs.sort_unstable_by_key(|c| c.0);
        CellsRef { scopes, pairs }
    }
}

/// A bucket's [`Cells`] borrowed from a source's state: encoded the same.
#[derive(Serialize)]
struct CellsRef<'a> {
    #[serde(serialize_with = "wire::serialize_refs")]
    scopes: Vec<(Scope, &'a Acc)>,
    #[serde(serialize_with = "wire::serialize_refs")]
    pairs: Vec<((u32, u32), &'a Acc)>,
}

impl CellsRef<'_> {
    fn to_owned(&self) -> Cells {
        Cells {
            scopes: self
                .scopes
                .iter()
                .map(|(k, a)| (*k, (*a).clone()))
                .collect(),
            pairs: self.pairs.iter().map(|(k, a)| (*k, (*a).clone())).collect(),
        }
    }
}

/// [`Item::Day`] and [`Item::Rolling`] with borrowed cells: the same
/// variants in the same order, so the same bytes.
#[derive(Serialize)]
enum BucketRef<'a> {
    Day {
        start: i64,
        cells: CellsRef<'a>,
    },
    Rolling {
        set: u8,
        start: i64,
        cells: CellsRef<'a>,
    },
}

impl BucketRef<'_> {
    fn to_owned(&self) -> Item {
        match self {
            BucketRef::Day { start, cells } => Item::Day {
                start: *start,
                cells: cells.to_owned(),
            },
            BucketRef::Rolling { set, start, cells } => Item::Rolling {
                set: *set,
                start: *start,
                cells: cells.to_owned(),
            },
        }
    }
}

/// An export's messages: their items (when kept) and their bytes in the body.
type Groups = Vec<(Vec<Option<Item>>, std::ops::Range<usize>)>;

/// An export's items encoded one after another in `body`, each with its
/// range; the items themselves only when `keep` (a merger on this
/// instance takes them as they are).
struct Encoded {
    keep: bool,
    body: Vec<u8>,
    items: Vec<(Option<Item>, std::ops::Range<usize>)>,
}

impl Encoded {
    fn bucket(&mut self, b: BucketRef<'_>) {
        if self.keep {
            // Copied first, then encoded from the copy (warm in cache).
            return self.item(b.to_owned());
        }
        let from = self.body.len();
        self.body = postcard::to_extend(&b, std::mem::take(&mut self.body))
            .expect("an item always encodes");
        self.items.push((None, from..self.body.len()));
    }
    /// Split into messages of about `max_bytes` (each item whole).
    fn split(&mut self, max_bytes: usize) -> Groups {
        let mut groups: Groups = vec![(Vec::new(), 0..0)];
        for (it, r) in self.items.drain(..) {
            let (cur, range) = groups.last_mut().expect("one group at least");
            if !cur.is_empty() && range.len() + r.len() > max_bytes {
                groups.push((vec![it], r));
            } else {
                cur.push(it);
                range.end = r.end;
            }
        }
        groups
    }
    fn item(&mut self, it: Item) {
        let from = self.body.len();
        self.body = postcard::to_extend(&it, std::mem::take(&mut self.body))
            .expect("an item always encodes");
        self.items
            .push((self.keep.then_some(it), from..self.body.len()));
    }
}

impl Engine {
    /// The partials of everything changed since the last export (of
    /// everything, the first time), in messages of about `max_bytes`;
    /// then forgets what can no longer change and was exported.
    pub fn export(
        &mut self,
        source: &str,
        version: i64,
        progress: impl Into<Option<Progress>>,
        max_bytes: usize,
    ) -> Vec<Partial> {
        self.export_encoded(source, version, progress, max_bytes)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    /// [`Engine::export`], each partial with its bytes
    /// ([`Partial::encode`]'s, encoded once).
    pub fn export_encoded(
        &mut self,
        source: &str,
        version: i64,
        progress: impl Into<Option<Progress>>,
        max_bytes: usize,
    ) -> Vec<(Partial, Vec<u8>)> {
        let (names, body, groups) = self.export_items(true, max_bytes);
        let layout = layout_hash(&self.settings);
        let head = head(source, layout, version, &names);
        messages(&head, &body, groups, progress.into())
            .map(|(items, progress, bytes)| {
                let p = Partial {
                    source: source.to_string(),
                    layout,
                    version,
                    names: names.clone(),
                    items: items.into_iter().flatten().collect(),
                    progress,
                };
                (p, bytes)
            })
            .collect()
    }

    /// The messages of [`Engine::export_encoded`], byte for byte, without
    /// the partials: for an instance whose merger is elsewhere, the
    /// accumulators are encoded from the source's state, not copied.
    pub fn export_bytes(
        &mut self,
        source: &str,
        version: i64,
        progress: impl Into<Option<Progress>>,
        max_bytes: usize,
    ) -> Vec<Vec<u8>> {
        let (names, body, groups) = self.export_items(false, max_bytes);
        let head = head(source, layout_hash(&self.settings), version, &names);
        messages(&head, &body, groups, progress.into())
            .map(|(_, _, bytes)| bytes)
            .collect()
    }

    /// Everything changed since the last export, encoded (and with `keep`
    /// copied out), in groups of about `max_bytes`, with the name table;
    /// then forgets what can no longer change.
    fn export_items(&mut self, keep: bool, max_bytes: usize) -> (Vec<String>, Vec<u8>, Groups) {
        self.flush_rolling();
        let mut out = Encoded {
            keep,
            body: Vec::new(),
            items: Vec::new(),
        };
        let Some(mut tr) = self.track.take() else {
            return (vec![String::new()], Vec::new(), vec![(Vec::new(), 0..0)]);
        };
        let all = tr.all;
        let s = &mut self.state;
        let mut n = Names {
            interner: &s.interner,
            index: FxHashMap::default(),
            names: vec![String::new()],
        };
        for (start, b) in s.calendar[0].buckets.iter_mut() {
            if b.dirty || all {
                b.dirty = false;
                out.bucket(BucketRef::Day {
                    start: *start,
                    cells: n.cells(&b.aggs),
                });
            }
        }
        for (i, r) in s.rolling.iter().enumerate() {
            for (start, a) in &r.buckets {
                if all || tr.rolling.contains(&(i as u8, *start)) {
                    out.bucket(BucketRef::Rolling {
                        set: i as u8,
                        start: *start,
                        cells: n.cells(a),
                    });
                }
            }
        }
        let mut items = Vec::new();
        let mut ledger_days = std::mem::take(&mut tr.ledger);
        if all {
            ledger_days.extend(s.ledger.slots.keys().map(|t| sub_bucket(*t, DAY_MS)));
        }
        for day in ledger_days {
            let mut slots = Vec::new();
            for (t, cells) in s.ledger.slots.range(day..day + DAY_MS) {
                for (k, d) in cells {
                    slots.push((*t, n.key(k), *d));
                }
            }
            items.push(Item::Ledger { day, slots });
        }
        let mut retiring = std::mem::take(&mut tr.retiring);
        for (day, c) in s.cohorts.iter_mut().chain(retiring.iter_mut()) {
            if c.dirty || all {
                c.dirty = false;
                let mut cells: Vec<_> = c.cells.iter().map(|(k, v)| (n.key(k), *v)).collect();
                cells.sort_unstable();
                items.push(Item::Cohort { day: *day, cells });
            }
        }
        if s.gauges_dirty || all {
            s.gauges_dirty = false;
            let mut cells: Vec<_> = s
                .pipeline
                .iter()
                .map(|((st, k), p)| ((*st, n.key(k)), *p))
                .collect();
            cells.sort_unstable_by_key(|c| c.0);
            items.push(Item::Pipeline { cells });
            let mut awaiting: Vec<_> = s.awaiting.iter().map(|(k, c)| (n.key(k), *c)).collect();
            awaiting.sort_unstable();
            items.push(Item::Awaiting(awaiting));
        }
        // Small, and rarely changed: compared whole.
        let mut misc = Misc {
            quotas: s.quotas.iter().map(|(k, v)| (*k, *v)).collect(),
            rep_info: s.rep_info.iter().map(|(k, v)| (*k, *v)).collect(),
            headcount: s.headcount.iter().map(|(k, v)| (*k, *v)).collect(),
            market: s.market_size.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        misc.quotas.sort_unstable();
        misc.rep_info.sort_unstable();
        misc.headcount.sort_unstable();
        misc.market.sort_unstable();
        if all || tr.misc.as_ref() != Some(&misc) {
            tr.misc = Some(misc.clone());
            let t = misc.map_ids(|id| n.id(id));
            items.push(Item::Misc(t));
        }
        if (all || tr.seen) && !s.absent_seen.is_empty() {
            tr.seen = false;
            let mut seen: Vec<_> = s
                .absent_seen
                .iter()
                .map(|((r, k), (t, _))| ((n.id(*r), n.key(k)), *t))
                .collect();
            seen.sort_unstable_by_key(|c| c.0);
            items.push(Item::Seen(seen));
        }
        rows::export_rows(s, &mut tr, all, &mut n, &mut items);
        let names = n.names;
        tr.rolling.clear();
        tr.all = false;
        self.track = Some(tr);
        self.source_forget();
        for it in items {
            out.item(it);
        }
        let groups = out.split(max_bytes);
        (names, out.body, groups)
    }
}

/// A partial's head: source, layout, version, name table.
fn head(source: &str, layout: u64, version: i64, names: &[String]) -> Vec<u8> {
    postcard::to_stdvec(&(source, layout, version, names)).expect("a partial's head always encodes")
}

/// An export's messages: each group's items, its progress (the last
/// one's only) and its bytes.
fn messages<'a>(
    head: &'a [u8],
    body: &'a [u8],
    groups: Groups,
    progress: Option<Progress>,
) -> impl Iterator<Item = (Vec<Option<Item>>, Option<Progress>, Vec<u8>)> + 'a {
    let last = groups.len() - 1;
    groups
        .into_iter()
        .enumerate()
        .map(move |(i, (items, range))| {
            let progress = if i == last { progress } else { None };
            let bytes = frame(head, (items.len(), &body[range]), progress);
            (items, progress, bytes)
        })
}

/// A partial's message: its head, its `count` items (`body`, encoded),
/// its progress.
fn frame(head: &[u8], (count, body): (usize, &[u8]), progress: Option<Progress>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(head.len() + body.len() + 32);
    bytes.extend_from_slice(head);
    bytes = postcard::to_extend(&count, bytes).expect("a length encodes");
    bytes.extend_from_slice(body);
    postcard::to_extend(&progress, bytes).expect("a progress encodes")
}
