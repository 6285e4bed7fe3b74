//! Notification texts in English and French.

use super::{NoteState, Notification};
use crate::config::alerts::Language;

/// Human name of a KPI.
pub fn kpi_name(kpi: &str, lang: Language) -> String {
    let (en, fr) = match kpi {
        "leads_created" => ("Leads created", "Leads créés"),
        "lead_conversion_rate" => ("Lead conversion rate", "Taux de conversion des leads"),
        "lead_response_time_seconds_avg" => (
            "Lead response time (avg)",
            "Délai de réponse aux leads (moyenne)",
        ),
        "lead_response_time_seconds_p50" => (
            "Lead response time (median)",
            "Délai de réponse aux leads (médiane)",
        ),
        "lead_response_time_seconds_p90" => (
            "Lead response time (p90)",
            "Délai de réponse aux leads (p90)",
        ),
        "first_contact_sla_breaches" => (
            "First-contact SLA breaches",
            "Dépassements du délai de premier contact",
        ),
        "first_contact_sla_compliance_ratio" => (
            "First-contact SLA compliance",
            "Respect du délai de premier contact",
        ),
        "leads_awaiting_first_contact" => (
            "Leads awaiting a first contact",
            "Leads en attente d'un premier contact",
        ),
        "win_rate" => ("Win rate", "Taux de réussite"),
        "win_loss_ratio" => ("Win/loss ratio", "Ratio gagnées/perdues"),
        "deals_won" => ("Deals won", "Affaires gagnées"),
        "revenue" => ("Revenue", "Chiffre d'affaires"),
        "average_deal_size" => ("Average deal size", "Montant moyen des affaires"),
        "sales_cycle_seconds_avg" => ("Sales cycle (avg)", "Cycle de vente (moyenne)"),
        "sales_cycle_seconds_p50" => ("Sales cycle (median)", "Cycle de vente (médiane)"),
        "sales_cycle_seconds_p90" => ("Sales cycle (p90)", "Cycle de vente (p90)"),
        "pipeline_value" => ("Pipeline value", "Valeur du pipeline"),
        "pipeline_value_weighted" => ("Weighted pipeline value", "Valeur pondérée du pipeline"),
        "stalled_deals" => ("Stalled deals", "Affaires au point mort"),
        "stalled_pipeline_value" => ("Stalled pipeline value", "Valeur du pipeline au point mort"),
        "stalled_pipeline_ratio" => (
            "Share of the pipeline stalled",
            "Part du pipeline au point mort",
        ),
        "quota_attainment_ratio" => ("Quota attainment", "Atteinte des quotas"),
        "quota_reps_at_target_ratio" => (
            "Share of reps at quota",
            "Part des commerciaux à 100 % du quota",
        ),
        "sales_progress_ratio" => ("Monthly sales progress", "Avancement mensuel des ventes"),
        "sales_run_rate_projection" => ("Run-rate projection", "Projection au rythme actuel"),
        "revenue_growth_mom_ratio" => (
            "Revenue growth (month over month)",
            "Croissance du chiffre d'affaires (mois sur mois)",
        ),
        "churn_rate" => ("Churn rate", "Taux d'attrition"),
        "retention_rate" => ("Retention rate", "Taux de rétention"),
        "active_customers" => ("Active customers", "Clients actifs"),
        "activities" => ("Activities", "Activités"),
        other => (other, other),
    };
    match lang {
        Language::En => en.to_string(),
        Language::Fr => fr.to_string(),
    }
}

/// A value in its unit: `12.5 %`, `3.2 days`, `12,345.00`, `42`.
pub fn format_value(v: f64, unit: &str, lang: Language) -> String {
    let s = match unit {
        "ratio" => format!("{:.1} %", v * 100.0),
        "seconds" if v.abs() >= 86_400.0 => match lang {
            Language::En => format!("{:.1} days", v / 86_400.0),
            Language::Fr => format!("{:.1} jours", v / 86_400.0),
        },
        "seconds" if v.abs() >= 3600.0 => format!("{:.1} h", v / 3600.0),
        "seconds" => format!("{v:.0} s"),
        "currency" => format!("{v:.2}"),
        _ => format!("{v:.0}"),
    };
    match lang {
        Language::En => s,
        Language::Fr => s.replace('.', ","),
    }
}

fn pct(v: f64, lang: Language) -> String {
    let s = format!("{:+.1} %", v * 100.0);
    match lang {
        Language::En => s,
        Language::Fr => s.replace('.', ","),
    }
}

fn scope(n: &Notification, lang: Language) -> String {
    let dims: Vec<String> = n
        .dimensions
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let all = match lang {
        Language::En => "all",
        Language::Fr => "tous",
    };
    format!(
        "{} {}, {}",
        n.window.kind,
        n.window.label,
        if dims.is_empty() {
            all.to_string()
        } else {
            dims.join(", ")
        }
    )
}

/// What was measured against what: `12.0 %, below 15.0 %` or
/// `−25.0 % vs previous window (20.0 % → 15.0 %), below −20.0 %`.
fn comparison(n: &Notification, lang: Language) -> String {
    let (above, below) = match lang {
        Language::En => ("above", "below"),
        Language::Fr => ("au-dessus de", "en dessous de"),
    };
    let vs = match (lang, n.baseline_windows.unwrap_or(1), &n.baseline_season) {
        (Language::En, 1, None) => "vs the previous window".to_string(),
        (Language::Fr, 1, None) => "par rapport à la fenêtre précédente".to_string(),
        (Language::En, k, None) => format!("vs the mean of the last {k} windows"),
        (Language::Fr, k, None) => format!("par rapport à la moyenne des {k} dernières fenêtres"),
        (Language::En, k, Some(p)) => format!("vs the mean of the last {k} windows {p} apart"),
        (Language::Fr, k, Some(p)) => {
            format!("par rapport à la moyenne des {k} dernières fenêtres à {p} d'intervalle")
        }
    };
    let side = if n.condition.ends_with("above") {
        above
    } else {
        below
    };
    let (resolved_word, clear_word) = match lang {
        Language::En => ("back past", "the clear level"),
        Language::Fr => ("revenu au-delà du", "seuil de retour"),
    };
    match (n.change, n.baseline) {
        (Some(c), Some(b)) => {
            let base = format!(
                "{} {vs} ({} -> {})",
                pct(c, lang),
                format_value(b, &n.unit, lang),
                format_value(n.value, &n.unit, lang)
            );
            match n.state {
                NoteState::Firing => format!("{base}, {side} {}", pct(n.threshold, lang)),
                NoteState::Resolved => {
                    format!(
                        "{base}, {resolved_word} {clear_word} {}",
                        pct(n.clear, lang)
                    )
                }
            }
        }
        _ => {
            let v = format_value(n.value, &n.unit, lang);
            match n.state {
                NoteState::Firing => {
                    format!("{v}, {side} {}", format_value(n.threshold, &n.unit, lang))
                }
                NoteState::Resolved => format!(
                    "{v}, {resolved_word} {clear_word} {}",
                    format_value(n.clear, &n.unit, lang)
                ),
            }
        }
    }
}

/// One line: `[FIRING] lead_conversion_low: Lead conversion rate (month 2026-11, channel=web) is 12.0 %, below 15.0 % (sample 240)`.
pub fn summary(n: &Notification, lang: Language) -> String {
    if n.condition == "absent" {
        return absent_summary(n, lang);
    }
    let (state, is, sample) = match (lang, n.state, n.repeat) {
        (Language::En, NoteState::Firing, false) => ("FIRING", "is", "sample"),
        (Language::En, NoteState::Firing, true) => ("STILL FIRING", "is", "sample"),
        (Language::En, NoteState::Resolved, _) => ("RESOLVED", "is", "sample"),
        (Language::Fr, NoteState::Firing, false) => ("DÉCLENCHÉE", "est à", "échantillon"),
        (Language::Fr, NoteState::Firing, true) => ("TOUJOURS ACTIVE", "est à", "échantillon"),
        (Language::Fr, NoteState::Resolved, _) => ("RÉSOLUE", "est à", "échantillon"),
    };
    format!(
        "[{state}] {}: {} ({}) {is} {} ({sample} {})",
        n.rule,
        kpi_name(&n.kpi, lang),
        scope(n, lang),
        comparison(n, lang),
        n.sample_size
    )
}

/// `[FIRING] web_leads_absent: no event (crm.lead.created; channel=web)
/// since 2026-03-04T09:00:00Z: 5.0 h, at least 2.0 h`.
fn absent_summary(n: &Notification, lang: Language) -> String {
    let mut what: Vec<String> = Vec::new();
    if !n.window.label.is_empty() {
        what.push(n.window.label.clone());
    }
    what.extend(n.dimensions.iter().map(|(k, v)| format!("{k}={v}")));
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" ({})", what.join("; "))
    };
    let (silent, limit) = (
        format_value(n.value, "seconds", lang),
        format_value(n.threshold, "seconds", lang),
    );
    match (lang, n.state, n.repeat) {
        (Language::En, NoteState::Firing, repeat) => format!(
            "[{}] {}: no event{what} since {}: {silent}, at least {limit}",
            if repeat { "STILL FIRING" } else { "FIRING" },
            n.rule,
            n.window.start
        ),
        (Language::Fr, NoteState::Firing, repeat) => format!(
            "[{}] {} : aucun événement{what} depuis {} : {silent}, au moins {limit}",
            if repeat {
                "TOUJOURS ACTIVE"
            } else {
                "DÉCLENCHÉE"
            },
            n.rule,
            n.window.start
        ),
        (Language::En, NoteState::Resolved, _) => format!(
            "[RESOLVED] {}: events again{what} at {}, after {silent} without",
            n.rule, n.window.end
        ),
        (Language::Fr, NoteState::Resolved, _) => format!(
            "[RÉSOLUE] {} : de nouveau des événements{what} le {}, après {silent} sans",
            n.rule, n.window.end
        ),
    }
}

/// Subject and body of a message (Slack, e-mail).
pub fn message(n: &Notification, lang: Language) -> (String, String) {
    let subject = summary(n, lang);
    let mut body = vec![subject.clone()];
    let (sev, since, ended, window, fp, link) = match lang {
        Language::En => (
            "Severity",
            "Firing since",
            "Resolved at",
            "Window",
            "Fingerprint",
            "Dashboard",
        ),
        Language::Fr => (
            "Gravité",
            "Active depuis",
            "Résolue le",
            "Fenêtre",
            "Empreinte",
            "Tableau de bord",
        ),
    };
    body.push(format!("{sev}: {}", n.severity));
    body.push(format!("{since}: {}", n.started_at));
    if let Some(e) = &n.ended_at {
        body.push(format!("{ended}: {e}"));
    }
    body.push(format!("{window}: {} .. {}", n.window.start, n.window.end));
    let extra: Vec<String> = n
        .labels
        .iter()
        .filter(|(k, _)| !n.dimensions.contains_key(*k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !extra.is_empty() {
        body.push(format!("Labels: {}", extra.join(", ")));
    }
    if let Some(u) = &n.dashboard_url {
        body.push(format!("{link}: {u}"));
    }
    body.push(format!("{fp}: {}", n.fingerprint));
    (subject, body.join("\n"))
}

/// Percent-encodes a value for a URL query (RFC 3986 unreserved characters stay).
fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `alerts.dashboard_url` with its placeholders filled in (values percent-encoded).
pub fn dashboard_link(template: &str, n: &Notification) -> Option<String> {
    if template.is_empty() {
        return None;
    }
    let mut s = template
        .replace("{rule}", &url_encode(&n.rule))
        .replace("{kpi}", &url_encode(&n.kpi))
        .replace("{window_label}", &url_encode(&n.window.label))
        .replace("{window}", &url_encode(&n.window.kind));
    for (k, v) in &n.labels {
        s = s.replace(&format!("{{{k}}}"), &url_encode(v));
    }
    Some(s)
}
