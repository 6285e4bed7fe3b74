//! The one typed event model that every decoder produces.
//!
//! Strings borrow from the input buffer where they can (`Cow`), so that
//! decoding a JSON CloudEvent allocates nothing for plain field values.
//! Amounts stay `f64` in the currency's major unit here; the engine turns
//! them into integer cents so that sums are exact and mergeable.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One CRM event, decoded and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// CloudEvents `id`; with `source` it identifies the event for dedup.
    pub id: Cow<'a, str>,
    /// CloudEvents `source` (the CRM instance or connector).
    pub source: Cow<'a, str>,
    /// Event time (CloudEvents `time`) in milliseconds since the Unix epoch, UTC.
    pub time: i64,
    /// CloudEvents `subject`, kept for round trips; unused by the KPIs.
    pub subject: Option<Cow<'a, str>>,
    /// The typed `data`; its variant is the CloudEvents `type`.
    pub payload: Payload<'a>,
}

impl Event<'_> {
    /// The key producers should give this event's Kafka message: the id of
    /// the lead, deal or customer it is about (the rep for quotas and for
    /// activities on neither; the channel, team or product for spend,
    /// headcount and price events). Every event of one entity then lands
    /// in one partition, in order, which the per-entity state relies on.
    pub fn partition_key(&self) -> &str {
        match &self.payload {
            Payload::LeadCreated(d) => &d.lead_id,
            Payload::LeadQualified(d) => &d.lead_id,
            Payload::LeadContacted(d) => &d.lead_id,
            Payload::LeadConverted(d) => &d.lead_id,
            Payload::DealCreated(d) => &d.deal_id,
            Payload::DealStageChanged(d) => &d.deal_id,
            Payload::DealWon(d) | Payload::DealLost(d) => &d.deal_id,
            Payload::OrderPlaced(d) => &d.customer_id,
            Payload::CustomerAcquired(d) => &d.customer_id,
            Payload::CustomerCancelled(d) => &d.customer_id,
            Payload::SurveyAnswered(d) => &d.customer_id,
            Payload::ActivityLogged(d) => d
                .deal_id
                .as_deref()
                .or(d.lead_id.as_deref())
                .unwrap_or(&d.rep),
            Payload::QuotaSet(d) => &d.rep,
            Payload::SpendRecorded(d) => &d.channel,
            Payload::HeadcountSet(d) => d.team.as_deref().unwrap_or(""),
            Payload::CompetitorPriceObserved(d) => &d.product,
            Payload::MarketSizeSet(d) => d.product.as_deref().unwrap_or(""),
            Payload::SubjectErased(d) => d
                .lead_id
                .as_deref()
                .or(d.deal_id.as_deref())
                .or(d.customer_id.as_deref())
                .unwrap_or(""),
        }
    }
}

macro_rules! event_types {
    ($( $variant:ident => $name:literal ),* $(,)?) => {
        /// The CloudEvents `type` values salespulse understands.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $( $variant ),* }

        impl EventType {
            /// Every type, in a fixed order (their index is `as usize`).
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant ),* ];

            /// The CloudEvents `type` string.
            pub fn as_str(self) -> &'static str {
                match self { $( EventType::$variant => $name ),* }
            }

            /// Parses a CloudEvents `type` string.
            pub fn parse(s: &str) -> Option<EventType> {
                match s { $( $name => Some(EventType::$variant), )* _ => None }
            }
        }
    };
}

event_types! {
    LeadCreated => "crm.lead.created",
    LeadQualified => "crm.lead.qualified",
    LeadContacted => "crm.lead.contacted",
    LeadConverted => "crm.lead.converted",
    DealCreated => "crm.deal.created",
    DealStageChanged => "crm.deal.stage_changed",
    DealWon => "crm.deal.won",
    DealLost => "crm.deal.lost",
    OrderPlaced => "crm.order.placed",
    CustomerAcquired => "crm.customer.acquired",
    CustomerCancelled => "crm.customer.cancelled",
    ActivityLogged => "crm.activity.logged",
    SurveyAnswered => "crm.survey.answered",
    SpendRecorded => "crm.spend.recorded",
    QuotaSet => "crm.quota.set",
    HeadcountSet => "crm.headcount.set",
    CompetitorPriceObserved => "crm.competitor.price_observed",
    MarketSizeSet => "crm.market.size_set",
    SubjectErased => "crm.subject.erased",
}

/// The `data` of an event, one variant per [`EventType`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload<'a> {
    LeadCreated(LeadCreated<'a>),
    LeadQualified(LeadQualified<'a>),
    LeadContacted(LeadContacted<'a>),
    LeadConverted(LeadConverted<'a>),
    DealCreated(DealCreated<'a>),
    DealStageChanged(DealStageChanged<'a>),
    DealWon(DealClosed<'a>),
    DealLost(DealClosed<'a>),
    OrderPlaced(OrderPlaced<'a>),
    CustomerAcquired(CustomerAcquired<'a>),
    CustomerCancelled(CustomerCancelled<'a>),
    ActivityLogged(ActivityLogged<'a>),
    SurveyAnswered(SurveyAnswered<'a>),
    SpendRecorded(SpendRecorded<'a>),
    QuotaSet(QuotaSet<'a>),
    HeadcountSet(HeadcountSet<'a>),
    CompetitorPriceObserved(CompetitorPriceObserved<'a>),
    MarketSizeSet(MarketSizeSet<'a>),
    SubjectErased(SubjectErased<'a>),
}

impl Payload<'_> {
    /// The CloudEvents `type` of this payload.
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::LeadCreated(_) => EventType::LeadCreated,
            Payload::LeadQualified(_) => EventType::LeadQualified,
            Payload::LeadContacted(_) => EventType::LeadContacted,
            Payload::LeadConverted(_) => EventType::LeadConverted,
            Payload::DealCreated(_) => EventType::DealCreated,
            Payload::DealStageChanged(_) => EventType::DealStageChanged,
            Payload::DealWon(_) => EventType::DealWon,
            Payload::DealLost(_) => EventType::DealLost,
            Payload::OrderPlaced(_) => EventType::OrderPlaced,
            Payload::CustomerAcquired(_) => EventType::CustomerAcquired,
            Payload::CustomerCancelled(_) => EventType::CustomerCancelled,
            Payload::ActivityLogged(_) => EventType::ActivityLogged,
            Payload::SurveyAnswered(_) => EventType::SurveyAnswered,
            Payload::SpendRecorded(_) => EventType::SpendRecorded,
            Payload::QuotaSet(_) => EventType::QuotaSet,
            Payload::HeadcountSet(_) => EventType::HeadcountSet,
            Payload::CompetitorPriceObserved(_) => EventType::CompetitorPriceObserved,
            Payload::MarketSizeSet(_) => EventType::MarketSizeSet,
            Payload::SubjectErased(_) => EventType::SubjectErased,
        }
    }
}

// Required strings are written `Cow<'a, str>`, not through an alias:
// serde's derive borrows a `#[serde(borrow)]` field only when it can see
// that its type is `Cow<str>`, and allocates a `String` otherwise.
type OptStr<'a> = Option<Cow<'a, str>>;

/// Deserializes an optional string borrowed from the input when it has no
/// escapes. serde borrows a bare `Cow<str>` field but allocates an owned
/// one inside an `Option`, which is one `malloc` per present field.
pub(crate) fn opt_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<OptStr<'a>, D::Error> {
    use serde::de::{Error, Visitor};
    use std::fmt;
    /// A string, borrowed unless it had escapes.
    struct CowStr;
    impl<'de> Visitor<'de> for CowStr {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    /// `null` or a string, straight to the string visitor (no newtype
    /// layer in between: this runs for most fields of every event).
    struct OptCowStr;
    impl<'de> Visitor<'de> for OptCowStr {
        type Value = OptStr<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(CowStr).map(Some)
        }
    }
    d.deserialize_option(OptCowStr)
}

/// A CRM event's `data` struct, with `opt name,` for an optional string
/// field: borrowed from the input when it has no escapes ([`opt_str`]),
/// absent when missing, and left out when serialized.
macro_rules! crm_data {
    ($(#[$m:meta])* pub struct $name:ident<$lt:lifetime> { $($fields:tt)* }) => {
        crm_data!(@munch $lt [$(#[$m])* pub struct $name<$lt>] [] $($fields)*);
    };
    (@munch $lt:lifetime $head:tt [$($out:tt)*] $(#[$fm:meta])* opt $f:ident, $($rest:tt)*) => {
        crm_data!(@munch $lt $head [$($out)*
            $(#[$fm])*
            #[serde(borrow, default, deserialize_with = "opt_str", skip_serializing_if = "Option::is_none")]
            pub $f: OptStr<$lt>,
        ] $($rest)*);
    };
    (@munch $lt:lifetime $head:tt [$($out:tt)*] $(#[$fm:meta])* pub $f:ident : $t:ty, $($rest:tt)*) => {
        crm_data!(@munch $lt $head [$($out)* $(#[$fm])* pub $f: $t,] $($rest)*);
    };
    (@munch $lt:lifetime [$($head:tt)*] [$($out:tt)*]) => {
        $($head)* { $($out)* }
    };
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadCreated<'a> {
    #[serde(borrow)]
    pub lead_id: Cow<'a, str>,
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    opt rep,
    opt campaign,
    opt variant,
    opt team,
    opt region,
    opt segment,
}
}

/// Lead qualification level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Mql,
    Sql,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadQualified<'a> {
    #[serde(borrow)]
    pub lead_id: Cow<'a, str>,
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadContacted<'a> {
    #[serde(borrow)]
    pub lead_id: Cow<'a, str>,
    #[serde(borrow)]
    pub rep: Cow<'a, str>,
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadConverted<'a> {
    #[serde(borrow)]
    pub lead_id: Cow<'a, str>,
    opt customer_id,
    opt deal_id,
}
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealCreated<'a> {
    #[serde(borrow)]
    pub deal_id: Cow<'a, str>,
    #[serde(borrow)]
    pub rep: Cow<'a, str>,
    pub amount: f64,
    #[serde(borrow)]
    pub stage: Cow<'a, str>,
    opt channel,
    opt product,
    opt lead_id,
    opt team,
    opt region,
    opt campaign,
    opt variant,
    opt segment,
    /// The date the deal is expected to close (`YYYY-MM-DD`, local to
    /// `time.zone`), for slippage and the forecast.
    opt expected_close,
}
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealStageChanged<'a> {
    #[serde(borrow)]
    pub deal_id: Cow<'a, str>,
    #[serde(borrow)]
    pub from: Cow<'a, str>,
    #[serde(borrow)]
    pub to: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// A new expected close date (`YYYY-MM-DD`); absent: unchanged.
    opt expected_close,
}
}

crm_data! {
/// `crm.deal.won` and `crm.deal.lost`. The optional dimensions override
/// the ones remembered from the deal's `crm.deal.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealClosed<'a> {
    #[serde(borrow)]
    pub deal_id: Cow<'a, str>,
    pub amount: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_price: Option<f64>,
    opt competitor,
    opt reason,
    opt rep,
    opt channel,
    opt product,
    opt team,
    opt region,
}
}

/// Kind of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    New,
    Upsell,
    CrossSell,
    Renewal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced<'a> {
    #[serde(borrow)]
    pub order_id: Cow<'a, str>,
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    pub amount: f64,
    pub kind: OrderKind,
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerAcquired<'a> {
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    opt channel,
    opt segment,
}
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerCancelled<'a> {
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    opt reason,
}
}

/// Kind of sales activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    Call,
    Email,
    Meeting,
    Demo,
}

impl ActivityKind {
    pub const ALL: [ActivityKind; 4] = [
        ActivityKind::Call,
        ActivityKind::Email,
        ActivityKind::Meeting,
        ActivityKind::Demo,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Call => "call",
            ActivityKind::Email => "email",
            ActivityKind::Meeting => "meeting",
            ActivityKind::Demo => "demo",
        }
    }
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityLogged<'a> {
    #[serde(borrow)]
    pub rep: Cow<'a, str>,
    pub kind: ActivityKind,
    opt lead_id,
    opt deal_id,
}
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyAnswered<'a> {
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    /// Kept wide so that 11 or -1 reach validation and get a precise reason.
    pub nps: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csat: Option<f64>,
}

/// Spend category for CAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpendCategory {
    Marketing,
    Sales,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendRecorded<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    pub amount: f64,
    pub category: SpendCategory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaSet<'a> {
    #[serde(borrow)]
    pub rep: Cow<'a, str>,
    /// `2026-11` (month), `2026-Q4` (quarter) or `2026` (year); fiscal
    /// periods use the labels of [`crate::window`].
    #[serde(borrow)]
    pub period: Cow<'a, str>,
    pub amount: f64,
}

crm_data! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadcountSet<'a> {
    pub count: i64,
    opt team,
}
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompetitorPriceObserved<'a> {
    #[serde(borrow)]
    pub product: Cow<'a, str>,
    #[serde(borrow)]
    pub competitor: Cow<'a, str>,
    pub price: f64,
    pub our_price: f64,
}

crm_data! {
/// The size of the market, for market share: total market revenue per
/// year, for one product or (without `product`) for the whole market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketSizeSet<'a> {
    pub amount: f64,
    opt product,
}
}

crm_data! {
/// A request to erase a person (right to erasure): everything salespulse
/// remembers of the lead, deal and/or customer named is removed; the
/// anonymous aggregates they were counted in stay (docs/privacy.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectErased<'a> {
    opt lead_id,
    opt deal_id,
    opt customer_id,
}
}

/// Earliest event time accepted (1990-01-01T00:00:00Z): anything before is
/// taken for a broken clock or a unit mistake.
pub const MIN_TIME_MS: i64 = 631_152_000_000;
/// Latest event time accepted (2100-01-01T00:00:00Z).
pub const MAX_TIME_MS: i64 = 4_102_444_800_000;
/// Largest amount accepted (10¹³ in the major unit).
pub const MAX_AMOUNT: f64 = 1e13;

/// Dimension names, in the order of the engine's `DimKey`.
pub const DIMS: [&str; 9] = [
    "rep",
    "team",
    "region",
    "channel",
    "product",
    "campaign",
    "variant",
    "competitor",
    "segment",
];
pub const REP: usize = 0;
pub const TEAM: usize = 1;
pub const REGION: usize = 2;
pub const CHANNEL: usize = 3;
pub const PRODUCT: usize = 4;
pub const CAMPAIGN: usize = 5;
pub const VARIANT: usize = 6;
pub const COMPETITOR: usize = 7;
pub const SEGMENT: usize = 8;
pub const NDIMS: usize = DIMS.len();
