//! The Kafka source and sinks against librdkafka's in-process mock
//! cluster: a replay equals file mode, every input mode (structured JSON,
//! binary mode, protobuf) is read, bad messages land in the dead-letter
//! topic with their reason, offsets are committed, and broker errors and
//! failed deliveries lose nothing.

mod common;
#[path = "common/kafka.rs"]
mod kafka_util;

use common::*;
use kafka_util::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::demo::generator::{GenConfig, Generator};
use salespulse::engine::Engine;
use salespulse::kafka::{run, KafkaOptions};
use salespulse::metrics::Metrics;
use salespulse::output::KpiRecord;
use std::sync::Arc;
use std::time::Duration;

fn events(n: usize) -> Vec<salespulse::event::Event<'static>> {
    Generator::new(GenConfig {
        seed: 11,
        start: ms("2026-03-01T00:00:00Z"),
        events_per_day: 400,
        reps: 5,
    })
    .take(n)
    .collect()
}

/// Config with the generator's reps listed: a rep-only event (activity,
/// first contact) then gets its team and region from config, not from
/// whichever of the rep's events a partition happened to deliver first.
fn config(bootstrap: &str, group: &str) -> Config {
    let reps: String = salespulse::demo::generator::roster(5)
        .iter()
        .map(|(n, t, r)| format!("[[reps]]\nname = \"{n}\"\nteam = \"{t}\"\nregion = \"{r}\"\n"))
        .collect();
    Config::from_toml(&format!(
        r#"{reps}
[input]
batch_size = 200
[output]
update_interval = "100ms"
[kafka]
brokers = "{bootstrap}"
input_topics = ["crm.events"]
group_id = "{group}"
kpi_topic = "kpis"
dlq_topic = "dlq"
checkpoint_interval = "1s"
[kafka.properties]
"message.timeout.ms" = "3000"
"statistics.interval.ms" = "200"
"session.timeout.ms" = "6000"
"#
    ))
    .expect("test config")
}

/// File mode on the same (valid) events: what the KPI topic must hold.
fn file_mode(cfg: &Config, lines: &[String]) -> Vec<KpiRecord> {
    let mut e = Engine::from_config(cfg);
    for l in lines {
        e.process_json(l.as_bytes()).unwrap();
    }
    e.finish();
    e.take_records()
}

fn kpi_records(bootstrap: &str) -> Vec<KpiRecord> {
    read_topic(bootstrap, "kpis")
        .iter()
        .map(|m| {
            let r: KpiRecord = serde_json::from_slice(rdkafka::Message::payload(m).unwrap())
                .expect("KPI record JSON");
            assert_eq!(
                rdkafka::Message::key(m).map(|k| String::from_utf8_lossy(k).into_owned()),
                Some(salespulse::kafka::record_key(&r)),
                "record key"
            );
            r
        })
        .collect()
}

/// Produces `evs` as CloudEvents JSON keyed by their partition key; the
/// lines produced.
async fn produce_keyed(bs: &str, topic: &str, evs: &[salespulse::event::Event<'_>]) -> Vec<String> {
    let lines: Vec<String> = evs.iter().map(cej::encode).collect();
    let msgs: Vec<Out> = evs
        .iter()
        .zip(&lines)
        .map(|(e, l)| Out::plain(e.partition_key(), l.clone().into_bytes()))
        .collect();
    produce(bs, topic, &msgs).await;
    lines
}

async fn run_to_end(cfg: &Config) -> (salespulse::run::RunReport, Arc<Metrics>) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("salespulse=debug,rdkafka=info")
        .try_init();
    let metrics = Arc::new(Metrics::new());
    let opts = KafkaOptions {
        to_end: true,
        live_updates: false,
        metrics: metrics.clone(),
        fresh: false,
        progress: false,
    };
    let report = tokio::time::timeout(Duration::from_secs(40), run(cfg, opts))
        .await
        .expect("the Kafka run ends at the end of the topic")
        .expect("the Kafka run succeeds");
    (report, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_through_mock_cluster_equals_file_mode_and_dead_letters_bad_messages() {
    let mock = MockCluster::new(3).unwrap();
    let bs = mock.bootstrap_servers();
    mock.create_topic("crm.events", 3, 1).unwrap();
    mock.create_topic("replay.partials", 1, 1).unwrap();
    mock.create_topic("replay.changelog", 3, 1).unwrap();
    mock.create_topic("kpis", 8, 1).unwrap();
    mock.create_topic("dlq", 1, 1).unwrap();

    let evs = events(4000);
    let lines: Vec<String> = evs.iter().map(cej::encode).collect();
    let mut msgs: Vec<Out> = Vec::new();
    for (i, (e, l)) in evs.iter().zip(&lines).enumerate() {
        let key = e.partition_key().to_string();
        msgs.push(match i % 50 {
            // binary mode: attributes in ce_* headers, value = data
            7 => {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Out {
                    key,
                    value: v["data"].to_string().into_bytes(),
                    headers: vec![
                        ("ce_specversion".into(), "1.0".into()),
                        ("ce_id".into(), e.id.to_string()),
                        ("ce_source".into(), e.source.to_string()),
                        ("ce_type".into(), e.payload.event_type().as_str().into()),
                        ("ce_time".into(), v["time"].as_str().unwrap().into()),
                        ("content-type".into(), "application/json".into()),
                    ],
                }
            }
            // protobuf, said by content-type
            13 => Out {
                key,
                value: prost::Message::encode_to_vec(&salespulse::decode::proto::from_event(e)),
                headers: vec![("content-type".into(), "application/protobuf".into())],
            },
            // structured JSON, said by content-type
            21 => Out {
                key,
                value: l.clone().into_bytes(),
                headers: vec![("content-type".into(), "application/cloudevents+json".into())],
            },
            // structured JSON, no header: kafka.default_format
            _ => Out::plain(&key, l.clone().into_bytes()),
        });
    }
    // bad messages, spread over the stream
    let bad = [
        Out::plain("bad-1", b"{not json".to_vec()),
        Out::plain(
            "bad-2",
            ce(
                "bad-2",
                "crm.lead.teleported",
                "2026-03-02T00:00:00Z",
                serde_json::json!({}),
            ),
        ),
        Out {
            key: "bad-3".into(),
            value: b"a,b,c".to_vec(),
            headers: vec![
                ("content-type".into(), "text/csv".into()),
                ("trace".into(), "t-3".into()),
            ],
        },
    ];
    let mut all = Vec::new();
    for (i, m) in msgs.into_iter().enumerate() {
        if i == 100 || i == 1000 || i == 2000 {
            let b = &bad[all.len() / 1000 % 3];
            all.push(Out {
                key: b.key.clone(),
                value: b.value.clone(),
                headers: b.headers.clone(),
            });
        }
        all.push(m);
    }
    produce(&bs, "crm.events", &all).await;

    let cfg = config(&bs, "replay");
    let (report, metrics) = run_to_end(&cfg).await;
    assert_eq!(report.accepted, 4000);
    assert_eq!(report.rejected, 3);

    let got = finals(&kpi_records(&bs));
    let want = finals(&file_mode(&cfg, &lines));
    assert!(want.len() > 500, "{} final series", want.len());
    assert_same_finals(&got, &want);

    // dead letters: original key, value and headers, plus why and where from
    let dlq = read_topic(&bs, "dlq");
    assert_eq!(dlq.len(), 3);
    let reasons: Vec<String> = dlq
        .iter()
        .map(|m| header(m, "salespulse.reason").unwrap())
        .collect();
    assert!(
        reasons.contains(&"malformed_json".to_string()),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"unknown_type".to_string()), "{reasons:?}");
    assert!(
        reasons.contains(&"unsupported_content_type".to_string()),
        "{reasons:?}"
    );
    for m in &dlq {
        assert_eq!(
            header(m, "salespulse.source.topic").as_deref(),
            Some("crm.events")
        );
        assert!(header(m, "salespulse.source.partition")
            .unwrap()
            .parse::<i32>()
            .is_ok());
        assert!(header(m, "salespulse.source.offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
        assert!(!header(m, "salespulse.detail").unwrap().is_empty());
        let key = String::from_utf8_lossy(rdkafka::Message::key(m).unwrap()).into_owned();
        let orig = bad
            .iter()
            .find(|b| b.key == key)
            .expect("original key kept");
        assert_eq!(rdkafka::Message::payload(m).unwrap(), &orig.value[..]);
        if key == "bad-3" {
            assert_eq!(
                header(m, "trace").as_deref(),
                Some("t-3"),
                "original headers kept"
            );
        }
    }
    let text = metrics.render();
    assert!(
        text.contains("salespulse_events_rejected_total{reason=\"unsupported_content_type\"} 1"),
        "rejection counted"
    );
    assert!(text.contains("salespulse_kafka_messages_consumed_total{topic=\"crm.events\"} 4003"));
    assert!(
        text.contains("salespulse_kafka_consumer_lag{partition=\"0\",topic=\"crm.events\"}"),
        "lag per partition from librdkafka statistics"
    );
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("salespulse_kafka_commit_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(commits > 0, "commit latency observed");
    assert!(text.contains("salespulse_kafka_rebalances_total{kind=\"assign\"} 1"));

    // every processed offset is committed for the group
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "replay")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("crm.events", p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for e in committed.elements() {
        let (_, high) = c
            .fetch_watermarks("crm.events", e.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            e.offset(),
            Offset::Offset(high),
            "partition {}",
            e.partition()
        );
        total += high;
    }
    assert_eq!(total, 4003);
    // Each commit says where its checkpoint starts in the changelog at the
    // latest, so a restore reads one checkpoint, not the whole history.
    use rdkafka::Message as _;
    let changelog = read_topic(&bs, "replay.changelog");
    for e in committed.elements() {
        let (p, Offset::Offset(next)) = (e.partition(), e.offset()) else {
            panic!("an offset")
        };
        let (cp, from) = salespulse::kafka::changelog::parse_hint(e.metadata())
            .unwrap_or_else(|| panic!("partition {p}: commit metadata {:?}", e.metadata()));
        assert_eq!(
            cp, p,
            "source {p}'s checkpoints are in changelog partition {p}"
        );
        let key = format!("source/crm.events/{p}#0");
        let first_chunk = changelog
            .iter()
            .filter(|m| m.partition() == cp && m.key() == Some(key.as_bytes()))
            .filter(|m| {
                postcard::from_bytes::<salespulse::kafka::changelog::Chunk>(m.payload().unwrap())
                    .unwrap()
                    .position
                    == next
            })
            .map(|m| m.offset())
            .min()
            .unwrap_or_else(|| {
                panic!("partition {p}: the committed checkpoint is in the changelog")
            });
        assert!(
            from <= first_chunk,
            "partition {p}: hint {from} ≤ {first_chunk}"
        );
        assert!(
            from > 0 || first_chunk == 0,
            "partition {p}: the hint skips older checkpoints"
        );
    }

    // A second `--to-end` run of the group (as when a merger takes over
    // from one that finished): it restores the merger's state from before
    // the last windows closed, reads nothing twice, and publishes the
    // same finals again, never other ones.
    let before = kpi_records(&bs).len();
    let (again, _) = run_to_end(&cfg).await;
    assert_eq!(again.accepted, 0, "nothing is counted twice");
    let recs = kpi_records(&bs);
    assert!(recs.len() > before, "the finals are published again");
    assert_finals_agree(&recs);
    assert_same_finals(&finals(&recs), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_errors_lose_no_record() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("salespulse=info")
        .try_init();
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    mock.create_topic("crm.events", 2, 1).unwrap();
    mock.create_topic("outage.partials", 1, 1).unwrap();
    mock.create_topic("outage.changelog", 2, 1).unwrap();
    mock.create_topic("kpis", 8, 1).unwrap();
    mock.create_topic("dlq", 1, 1).unwrap();
    let evs = events(1500);
    let lines = produce_keyed(&bs, "crm.events", &evs).await;

    // Retriable produce errors (librdkafka retries them itself), then
    // errors that fail deliveries outright: salespulse must send those
    // records again, and commit nothing before they are in.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let cfg = config(&bs, "outage");
    let metrics = Arc::new(Metrics::new());
    let opts = KafkaOptions {
        to_end: true,
        live_updates: false,
        metrics: metrics.clone(),
        fresh: false,
        progress: false,
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run(&cfg, opts))
        .await
        .expect("the run finishes")
        .expect("run succeeds");
    assert_eq!(report.accepted, 1500);
    assert_same_finals(
        &finals(&kpi_records(&bs)),
        &finals(&file_mode(&cfg, &lines)),
    );
    let text = metrics.render();
    let errors: u64 = text
        .lines()
        .filter(|l| l.starts_with("salespulse_kafka_produce_errors_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let retries: u64 = text
        .lines()
        .filter(|l| l.starts_with("salespulse_kafka_produce_retries_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    eprintln!("produce errors {errors}, retries {retries}");
    assert!(errors > 0, "the injected errors failed some deliveries");
    assert_eq!(retries, errors, "every failed delivery was sent again");
}

#[test]
fn kafka_config_errors_name_the_field_and_secrets_are_never_printed() {
    let err = |toml: &str| match Config::from_toml(toml) {
        Err(salespulse::config::LoadError::Invalid(e)) => e,
        other => panic!("expected invalid config, got {:?}", other.map(|_| ())),
    };
    let e = err("[kafka]\nbrokers = \"localhost\"\n");
    assert_eq!(e[0].field, "kafka.brokers");
    assert!(e[0].fix.contains("localhost:9092"));
    let e = err("[kafka]\nbrokers = \"h:9092\"\ninput_topics = []\ngroup_id = \"\"\n");
    let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["kafka.input_topics", "kafka.group_id"]);
    let e = err(
        "[kafka]\nbrokers = \"h:9092\"\n[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n",
    );
    assert_eq!(e[0].field, "kafka.properties.enable.auto.commit");
    // Off without brokers: nothing else is checked.
    assert!(Config::from_toml("[kafka]\ninput_topics = []\n").is_ok());

    let cfg = Config::from_toml(
        "[kafka]\nbrokers = \"h:9092\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2\"\nsasl_username = \"me\"\n",
    )
    .unwrap();
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("sasl.password=<redacted>"),
        "{shown}"
    );
    assert!(cfg
        .kafka
        .librdkafka_properties()
        .contains(&("sasl.username".to_string(), "me".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_stops_consumption_until_it_recovers() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    // (librdkafka's mock cluster keeps only so many messages per partition)
    mock.create_topic("crm.events", 3, 1).unwrap();
    mock.create_topic("stalled.partials", 1, 1).unwrap();
    mock.create_topic("stalled.changelog", 3, 1).unwrap();
    mock.create_topic("kpis", 8, 1).unwrap();
    mock.create_topic("dlq", 1, 1).unwrap();
    let evs = events(10_000);
    let lines = produce_keyed(&bs, "crm.events", &evs).await;
    // Every produce request fails for a while: no record gets in.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 10_000],
    );
    let cfg = config(&bs, "stalled");
    let metrics = Arc::new(Metrics::new());
    let opts = KafkaOptions {
        to_end: true,
        live_updates: false,
        metrics: metrics.clone(),
        fresh: false,
        progress: false,
    };
    let task = tokio::spawn({
        let cfg = cfg.clone();
        async move { run(&cfg, opts).await }
    });
    let consumed = metrics.kafka.consumed.with_label_values(&["crm.events"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stalled = consumed.get();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        consumed.get(),
        stalled,
        "consumption stopped while the sink fails"
    );
    assert!(
        stalled < 10_000,
        "stopped before the end ({stalled} consumed)"
    );
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let report = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the run finishes once the sink recovers")
        .unwrap()
        .unwrap();
    assert_eq!(report.accepted, 10_000, "{report:?}");
    assert_same_finals(
        &finals(&kpi_records(&bs)),
        &finals(&file_mode(&cfg, &lines)),
    );
}

#[test]
fn kpi_records_encode_as_protobuf() {
    let cfg = Config::default();
    let recs = file_mode(
        &cfg,
        &events(500).iter().map(cej::encode).collect::<Vec<_>>(),
    );
    let r = recs.iter().find(|r| !r.dimensions.is_empty()).unwrap();
    let bytes = salespulse::kafka::encode_record(r, salespulse::decode::Format::Protobuf);
    let pb: salespulse::pb::KpiRecord = prost::Message::decode(&bytes[..]).unwrap();
    assert_eq!(pb.kpi, r.kpi);
    assert_eq!(pb.window_label, r.window.label);
    assert_eq!(pb.value, r.value);
    assert_eq!(pb.sample_size, r.sample_size);
    assert_eq!(pb.r#final, r.is_final);
    assert_eq!(pb.dimensions.len(), r.dimensions.len());
    let start = chrono::DateTime::parse_from_rfc3339(&r.window.start).unwrap();
    assert_eq!(pb.window_start.unwrap().seconds, start.timestamp());
}

/// Alert notifications of a Kafka run land on the alert topic, keyed by
/// their fingerprint (a compacted topic keeps each alert's latest state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_notifications_are_published_on_the_alert_topic() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    mock.create_topic("crm.events", 1, 1).unwrap();
    mock.create_topic("alerts.partials", 1, 1).unwrap();
    mock.create_topic("alerts.changelog", 1, 1).unwrap();
    mock.create_topic("alerts", 1, 1).unwrap();
    let lines = conversion_days(
        "k",
        "2026-03-01T00:00:00Z",
        &[(20, 6), (20, 2), (20, 2), (20, 6), (20, 6)],
    );
    let msgs: Vec<Out> = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| Out::plain(&format!("k{i}"), l))
        .collect();
    produce(&bs, "crm.events", &msgs).await;
    let cfg = Config::from_toml(&format!(
        r#"{DAY_WINDOWS}
[kafka]
brokers = "{bs}"
group_id = "alerts"
kpi_topic = ""
alert_topic = "alerts"
checkpoint_interval = "1s"
{CONVERSION_LOW}
[[alerts.routes]]
name = "topic"
kind = "kafka"
"#
    ))
    .unwrap();
    let (report, metrics) = run_to_end(&cfg).await;
    assert_eq!(report.accepted, msgs.len() as u64);
    let got = read_topic(&bs, "alerts");
    let notes: Vec<serde_json::Value> = got
        .iter()
        .map(|m| serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap())
        .collect();
    let states: Vec<&str> = notes.iter().map(|n| n["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "resolved"]);
    assert_eq!(notes[0]["window"]["label"], "2026-03-02");
    assert_eq!(notes[1]["window"]["label"], "2026-03-04");
    for (m, n) in got.iter().zip(&notes) {
        assert_eq!(
            rdkafka::Message::key(m),
            Some(n["fingerprint"].as_str().unwrap().as_bytes())
        );
    }
    assert_eq!(
        metrics
            .alerts
            .deliveries
            .with_label_values(&["topic", "sent"])
            .get(),
        2
    );
}

/// `absent_for` rules in Kafka mode: each partition's source exports the
/// newest event time of the watched series with its partials, the merger
/// evaluates the rules on their maximum over partitions, and the
/// notifications land on the alert topic. Web leads stop at 09:00 while
/// other leads (on every partition) go on; Bob's deals stop at 09:00
/// while Ann's go on into the next day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_for_rules_fire_from_the_merged_partitions() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    mock.create_topic("crm.events", 3, 1).unwrap();
    mock.create_topic("absent.partials", 1, 1).unwrap();
    mock.create_topic("absent.changelog", 1, 1).unwrap();
    mock.create_topic("absent", 1, 1).unwrap();
    let t0 = ms("2026-03-02T08:00:00Z");
    let mut lines = Vec::new();
    for i in 0..60i64 {
        // Every 30 minutes from 08:00 to 37:30 (the next day, 13:30).
        let t = t0 + i * 1_800_000;
        let channel = if t <= ms("2026-03-02T09:00:00Z") {
            "web"
        } else {
            "event"
        };
        let id = format!("l{i}");
        lines.push((
            id.clone(),
            ce_at(
                &id,
                "crm.lead.created",
                t,
                serde_json::json!({"lead_id": id, "channel": channel}),
            ),
        ));
        let rep = if t <= ms("2026-03-02T09:00:00Z") || i % 2 == 0 {
            if i % 2 == 0 {
                "ann"
            } else {
                "bob"
            }
        } else {
            "ann"
        };
        let id = format!("d{i}");
        lines.push((id.clone(), ce_at(&id, "crm.deal.created", t, serde_json::json!({"deal_id": id, "rep": rep, "stage": "qualification", "amount": 100.0}))));
    }
    let msgs: Vec<Out> = lines
        .iter()
        .map(|(k, l)| Out::plain(k, l.clone()))
        .collect();
    produce(&bs, "crm.events", &msgs).await;
    let cfg = Config::from_toml(&format!(
        r#"{DAY_WINDOWS}
[kafka]
brokers = "{bs}"
group_id = "absent"
kpi_topic = ""
alert_topic = "absent"
checkpoint_interval = "1s"

[[alerts.rules]]
name = "web_leads_absent"
absent_for = "2h"
events = ["crm.lead.created"]
filter = {{ channel = "web" }}

[[alerts.rules]]
name = "rep_silent"
absent_for = "1d"
group_by = ["rep"]

[[alerts.routes]]
name = "topic"
kind = "kafka"
"#
    ))
    .unwrap();
    let (report, _) = run_to_end(&cfg).await;
    assert_eq!(report.accepted, msgs.len() as u64);
    let notes: Vec<serde_json::Value> = read_topic(&bs, "absent")
        .iter()
        .map(|m| serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap())
        .collect();
    let mut got: Vec<(String, String, String, String)> = notes
        .iter()
        .map(|n| {
            (
                n["rule"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
                n["started_at"].as_str().unwrap().to_string(),
                n["dimensions"].to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "rep_silent".to_string(),
                "firing".to_string(),
                "2026-03-03T08:30:00Z".to_string(),
                r#"{"rep":"bob"}"#.to_string()
            ),
            (
                "web_leads_absent".into(),
                "firing".into(),
                "2026-03-02T11:00:00Z".into(),
                r#"{"channel":"web"}"#.into()
            ),
        ],
        "{notes:#?}"
    );
}

/// A live Kafka run whose input stops altogether: event time stands
/// still, and the `absent_for` rule fires by wall time once every
/// partition is idle; the next event resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_live_input_fires_absent_for_by_wall_time() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    mock.create_topic("crm.events", 2, 1).unwrap();
    mock.create_topic("quiet.partials", 1, 1).unwrap();
    mock.create_topic("quiet.changelog", 1, 1).unwrap();
    mock.create_topic("quiet", 1, 1).unwrap();
    let lead = |id: &str| {
        let t = chrono::Utc::now().timestamp_millis();
        Out::plain(
            id,
            ce_at(
                id,
                "crm.lead.created",
                t,
                serde_json::json!({"lead_id": id, "channel": "web"}),
            ),
        )
    };
    produce(&bs, "crm.events", &[lead("a"), lead("b"), lead("c")]).await;
    let cfg = Config::from_toml(&format!(
        r#"{DAY_WINDOWS}
[kafka]
brokers = "{bs}"
group_id = "quiet"
kpi_topic = ""
alert_topic = "quiet"
idle_partition_timeout = "1s"

[[alerts.rules]]
name = "input_silent"
absent_for = "3s"

[[alerts.routes]]
name = "topic"
kind = "kafka"
"#
    ))
    .unwrap();
    let opts = KafkaOptions {
        to_end: false,
        live_updates: true,
        metrics: Arc::new(Metrics::new()),
        fresh: false,
        progress: false,
    };
    let cfg2 = cfg.clone();
    let task = tokio::spawn(async move { run(&cfg2, opts).await });
    let states = |bs: &str| -> Vec<String> {
        read_topic(bs, "quiet")
            .iter()
            .map(|m| {
                let v: serde_json::Value =
                    serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
                v["state"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let wait = |want: usize| {
        let bs = bs.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let got = tokio::task::spawn_blocking({
                    let bs = bs.clone();
                    move || states(&bs)
                })
                .await
                .unwrap();
                if got.len() >= want || std::time::Instant::now() > deadline {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    // Nothing comes after the three leads: it fires (once).
    assert_eq!(wait(1).await, ["firing"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(wait(1).await, ["firing"], "fires once");
    // An event comes: resolved.
    produce(&bs, "crm.events", &[lead("d")]).await;
    assert_eq!(wait(2).await, ["firing", "resolved"]);
    task.abort();
}

/// Lifecycles across partitions keyed by entity (docs/entities.md): re-sent
/// wins and cancellations, reopens and corrections within grace, and after
/// the earlier window is final, over a busy generated stream: the KPI topic
/// holds file mode's finals, gauges included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycles_through_three_partitions_equal_file_mode() {
    use serde_json::json;
    let mock = MockCluster::new(3).unwrap();
    let bs = mock.bootstrap_servers();
    mock.create_topic("crm.events", 3, 1).unwrap();
    mock.create_topic("replay.partials", 1, 1).unwrap();
    mock.create_topic("replay.changelog", 3, 1).unwrap();
    mock.create_topic("kpis", 8, 1).unwrap();
    mock.create_topic("dlq", 1, 1).unwrap();

    // (time, key, line): the generated stream, and lifecycles on top
    let mut evs: Vec<(i64, String, String)> = events(4000)
        .iter()
        .map(|e| (e.time, e.partition_key().to_string(), cej::encode(e)))
        .collect();
    let t0 = ms("2026-03-01T10:00:00Z");
    let (h, d) = (3_600_000i64, 86_400_000i64);
    let mut n = 0;
    let mut add = |at: i64, ty: &str, key: &str, data: serde_json::Value| {
        n += 1;
        let line = String::from_utf8(ce_at(&format!("lc-{n}"), ty, at, data)).unwrap();
        evs.push((at, key.to_string(), line));
    };
    for i in 0..12 {
        let at = t0 + i * 6 * h;
        let deal = |s: &str| format!("LC{i}{s}");
        let created =
            json!({"rep": "Ava", "amount": 1000.0, "stage": "proposal", "channel": "web"});
        for s in ["a", "b", "c", "d", "e"] {
            let mut c = created.clone();
            c["deal_id"] = json!(deal(s));
            add(at, "crm.deal.created", &deal(s), c);
        }
        // a: won, the webhook re-sent five minutes later
        for dt in [2 * h, 2 * h + 300_000] {
            add(
                at + dt,
                "crm.deal.won",
                &deal("a"),
                json!({"deal_id": deal("a"), "amount": 1000.0}),
            );
        }
        // b: lost, then won an hour later (reopened within grace)
        add(
            at + 2 * h,
            "crm.deal.lost",
            &deal("b"),
            json!({"deal_id": deal("b"), "amount": 1000.0}),
        );
        add(
            at + 3 * h,
            "crm.deal.won",
            &deal("b"),
            json!({"deal_id": deal("b"), "amount": 1100.0}),
        );
        // c: won, its amount corrected the same hour and again four days later
        add(
            at + 2 * h,
            "crm.deal.won",
            &deal("c"),
            json!({"deal_id": deal("c"), "amount": 1000.0}),
        );
        add(
            at + 2 * h + 1_800_000,
            "crm.deal.won",
            &deal("c"),
            json!({"deal_id": deal("c"), "amount": 1200.0}),
        );
        add(
            at + 4 * d,
            "crm.deal.won",
            &deal("c"),
            json!({"deal_id": deal("c"), "amount": 1250.0}),
        );
        // d: lost, reopened four days later (back in the pipeline), won a day after
        add(
            at + 2 * h,
            "crm.deal.lost",
            &deal("d"),
            json!({"deal_id": deal("d"), "amount": 1000.0}),
        );
        add(
            at + 4 * d,
            "crm.deal.stage_changed",
            &deal("d"),
            json!({"deal_id": deal("d"), "from": "proposal", "to": "negotiation"}),
        );
        add(
            at + 5 * d,
            "crm.deal.won",
            &deal("d"),
            json!({"deal_id": deal("d"), "amount": 1000.0}),
        );
        // e: stays open; customers: acquired, cancelled twice; an unknown one cancelled
        let cust = format!("LCC{i}");
        add(
            at,
            "crm.customer.acquired",
            &cust,
            json!({"customer_id": cust, "channel": "web"}),
        );
        for dt in [3 * h, 3 * h + 600_000] {
            add(
                at + dt,
                "crm.customer.cancelled",
                &cust,
                json!({"customer_id": cust}),
            );
        }
        let ghost = format!("LCX{i}");
        add(
            at + h,
            "crm.customer.cancelled",
            &ghost,
            json!({"customer_id": ghost}),
        );
    }
    evs.sort_by_key(|e| e.0);
    let lines: Vec<String> = evs.iter().map(|e| e.2.clone()).collect();
    let msgs: Vec<Out> = evs
        .iter()
        .map(|(_, k, l)| Out::plain(k, l.clone().into_bytes()))
        .collect();
    produce(&bs, "crm.events", &msgs).await;

    let cfg = config(&bs, "replay");
    let mut fm = Engine::from_config(&cfg);
    for l in &lines {
        fm.process_json(l.as_bytes()).unwrap();
    }
    fm.finish();
    let file_recs = fm.take_records();
    // the lifecycles did what the table says, in file mode
    let s = &fm.state.stats;
    assert_eq!(
        s.duplicates[salespulse::engine::state::DUP_TRANSITION],
        12 * 2
    );
    assert_eq!(
        s.outcomes_revised,
        [24, 24],
        "b and c within grace, c and d after"
    );
    let active = find(&file_recs, "active_customers", "gauge", "current", &[]);
    assert!(active.unwrap().value.unwrap() >= 0.0);

    let (report, _) = run_to_end(&cfg).await;
    assert_eq!(
        report.duplicates, 24,
        "re-sent steps are duplicates in Kafka mode too"
    );
    assert_eq!((report.accepted + report.duplicates) as usize, lines.len());
    let got = finals(&kpi_records(&bs));
    let want = finals(&file_recs);
    assert_same_finals(&got, &want);
}

/// A live run (the merger on it) on `mock`: `partitions` input
/// partitions of `crm.events`, day windows, updates every
/// `update_interval`, topics and group named `name`.
fn live_run<C: rdkafka::ClientContext>(
    mock: &MockCluster<'_, C>,
    name: &str,
    partitions: i32,
    update_interval: &str,
) -> (
    Arc<Metrics>,
    tokio::task::JoinHandle<anyhow::Result<salespulse::run::RunReport>>,
) {
    mock.create_topic("crm.events", partitions, 1).unwrap();
    mock.create_topic(&format!("{name}.partials"), 1, 1)
        .unwrap();
    mock.create_topic(&format!("{name}.changelog"), partitions, 1)
        .unwrap();
    mock.create_topic(&format!("{name}.kpis"), 1, 1).unwrap();
    let bs = mock.bootstrap_servers();
    let cfg = Config::from_toml(&format!(
        r#"{DAY_WINDOWS}
[output]
update_interval = "{update_interval}"

[kafka]
brokers = "{bs}"
group_id = "{name}"
kpi_topic = "{name}.kpis"
"#
    ))
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let opts = KafkaOptions {
        to_end: false,
        live_updates: true,
        metrics: metrics.clone(),
        fresh: false,
        progress: false,
    };
    (metrics, tokio::spawn(async move { run(&cfg, opts).await }))
}

/// Live, with the merger on the same instance, a partition exports its
/// partials at the pace the merger publishes (`output.update_interval`),
/// not after every fetch: a steady trickle of events makes a handful of
/// partials a second, and the live count still reaches every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_merger_here_takes_exports_at_its_update_pace() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    let (metrics, task) = live_run(&mock, "pace", 2, "500ms");
    // Every lead is dated at the test's start: one day window, even
    // when the test runs across midnight.
    let at = chrono::Utc::now().timestamp_millis();
    // Until the run holds its partitions and the merger.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut warm = 0;
    while metrics
        .kafka
        .consumed
        .with_label_values(&["crm.events"])
        .get()
        == 0
    {
        produce(
            &bs,
            "crm.events",
            &[lead_at(&format!("warm-up-{warm}"), at)],
        )
        .await;
        warm += 1;
        assert!(std::time::Instant::now() < deadline, "never consumed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let c: BaseConsumer = client(&bs).create().unwrap();
    let partials = || {
        c.fetch_watermarks("pace.partials", 0, Duration::from_secs(5))
            .unwrap()
            .1
    };
    let before = partials();
    let delays_before = metrics.kafka.publish_delay.get_sample_count();
    let t0 = std::time::Instant::now();
    // 4 s of events, one every 25 ms.
    let producer: rdkafka::producer::FutureProducer = client(&bs).create().unwrap();
    let n = 160;
    for i in 0..n {
        let l = lead_at(&format!("lead-{i}"), at);
        let rec = rdkafka::producer::FutureRecord::to("crm.events")
            .key(&l.key)
            .payload(&l.value);
        producer.send(rec, Duration::from_secs(10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let want = f64::from(n + warm);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = metrics
            .current("leads_created", "day")
            .and_then(|r| r.value);
        if got == Some(want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live count stayed at {got:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let exported = partials() - before;
    // Two partitions, one export each per update (ticks every 500 ms),
    // and slack for a turn at a batch or a partition's first message.
    // Exporting after every fetch made more than one per event here
    // (223 in 5.2 s).
    let most = 2 * ((secs / 0.5).ceil() as i64 + 3);
    assert!(
        exported <= most,
        "{exported} partials in {secs:.1} s for {n} events: more than {most}"
    );
    assert!(exported >= 2, "{exported} partials");
    // Where the latency goes: every input message applied has its consume
    // delay, and each export taken in by the merger here its publish
    // delay once an update covering it is out.
    let k = &metrics.kafka;
    let consumed = k.consumed.with_label_values(&["crm.events"]).get();
    assert_eq!(consumed, (n + warm) as u64);
    assert_eq!(k.consume_delay.get_sample_count(), consumed);
    // (Plus one per partition: a warm-up export published since.)
    let published = k.publish_delay.get_sample_count() - delays_before;
    assert!(
        published >= 2 && published as i64 <= exported + 2,
        "{published} publish delays for {exported} partials"
    );
    // Every one within a few update intervals (500 ms), not a
    // checkpoint interval or more.
    let mean = k.publish_delay.get_sample_sum() / k.publish_delay.get_sample_count() as f64;
    assert!(mean < 2.0, "mean publish delay {mean:.3} s");
    task.abort();
}

/// Publishing follows news, not the tick: live, with the merger here and
/// `output.update_interval` at a minute, a lone event after a quiet spell
/// is published at once (it waited for the next interval before), and
/// an event right after it waits for the interval (at most one update
/// with news per interval: the KPI topic's volume stays bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_event_is_published_at_once_then_updates_keep_their_pace() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    // One input partition: the lone event's is the only one.
    let (metrics, task) = live_run(&mock, "lone", 1, "60s");
    let at = chrono::Utc::now().timestamp_millis();
    // Until the run holds its partitions.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metrics.kafka.restored.get() < 1 {
        assert!(std::time::Instant::now() < deadline, "never assigned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = || {
        metrics
            .current("leads_created", "day")
            .and_then(|r| r.value)
    };
    // One lead: out long before the minute is up.
    produce(&bs, "crm.events", &[lead_at("lone-1", at)]).await;
    let t0 = std::time::Instant::now();
    while count() != Some(1.0) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "a lone lead not published within 30 s (updates every 60 s): {:?}",
            count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next, right after: read, but held for the interval.
    produce(&bs, "crm.events", &[lead_at("lone-2", at)]).await;
    let t1 = std::time::Instant::now();
    let consumed = || {
        metrics
            .kafka
            .consumed
            .with_label_values(&["crm.events"])
            .get()
    };
    while consumed() < 2 {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the second lead never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(),
        Some(1.0),
        "an update with news within the interval of the last"
    );
    task.abort();
}

/// The topics of a `--to-end` run of group `name` on three input
/// partitions; the bootstrap servers. The mock keeps about 5 MB a
/// partition: 16 of them hold every KPI record.
fn to_end_topics<C: rdkafka::ClientContext>(mock: &MockCluster<'_, C>, name: &str) -> String {
    mock.create_topic("crm.events", 3, 1).unwrap();
    mock.create_topic(&format!("{name}.partials"), 1, 1)
        .unwrap();
    mock.create_topic(&format!("{name}.changelog"), 3, 1)
        .unwrap();
    mock.create_topic("kpis", 16, 1).unwrap();
    mock.bootstrap_servers()
}

/// A backlog (partitions more than `input.batch_size` messages behind
/// their end, full batches read with more already fetched) exports its
/// partitions' partials at the update tick, not after every batch, and
/// the records still equal file mode's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_exports_partials_at_the_tick_not_after_every_batch() {
    let mock = MockCluster::new(1).unwrap();
    let bs = to_end_topics(&mock, "backlog");
    let mut cfg = config(&bs, "backlog");
    cfg.input.batch_size = 20;
    cfg.output.update_interval = salespulse::config::Dur(Duration::from_secs(1));
    let evs = events(8_000);
    let lines = produce_keyed(&bs, "crm.events", &evs).await;
    let t0 = std::time::Instant::now();
    let (report, _) = run_to_end(&cfg).await;
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(report.accepted as usize, lines.len());
    let c: BaseConsumer = client(&bs).create().unwrap();
    let (_, exported) = c
        .fetch_watermarks("backlog.partials", 0, Duration::from_secs(5))
        .unwrap();
    // Three partitions, one export each per tick (1 s), and slack for
    // the exports once caught up and at the end. After every batch it
    // was three per 20 events (about 1,200 here).
    let most = 3 * (secs.ceil() as i64 + 4);
    eprintln!("{exported} partials in {secs:.1} s");
    let got = finals(&kpi_records(&bs));
    let want = finals(&file_mode(&cfg, &lines));
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len(), "no extra final series");
    assert!(
        exported <= most,
        "{exported} partials in {secs:.1} s for {} events: more than {most}",
        lines.len()
    );
}

/// A `crm.lead.created` from the web, dated `at` (epoch ms).
fn lead_at(id: &str, at: i64) -> Out {
    Out::plain(
        id,
        ce_at(
            id,
            "crm.lead.created",
            at,
            serde_json::json!({"lead_id": id, "channel": "web"}),
        ),
    )
}

/// Asked for a checkpoint every millisecond, the Kafka loop spaces them
/// by how long each took (`checkpoint::next_after`): checkpoints — the
/// whole state to the changelog, every time — take a bounded share of
/// the run, and the results are file mode's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_asked_too_often_take_a_bounded_share_of_the_run() {
    let mock = MockCluster::new(1).unwrap();
    let bs = to_end_topics(&mock, "spaced");
    let mut cfg = config(&bs, "spaced");
    cfg.kafka.checkpoint_interval = salespulse::config::Dur(Duration::from_millis(1));
    let evs = events(8_000);
    let lines = produce_keyed(&bs, "crm.events", &evs).await;
    let t0 = std::time::Instant::now();
    let (report, m) = run_to_end(&cfg).await;
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(report.accepted as usize, lines.len());
    let h = &m.checkpoint.seconds;
    let (count, sum) = (h.get_sample_count(), h.get_sample_sum());
    eprintln!("{count} checkpoints, {sum:.2} s of {secs:.1} s");
    assert!(count >= 2, "checkpoints while reading: {count}");
    // 1/20 by construction, plus the last one; every turn (each 200
    // events) checkpointed before, most of the run.
    assert!(
        sum / secs < 0.25,
        "{count} checkpoints took {sum:.2} s of {secs:.1} s"
    );
    let got = finals(&kpi_records(&bs));
    let want = finals(&file_mode(&cfg, &lines));
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len(), "no extra final series");
}
