//! A seeded synthetic CRM: leads by channel, contacts, qualification,
//! conversions into deals that move through stages and are won or lost,
//! customers with orders, surveys and cancellations, rep activities,
//! monthly quotas, spend and headcount. Same seed, same events, in event
//! time order.
//!
//! Each lead is simulated as a whole story when it is created (every later
//! event of it is scheduled at its future time); a priority queue releases
//! events in time order.

use crate::event::*;
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

/// (name, share of leads, mean response hours, conversion probability)
const CHANNELS: [(&str, f64, f64, f64); 5] = [
    ("web", 0.35, 4.0, 0.20),
    ("paid_search", 0.20, 6.0, 0.15),
    ("referral", 0.15, 1.0, 0.35),
    ("events", 0.10, 24.0, 0.25),
    ("outbound", 0.20, 0.5, 0.10),
];
/// (name, min amount, max amount)
const PRODUCTS: [(&str, f64, f64); 3] = [
    ("Starter", 500.0, 2_000.0),
    ("Pro", 3_000.0, 12_000.0),
    ("Enterprise", 20_000.0, 90_000.0),
];
const STAGES: [&str; 4] = ["prospecting", "qualification", "proposal", "negotiation"];
const TEAMS: [(&str, &str); 3] = [
    ("Hunters", "EMEA"),
    ("Farmers", "EMEA"),
    ("Closers", "Americas"),
];
const FIRST: [&str; 12] = [
    "Ana", "Ben", "Chloé", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lea",
];
const COMPETITORS: [&str; 3] = ["Acme CRM", "Globex", "Initech"];
/// (segment, share of leads)
const SEGMENTS: [(&str, f64); 3] = [("SMB", 0.6), ("Mid-Market", 0.3), ("Enterprise", 0.1)];
/// Yearly market size per product (for market share).
const MARKET: [(&str, f64); 3] = [
    ("Starter", 40_000_000.0),
    ("Pro", 120_000_000.0),
    ("Enterprise", 300_000_000.0),
];

struct Scheduled(i64, u64, Event<'static>);
impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    /// First simulated instant (ms since epoch).
    pub start: i64,
    /// Events per simulated day (approximately).
    pub events_per_day: u32,
    pub reps: u32,
}

/// The default first instant: 2026-01-01T00:00:00Z.
pub const DEFAULT_START: i64 = 1_767_225_600_000;

pub struct Generator {
    rng: fastrand::Rng,
    cfg: GenConfig,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// Start of the next simulated day to plan.
    next_day: i64,
    seq: u64,
    ids: u64,
    reps: Vec<(String, &'static str, &'static str)>,
    last_month: Option<(i32, u32)>,
}

fn c(s: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(s.into())
}

/// The UTC date of `t` (ms) `days` later, as `YYYY-MM-DD`.
fn date_after(t: i64, days: i64) -> Cow<'static, str> {
    let d = chrono::DateTime::from_timestamp_millis(t + days * DAY).expect("in range");
    c(d.format("%Y-%m-%d").to_string())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The generator's reps: (name, team, region), e.g. for `[[reps]]` config.
pub fn roster(reps: u32) -> Vec<(String, &'static str, &'static str)> {
    (0..reps as usize)
        .map(|i| {
            let name = format!(
                "{} {}",
                FIRST[i % FIRST.len()],
                (b'A' + (i / FIRST.len()) as u8 % 26) as char
            );
            let (team, region) = TEAMS[i % TEAMS.len()];
            (name, team, region)
        })
        .collect()
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Generator {
        let reps = roster(cfg.reps);
        Generator {
            rng: fastrand::Rng::with_seed(cfg.seed),
            next_day: cfg.start - cfg.start.rem_euclid(DAY),
            queue: BinaryHeap::new(),
            seq: 0,
            ids: 0,
            reps,
            last_month: None,
            cfg,
        }
    }

    fn schedule(&mut self, time: i64, payload: Payload<'static>) {
        self.seq += 1;
        let ev = Event {
            id: c(format!("evt-{}-{}", self.cfg.seed, self.seq)),
            source: c("salespulse-demo"),
            time,
            subject: None,
            payload,
        };
        self.queue.push(Reverse(Scheduled(time, self.seq, ev)));
    }

    fn id(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}-{}", self.ids)
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.rng.usize(..items.len())]
    }

    /// Exponentially distributed duration with the given mean.
    fn exp(&mut self, mean_ms: f64) -> i64 {
        (-mean_ms * (1.0 - self.rng.f64()).ln()) as i64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.rng.f64()
    }

    fn in_day(&mut self, day: i64) -> i64 {
        // business hours, 08:00–18:00 UTC, to the second
        day + 8 * HOUR + self.rng.i64(0..10 * HOUR / 1000) * 1000
    }

    fn leads_per_day(&self) -> f64 {
        f64::from(self.cfg.events_per_day) / 9.0
    }

    /// Plans one simulated day: new lead stories, activities, spend, quotas.
    fn plan_day(&mut self) {
        let day = self.next_day;
        self.next_day += DAY;
        let date = chrono::DateTime::from_timestamp_millis(day)
            .unwrap()
            .date_naive();
        use chrono::Datelike;
        let month = (date.year(), date.month());
        if self.last_month != Some(month) {
            self.last_month = Some(month);
            let period = format!("{:04}-{:02}", month.0, month.1);
            // Expected monthly revenue per rep, from the simulation's own rates.
            let expected =
                self.leads_per_day() * 30.0 * 0.2 * 0.35 * 20_000.0 / self.reps.len() as f64;
            for i in 0..self.reps.len() {
                let rep = self.reps[i].0.clone();
                let amount = round2(expected * self.between(0.7, 1.3)).max(1000.0);
                self.schedule(
                    day,
                    Payload::QuotaSet(QuotaSet {
                        rep: c(rep),
                        period: c(period.clone()),
                        amount,
                    }),
                );
            }
            let n = self.reps.len() as i64;
            self.schedule(
                day,
                Payload::HeadcountSet(HeadcountSet {
                    count: n + 8,
                    team: None,
                }),
            );
            for (team, _) in TEAMS {
                let members = self.reps.iter().filter(|r| r.1 == team).count() as i64;
                self.schedule(
                    day,
                    Payload::HeadcountSet(HeadcountSet {
                        count: members,
                        team: Some(c(team)),
                    }),
                );
            }
            for (product, size) in MARKET {
                self.schedule(
                    day,
                    Payload::MarketSizeSet(MarketSizeSet {
                        amount: size,
                        product: Some(c(product)),
                    }),
                );
            }
            self.schedule(
                day,
                Payload::MarketSizeSet(MarketSizeSet {
                    amount: MARKET.iter().map(|m| m.1).sum(),
                    product: None,
                }),
            );
        }
        for (ch, share, _, _) in CHANNELS {
            let amount = round2(self.leads_per_day() * share * self.between(20.0, 60.0));
            let t = self.in_day(day);
            self.schedule(
                t,
                Payload::SpendRecorded(SpendRecorded {
                    channel: c(ch),
                    amount,
                    category: SpendCategory::Marketing,
                }),
            );
            // Sales effort (commissions, SDR time) booked to the channel.
            let amount = round2(amount * self.between(0.3, 0.6));
            let t = self.in_day(day);
            self.schedule(
                t,
                Payload::SpendRecorded(SpendRecorded {
                    channel: c(ch),
                    amount,
                    category: SpendCategory::Sales,
                }),
            );
        }
        let leads = self.poisson(self.leads_per_day());
        for _ in 0..leads {
            let t = self.in_day(day);
            self.lead_story(t);
        }
        let activities = self.poisson(f64::from(self.cfg.events_per_day) * 0.3);
        for _ in 0..activities {
            let t = self.in_day(day);
            let rep = self.pick(&self.reps.clone()).0.clone();
            let r = self.rng.f64();
            let kind = if r < 0.45 {
                ActivityKind::Call
            } else if r < 0.8 {
                ActivityKind::Email
            } else if r < 0.95 {
                ActivityKind::Meeting
            } else {
                ActivityKind::Demo
            };
            self.schedule(
                t,
                Payload::ActivityLogged(ActivityLogged {
                    rep: c(rep),
                    kind,
                    lead_id: None,
                    deal_id: None,
                }),
            );
        }
        if self.rng.f64() < 0.2 {
            let t = self.in_day(day);
            let (p, lo, hi) = *self.pick(&PRODUCTS);
            let ours = round2((lo + hi) / 2.0);
            let comp = c(*self.pick(&COMPETITORS));
            let price = round2(ours * self.between(0.8, 1.2));
            self.schedule(
                t,
                Payload::CompetitorPriceObserved(CompetitorPriceObserved {
                    product: c(p),
                    competitor: comp,
                    price,
                    our_price: ours,
                }),
            );
        }
    }

    fn poisson(&mut self, mean: f64) -> u32 {
        // Knuth for small means, normal approximation above.
        if mean > 30.0 {
            let g = (-2.0 * (1.0 - self.rng.f64()).ln()).sqrt()
                * (2.0 * std::f64::consts::PI * self.rng.f64()).cos();
            return (mean + g * mean.sqrt()).round().max(0.0) as u32;
        }
        let l = (-mean).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.rng.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }

    fn lead_story(&mut self, t0: i64) {
        let r = self.rng.f64();
        let mut acc = 0.0;
        let mut ch = CHANNELS[0];
        for c in CHANNELS {
            acc += c.1;
            if r < acc {
                ch = c;
                break;
            }
        }
        let (channel, _, response_h, conv) = ch;
        let lead = self.id("lead");
        let (rep, team, region) = self.pick(&self.reps.clone()).clone();
        let variant = if self.rng.bool() { "A" } else { "B" };
        let campaign = format!("{channel}-q{}", 1 + self.rng.u8(0..4));
        let r = self.rng.f64();
        let mut acc = 0.0;
        let mut segment = SEGMENTS[0].0;
        for (name, share) in SEGMENTS {
            acc += share;
            if r < acc {
                segment = name;
                break;
            }
        }
        self.schedule(
            t0,
            Payload::LeadCreated(LeadCreated {
                lead_id: c(&lead),
                channel: c(channel),
                rep: Some(c(&rep)),
                campaign: Some(c(campaign.clone())),
                variant: Some(c(variant)),
                team: Some(c(team)),
                region: Some(c(region)),
                segment: Some(c(segment)),
            }),
        );
        if self.rng.f64() < 0.9 {
            let t = t0 + self.exp(response_h * HOUR as f64).max(60_000);
            self.schedule(
                t,
                Payload::LeadContacted(LeadContacted {
                    lead_id: c(&lead),
                    rep: c(&rep),
                }),
            );
        }
        let mut t = t0;
        if self.rng.f64() < 0.6 {
            t += self.rng.i64(DAY..3 * DAY);
            self.schedule(
                t,
                Payload::LeadQualified(LeadQualified {
                    lead_id: c(&lead),
                    level: Level::Mql,
                }),
            );
            if self.rng.f64() < 0.5 {
                t += self.rng.i64(2 * DAY..7 * DAY);
                self.schedule(
                    t,
                    Payload::LeadQualified(LeadQualified {
                        lead_id: c(&lead),
                        level: Level::Sql,
                    }),
                );
            }
        }
        let p = conv + if variant == "B" { 0.03 } else { 0.0 };
        if self.rng.f64() >= p {
            return;
        }
        t += self.rng.i64(3 * DAY..20 * DAY);
        let deal = self.id("deal");
        self.schedule(
            t,
            Payload::LeadConverted(LeadConverted {
                lead_id: c(&lead),
                customer_id: None,
                deal_id: Some(c(&deal)),
            }),
        );
        let (product, lo, hi) = *self.pick(&PRODUCTS);
        let list = round2(self.between(lo, hi));
        self.schedule(
            t + 1000,
            Payload::DealCreated(DealCreated {
                deal_id: c(&deal),
                rep: c(&rep),
                amount: list,
                stage: c(STAGES[0]),
                channel: Some(c(channel)),
                product: Some(c(product)),
                lead_id: Some(c(&lead)),
                team: Some(c(team)),
                region: Some(c(region)),
                campaign: Some(c(campaign)),
                variant: Some(c(variant)),
                segment: Some(c(segment)),
                expected_close: Some(date_after(t, 45)),
            }),
        );
        // Without drawing from the generator (the rest of the demo stays
        // as it was): every third deal is pushed 35 days at each stage change.
        let pushed = deal.bytes().map(u64::from).sum::<u64>() % 3 == 0;
        let mut close_at = t + 45 * DAY;
        t += 1000;
        let competitor = (self.rng.f64() < 0.4).then(|| *self.pick(&COMPETITORS));
        for w in STAGES.windows(2) {
            t += self.rng.i64(3 * DAY..15 * DAY);
            if self.rng.f64() > 0.75 {
                return self.close(t, &deal, false, list, list, competitor);
            }
            self.schedule(
                t,
                Payload::DealStageChanged(DealStageChanged {
                    deal_id: c(&deal),
                    from: c(w[0]),
                    to: c(w[1]),
                    amount: None,
                    expected_close: pushed.then(|| {
                        close_at += 35 * DAY;
                        date_after(close_at, 0)
                    }),
                }),
            );
        }
        t += self.rng.i64(2 * DAY..10 * DAY);
        let win_p = if competitor.is_some() { 0.45 } else { 0.6 };
        let won = self.rng.f64() < win_p;
        let amount = round2(list * self.between(0.8, 1.0));
        self.close(t, &deal, won, amount, list, competitor);
        if !won {
            return;
        }
        self.customer_story(t, channel, segment, amount);
    }

    /// A won deal's customer: acquired, first order, a survey answer,
    /// maybe a later order, maybe a cancellation.
    fn customer_story(
        &mut self,
        t: i64,
        channel: &'static str,
        segment: &'static str,
        amount: f64,
    ) {
        let customer = self.id("cust");
        self.schedule(
            t + 1000,
            Payload::CustomerAcquired(CustomerAcquired {
                customer_id: c(&customer),
                channel: Some(c(channel)),
                segment: Some(c(segment)),
            }),
        );
        let order = self.id("order");
        self.schedule(
            t + 2000,
            Payload::OrderPlaced(OrderPlaced {
                order_id: c(order),
                customer_id: c(&customer),
                amount,
                kind: OrderKind::New,
            }),
        );
        let nps = [10, 10, 9, 9, 9, 8, 8, 7, 6, 5, 3][self.rng.usize(0..11)];
        let csat = Some(f64::from(self.rng.u8(2..=5)));
        self.schedule(
            t + 14 * DAY,
            Payload::SurveyAnswered(SurveyAnswered {
                customer_id: c(&customer),
                nps,
                csat,
            }),
        );
        if self.rng.f64() < 0.5 {
            let o = self.id("order");
            let r = self.rng.f64();
            let kind = if r < 0.3 {
                OrderKind::Upsell
            } else if r < 0.55 {
                OrderKind::CrossSell
            } else {
                OrderKind::Renewal
            };
            let amt = round2(amount * self.between(0.1, 0.5));
            let at = t + self.rng.i64(20 * DAY..200 * DAY);
            self.schedule(
                at,
                Payload::OrderPlaced(OrderPlaced {
                    order_id: c(o),
                    customer_id: c(&customer),
                    amount: amt,
                    kind,
                }),
            );
        }
        if self.rng.f64() < 0.25 {
            let at = t + self.rng.i64(30 * DAY..360 * DAY);
            let reason = Some(c(*self.pick(&[
                "price",
                "product fit",
                "competitor",
                "budget",
            ])));
            self.schedule(
                at,
                Payload::CustomerCancelled(CustomerCancelled {
                    customer_id: c(customer),
                    reason,
                }),
            );
        }
    }

    fn close(
        &mut self,
        t: i64,
        deal: &str,
        won: bool,
        amount: f64,
        list: f64,
        competitor: Option<&'static str>,
    ) {
        let d = DealClosed {
            deal_id: c(deal),
            amount,
            list_price: Some(list),
            competitor: competitor.map(c),
            reason: (!won).then(|| {
                c(if competitor.is_some() {
                    "competitor"
                } else {
                    "no decision"
                })
            }),
            rep: None,
            channel: None,
            product: None,
            team: None,
            region: None,
        };
        self.schedule(
            t,
            if won {
                Payload::DealWon(d)
            } else {
                Payload::DealLost(d)
            },
        );
    }
}

impl Iterator for Generator {
    type Item = Event<'static>;

    fn next(&mut self) -> Option<Event<'static>> {
        loop {
            if let Some(Reverse(s)) = self.queue.peek() {
                // Everything before the next unplanned day is final.
                if s.0 < self.next_day {
                    return self.queue.pop().map(|Reverse(s)| s.2);
                }
            }
            self.plan_day();
        }
    }
}
