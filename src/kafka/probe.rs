//! Reaching the brokers: metadata requests that say why a connection
//! failed (TLS, SASL, a listener that wants TLS or authentication) and
//! which setting fixes it, instead of librdkafka's "broker transport
//! failure" after a 30 s timeout. A refused password or certificate is a
//! configuration error: salespulse stops at start-up, at once, naming the
//! `kafka.properties` key to fix.

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a metadata request may wait for the brokers.
const PATIENCE: Duration = Duration::from_secs(30);
/// One attempt: between attempts, a TLS or SASL failure stops the wait.
const ATTEMPT: Duration = Duration::from_secs(2);

/// Keeps the last error librdkafka reported on its own (a failed TLS
/// handshake or SASL exchange shows there, not in the request's error).
#[derive(Default)]
pub struct Probe {
    last: Mutex<Option<(Option<RDKafkaErrorCode>, String)>>,
}

impl ClientContext for Probe {
    fn error(&self, error: KafkaError, reason: &str) {
        self.record(error.rdkafka_error_code(), reason.into());
    }

    /// Connection failures are logged, often more precisely than the
    /// error event that follows.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.record(classify(message), format!("{fac}: {message}"));
        }
    }
}

/// The error code a librdkafka log line stands for, when it says.
fn classify(message: &str) -> Option<RDKafkaErrorCode> {
    let m = message.to_ascii_lowercase();
    if m.contains("sasl authentication") || m.contains("authentication failed") {
        Some(RDKafkaErrorCode::Authentication)
    } else if m.contains("ssl handshake failed") || m.contains("certificate verify failed") {
        Some(RDKafkaErrorCode::SSL)
    } else {
        None
    }
}

impl ConsumerContext for Probe {}

impl Probe {
    /// Keeps the newest reason, unless it says less than the one kept
    /// ("0/1 brokers are down" after "SSL handshake failed: …").
    fn record(&self, code: Option<RDKafkaErrorCode>, reason: String) {
        let mut last = self.last.lock().expect("probe lock");
        if last
            .as_ref()
            .is_none_or(|(c, r)| rank(code, &reason) >= rank(*c, r))
        {
            *last = Some((code, reason));
        }
    }

    fn last(&self) -> Option<(Option<RDKafkaErrorCode>, String)> {
        self.last.lock().expect("probe lock").clone()
    }
}

/// What to check for an error librdkafka reported, if salespulse can say.
pub fn hint(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    Some(match code {
        Some(RDKafkaErrorCode::Authentication) => {
            "the broker refused the credentials: check kafka.properties \"sasl.mechanisms\" (the broker's, e.g. SCRAM-SHA-512), \"sasl.username\" and \"sasl.password\" (or SALESPULSE_KAFKA__PROPERTIES__SASL_PASSWORD)"
        }
        Some(RDKafkaErrorCode::SSL) => {
            "TLS with the broker failed: check kafka.properties \"ssl.ca.location\" (a PEM file of the authority that signed the broker's certificate) and that kafka.brokers names the host the certificate is for"
        }
        Some(RDKafkaErrorCode::Resolve) => "a broker name does not resolve: check kafka.brokers",
        _ if r.contains("connection refused") => {
            "nothing listens there: check kafka.brokers (host:port of the Kafka listener)"
        }
        _ if r.contains("disconnected") && (r.contains("apiversion") || r.contains("connect")) => {
            "the broker closed the connection before its first answer: a TLS listener wants kafka.properties \"security.protocol\" = \"SSL\" (or \"SASL_SSL\"), and a broker that requires authentication wants \"SASL_SSL\" or \"SASL_PLAINTEXT\" with \"sasl.mechanisms\", \"sasl.username\" and \"sasl.password\""
        }
        _ if r.contains("brokers are down") => {
            "no broker answered: check kafka.brokers, and that kafka.properties \"security.protocol\" is the listener's (\"SSL\" or \"SASL_SSL\" for a TLS listener; a broker that requires authentication also wants \"sasl.mechanisms\", \"sasl.username\" and \"sasl.password\")"
        }
        _ => return None,
    })
}

/// How much a reason says: a refusal, a connection failure, all
/// brokers down, nothing salespulse can explain.
fn rank(code: Option<RDKafkaErrorCode>, reason: &str) -> u8 {
    match hint(code, reason) {
        _ if fatal(code) => 3,
        Some(_) if reason.contains("brokers are down") => 1,
        Some(_) => 2,
        None => 0,
    }
}

/// A TLS or SASL failure: retrying does not help.
fn fatal(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
    )
}

/// The partition count of each topic (0 when it does not exist), asking
/// the brokers for up to 30 s; a failure says what librdkafka saw and
/// which setting to check.
pub fn partition_counts(
    base: &ClientConfig,
    topics: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    // rdkafka takes librdkafka's log level from the `log` crate's, which
    // salespulse does not use: without this, the reasons go unsaid.
    let c: BaseConsumer<Probe> = base
        .clone()
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(Probe::default())
        .context("cannot create a Kafka client (check kafka.brokers and kafka.properties)")?;
    let mut out = Vec::new();
    for t in topics {
        let t0 = Instant::now();
        let md = loop {
            match c.fetch_metadata(Some(t), ATTEMPT) {
                Ok(md) => break md,
                Err(e) => {
                    // Serves the queue the logs and errors wait in.
                    let _ = c.poll(Duration::ZERO);
                    let last = c.context().last();
                    let give_up = t0.elapsed() + ATTEMPT > PATIENCE
                        || last.as_ref().is_some_and(|(code, _)| fatal(*code));
                    if give_up {
                        return Err(explain(e, last, base, t));
                    }
                }
            }
        };
        let n = md
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        out.push((t.clone(), n));
    }
    Ok(out)
}

fn explain(
    e: KafkaError,
    last: Option<(Option<RDKafkaErrorCode>, String)>,
    base: &ClientConfig,
    topic: &str,
) -> anyhow::Error {
    let brokers = base.get("bootstrap.servers").unwrap_or("?");
    let protocol = base.get("security.protocol").unwrap_or("plaintext");
    let mut msg = format!(
        "cannot read the metadata of topic {topic} from {brokers} (security.protocol {protocol}): {e}"
    );
    if let Some((code, reason)) = last {
        msg.push_str(&format!("; librdkafka: {reason}"));
        if let Some(h) = hint(code, &reason) {
            msg.push_str(&format!(" ({h})"));
        }
    }
    anyhow::anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_setting_to_fix() {
        let h = |c, r| hint(c, r).unwrap_or("");
        assert!(h(
            Some(RDKafkaErrorCode::Authentication),
            "SASL authentication error"
        )
        .contains("sasl.password"));
        assert!(
            h(Some(RDKafkaErrorCode::SSL), "certificate verify failed").contains("ssl.ca.location")
        );
        assert!(h(
            None,
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
        )
        .contains("kafka.brokers"));
        assert!(h(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9093/bootstrap: Disconnected (after 2ms in state APIVERSION_QUERY)"
        )
        .contains("security.protocol"));
        assert!(h(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down"
        )
        .contains("security.protocol"));
        assert_eq!(hint(Some(RDKafkaErrorCode::MessageTimedOut), "x"), None);
        assert!(
            fatal(Some(RDKafkaErrorCode::SSL)) && !fatal(Some(RDKafkaErrorCode::AllBrokersDown))
        );
    }
}
