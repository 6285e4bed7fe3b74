//! Delivery of notifications along routes.
//!
//! Each route has its own task and bounded queue, so a slow or failing
//! route never blocks the pipeline nor the other routes. A failed
//! delivery is retried with exponential backoff (in order: a route never
//! sends a `resolved` before its `firing`); one that still fails after
//! `alerts.retry_for` is given up, counted and logged with its whole
//! content. A full queue drops the notification, counted and logged.

use crate::alert::{text, NoteState, Notification};
use crate::config::alerts::{AlertsConfig, Language, RouteConfig, RouteKind, SmtpTls};
use crate::metrics::Metrics;
use lettre::AsyncTransport;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How one route delivers.
enum Target {
    Slack {
        client: reqwest::Client,
        url: String,
    },
    Webhook {
        client: reqwest::Client,
        url: String,
    },
    Alertmanager {
        client: reqwest::Client,
        url: String,
    },
    Email {
        transport: Box<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
        from: lettre::message::Mailbox,
        to: Vec<lettre::message::Mailbox>,
    },
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    File {
        path: std::path::PathBuf,
    },
}

struct Route {
    name: String,
    lang: Language,
    target: Target,
    /// Alertmanager: firing alerts by fingerprint, re-posted every `alertmanager_resend`.
    firing: HashMap<String, serde_json::Value>,
    /// Alertmanager: `endsAt` of a firing alert is now + this (4 × `alertmanager_resend`,
    /// as Prometheus does), so an alert outlives a few missed re-posts but not a dead salespulse.
    am_ttl: Duration,
}

struct Handle {
    name: String,
    tx: mpsc::Sender<Arc<Notification>>,
    queued: Arc<AtomicI64>,
}

/// Sends notifications to every configured route.
pub struct Dispatcher {
    routes: Vec<Handle>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    drain_timeout: Duration,
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("salespulse/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

fn email_target(r: &RouteConfig) -> anyhow::Result<Target> {
    use lettre::transport::smtp::authentication::Credentials;
    type T = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;
    let mut b = match r.smtp_tls {
        SmtpTls::None => T::builder_dangerous(&r.smtp_host).port(r.smtp_port.unwrap_or(25)),
        SmtpTls::Starttls => T::starttls_relay(&r.smtp_host)?.port(r.smtp_port.unwrap_or(587)),
        SmtpTls::Tls => T::relay(&r.smtp_host)?.port(r.smtp_port.unwrap_or(465)),
    };
    if !r.username_env.is_empty() {
        let user = std::env::var(&r.username_env)?;
        let pass = std::env::var(&r.password_env)?;
        b = b.credentials(Credentials::new(user, pass));
    }
    Ok(Target::Email {
        transport: Box::new(b.timeout(Some(Duration::from_secs(15))).build()),
        from: r.from.parse()?,
        to: r.to.iter().map(|t| t.parse()).collect::<Result<_, _>>()?,
    })
}

impl Dispatcher {
    /// Starts one task per route. `producer` is the Kafka producer in Kafka
    /// mode; without it, `kafka` routes are reported at start-up and their
    /// notifications counted as `unavailable`.
    pub fn start(
        cfg: &AlertsConfig,
        alert_topic: &str,
        producer: Option<FutureProducer>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Dispatcher> {
        let mut routes = Vec::new();
        let mut tasks = Vec::new();
        for r in &cfg.routes {
            let url = r.resolved_url().unwrap_or_default();
            let target = match r.kind {
                RouteKind::Slack => Target::Slack {
                    client: http_client()?,
                    url,
                },
                RouteKind::Webhook => Target::Webhook {
                    client: http_client()?,
                    url,
                },
                RouteKind::Alertmanager => Target::Alertmanager {
                    client: http_client()?,
                    url: format!("{}/api/v2/alerts", url.trim_end_matches('/')),
                },
                RouteKind::Email => email_target(r)?,
                RouteKind::File => Target::File {
                    path: r.path.clone().into(),
                },
                RouteKind::Kafka => {
                    let topic = if r.topic.is_empty() {
                        alert_topic.to_string()
                    } else {
                        r.topic.clone()
                    };
                    match (&producer, topic.is_empty()) {
                        (Some(p), false) => Target::Kafka {
                            producer: p.clone(),
                            topic,
                        },
                        _ => {
                            tracing::warn!(
                                route = %r.name,
                                "alert route of kind kafka needs Kafka mode and an alert topic: its notifications are counted as unavailable, not delivered"
                            );
                            let (tx, _) = mpsc::channel(1);
                            routes.push(Handle {
                                name: r.name.clone(),
                                tx,
                                queued: Default::default(),
                            });
                            continue;
                        }
                    }
                }
            };
            let (tx, rx) = mpsc::channel(cfg.queue_capacity);
            let queued = Arc::new(AtomicI64::new(0));
            let route = Route {
                name: r.name.clone(),
                lang: r.language.unwrap_or(cfg.language),
                target,
                firing: HashMap::new(),
                am_ttl: cfg.alertmanager_resend.0 * 4,
            };
            tasks.push(tokio::spawn(run_route(
                route,
                rx,
                metrics.clone(),
                queued.clone(),
                Retry {
                    initial: cfg.retry_initial_delay.0,
                    max: cfg.retry_max_delay.0,
                    give_up_after: cfg.retry_for.0,
                    resend: cfg.alertmanager_resend.0,
                },
            )));
            routes.push(Handle {
                name: r.name.clone(),
                tx,
                queued,
            });
        }
        Ok(Dispatcher {
            routes,
            tasks,
            metrics,
            drain_timeout: cfg.drain_timeout.0,
        })
    }

    /// Logs and counts each notification and queues it on its routes. Never waits.
    pub fn dispatch(&self, notes: Vec<Notification>) {
        for n in notes {
            match n.state {
                NoteState::Firing => tracing::warn!(fingerprint = %n.fingerprint, "{}", n.summary),
                NoteState::Resolved => {
                    tracing::info!(fingerprint = %n.fingerprint, "{}", n.summary)
                }
            }
            self.metrics
                .alerts
                .notifications
                .with_label_values(&[n.rule.as_str(), n.state.as_str()])
                .inc();
            let n = Arc::new(n);
            for h in &self.routes {
                if !n.routes.is_empty() && !n.routes.contains(&h.name) {
                    continue;
                }
                let outcome = |o: &str| {
                    self.metrics
                        .alerts
                        .deliveries
                        .with_label_values(&[h.name.as_str(), o])
                        .inc()
                };
                if h.tx.is_closed() {
                    outcome("unavailable");
                    continue;
                }
                match h.tx.try_send(n.clone()) {
                    Ok(()) => {
                        let q = h.queued.fetch_add(1, Ordering::Relaxed) + 1;
                        self.metrics
                            .alerts
                            .queued
                            .with_label_values(&[h.name.as_str()])
                            .set(q);
                    }
                    Err(_) => {
                        outcome("dropped");
                        tracing::error!(
                            route = %h.name,
                            notification = %serde_json::to_string(&*n).unwrap_or_default(),
                            "alert queue full (alerts.queue_capacity): notification dropped"
                        );
                    }
                }
            }
        }
    }

    /// Waits (at most `alerts.drain_timeout`) for queued notifications to be delivered.
    pub async fn shutdown(self) {
        let Dispatcher {
            routes,
            tasks,
            drain_timeout,
            ..
        } = self;
        let pending: Vec<(String, Arc<AtomicI64>)> =
            routes.into_iter().map(|h| (h.name, h.queued)).collect();
        let all = futures_join(tasks);
        if tokio::time::timeout(drain_timeout, all).await.is_err() {
            for (name, q) in pending {
                let n = q.load(Ordering::Relaxed);
                if n > 0 {
                    tracing::error!(
                        route = %name,
                        "{n} alert notifications were not delivered before alerts.drain_timeout at shutdown"
                    );
                }
            }
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[derive(Clone, Copy)]
struct Retry {
    initial: Duration,
    max: Duration,
    give_up_after: Duration,
    resend: Duration,
}

async fn run_route(
    mut route: Route,
    mut rx: mpsc::Receiver<Arc<Notification>>,
    m: Arc<Metrics>,
    queued: Arc<AtomicI64>,
    retry: Retry,
) {
    let mut resend = tokio::time::interval(retry.resend);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resend.tick().await;
    loop {
        tokio::select! {
            n = rx.recv() => {
                let Some(n) = n else { break };
                deliver_with_retry(&mut route, &n, &m, retry).await;
                let q = queued.fetch_sub(1, Ordering::Relaxed) - 1;
                m.alerts.queued.with_label_values(&[route.name.as_str()]).set(q);
            }
            _ = resend.tick(), if !route.firing.is_empty() => {
                // Alertmanager resolves alerts that are not posted again: keep them alive.
                if let Err(e) = route.resend_firing().await {
                    tracing::warn!(route = %route.name, error = %e, "re-posting firing alerts to Alertmanager failed; next try in alerts.alertmanager_resend");
                }
            }
        }
    }
}

async fn deliver_with_retry(route: &mut Route, n: &Notification, m: &Metrics, retry: Retry) {
    let started = std::time::Instant::now();
    let mut delay = retry.initial;
    let name = route.name.clone();
    let count = |o: &str| {
        m.alerts
            .deliveries
            .with_label_values(&[name.as_str(), o])
            .inc()
    };
    loop {
        match route.deliver(n).await {
            Ok(()) => {
                count("sent");
                return;
            }
            Err(e) if started.elapsed() + delay > retry.give_up_after => {
                count("failed");
                tracing::error!(
                    route = %route.name,
                    error = %e,
                    notification = %serde_json::to_string(n).unwrap_or_default(),
                    "alert notification given up after alerts.retry_for"
                );
                return;
            }
            Err(e) => {
                m.alerts.retries.with_label_values(&[name.as_str()]).inc();
                tracing::warn!(route = %route.name, error = %e, retry_in = ?delay, "alert delivery failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry.max);
            }
        }
    }
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    Ok(())
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Route {
    async fn deliver(&mut self, n: &Notification) -> anyhow::Result<()> {
        let lang = self.lang;
        match &self.target {
            Target::Slack { client, url } => post_json(client, url, &slack_payload(n, lang)).await,
            Target::Webhook { client, url } => {
                post_json(client, url, &with_language(n, lang)).await
            }
            Target::Alertmanager { client, url } => {
                let alert =
                    alertmanager_alert(n, lang, self.firing.get(&n.fingerprint), self.am_ttl);
                post_json(client, url, &[&alert]).await?;
                match n.state {
                    NoteState::Firing => {
                        self.firing.insert(n.fingerprint.clone(), alert);
                    }
                    NoteState::Resolved => {
                        self.firing.remove(&n.fingerprint);
                    }
                }
                Ok(())
            }
            Target::Email {
                transport,
                from,
                to,
            } => {
                let (subject, body) = text::message(n, lang);
                let mut b = lettre::Message::builder()
                    .from(from.clone())
                    .subject(subject)
                    .header(lettre::message::header::ContentType::TEXT_PLAIN);
                for t in to {
                    b = b.to(t.clone());
                }
                transport.send(b.body(body)?).await?;
                Ok(())
            }
            Target::Kafka { producer, topic } => {
                let payload = serde_json::to_vec(&with_language(n, lang))?;
                producer
                    .send(
                        FutureRecord::to(topic)
                            .key(n.fingerprint.as_bytes())
                            .payload(&payload),
                        rdkafka::util::Timeout::After(Duration::from_secs(10)),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
                Ok(())
            }
            Target::File { path } => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                let mut line = serde_json::to_vec(&with_language(n, lang))?;
                line.push(b'\n');
                f.write_all(&line)?;
                Ok(())
            }
        }
    }

    async fn resend_firing(&mut self) -> anyhow::Result<()> {
        let Target::Alertmanager { client, url } = &self.target else {
            return Ok(());
        };
        let ends = rfc3339_in(self.am_ttl);
        let alerts: Vec<serde_json::Value> = self
            .firing
            .values()
            .map(|a| {
                let mut a = a.clone();
                a["endsAt"] = ends.clone().into();
                a
            })
            .collect();
        post_json(client, url, &alerts).await
    }
}

fn rfc3339_in(d: Duration) -> String {
    (chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The notification with its summary in the route's language.
fn with_language(n: &Notification, lang: Language) -> serde_json::Value {
    let mut v = serde_json::to_value(n).unwrap_or_default();
    v["summary"] = text::summary(n, lang).into();
    v
}

/// A Slack incoming-webhook message.
pub fn slack_payload(n: &Notification, lang: Language) -> serde_json::Value {
    let (subject, body) = text::message(n, lang);
    let icon = match (n.state, n.severity.as_str()) {
        (NoteState::Resolved, _) => ":white_check_mark:",
        (_, "critical") => ":red_circle:",
        (_, "info") => ":information_source:",
        _ => ":warning:",
    };
    let details: Vec<&str> = body.lines().skip(1).collect();
    serde_json::json!({
        "text": format!("{icon} {subject}"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} *{subject}*")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": details.join("\n")}]}
        ]
    })
}

/// One alert of Alertmanager's `POST /api/v2/alerts`. Times are wall
/// clock (Alertmanager's own); event times are in the annotations.
pub fn alertmanager_alert(
    n: &Notification,
    lang: Language,
    previous: Option<&serde_json::Value>,
    ttl: Duration,
) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), n.rule.clone().into());
    labels.insert("severity".into(), n.severity.clone().into());
    labels.insert("kpi".into(), n.kpi.clone().into());
    labels.insert("window".into(), n.window.kind.clone().into());
    for (k, v) in &n.labels {
        labels.insert(k.clone(), v.clone().into());
    }
    let (_, description) = text::message(n, lang);
    let starts = previous
        .and_then(|p| p["startsAt"].as_str().map(str::to_string))
        .unwrap_or_else(rfc3339_now);
    let ends = match n.state {
        NoteState::Firing => rfc3339_in(ttl),
        NoteState::Resolved => rfc3339_now(),
    };
    serde_json::json!({
        "labels": labels,
        "annotations": {
            "summary": text::summary(n, lang),
            "description": description,
            "value": n.value.to_string(),
            "threshold": n.threshold.to_string(),
            "sample_size": n.sample_size.to_string(),
            "window_label": n.window.label,
            "event_time_started_at": n.started_at,
            "fingerprint": n.fingerprint,
        },
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": n.dashboard_url.clone().unwrap_or_default(),
    })
}
