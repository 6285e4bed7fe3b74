//! The documentation stays true to the code: every configuration key is
//! in the reference, every KPI in the KPI list, every relative link
//! points at a file that exists, and the README stays short.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Dotted keys of a JSON value's objects (`time.zone`, `kafka.properties`…).
fn keys(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() && !prefix.ends_with("properties") => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                keys(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn every_configuration_key_is_in_the_reference_with_its_environment_variable() {
    let cfg = serde_json::to_value(salespulse::config::Config::default()).unwrap();
    let mut all = BTreeSet::new();
    keys("", &cfg, &mut all);
    assert!(all.len() > 60, "{} keys: {all:?}", all.len());
    let doc = read("docs/configuration.md");
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| !doc.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
    for k in ["time.zone", "kafka.brokers", "prometheus.max_series"] {
        let (section, key) = k.split_once('.').unwrap();
        let env = format!(
            "SALESPULSE_{}__{}",
            section.to_uppercase(),
            key.to_uppercase()
        );
        assert!(doc.contains(&env), "{env} not in docs/configuration.md");
    }
}

#[test]
fn every_kpi_is_in_the_kpi_list() {
    let doc = read("docs/kpis.md");
    let missing: Vec<&str> = salespulse::kpi::CATALOGUE
        .iter()
        .map(|k| k.name)
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "docs/kpis.md lacks {missing:?}");
}

#[test]
fn relative_links_in_the_docs_point_at_files_that_exist() {
    let mut files: Vec<PathBuf> = vec![
        root().join("README.md"),
        root().join("CHANGELOG.md"),
        root().join("deploy/README.md"),
    ];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    let link = |s: &str| -> Vec<String> {
        s.match_indices("](")
            .filter_map(|(i, _)| {
                let rest = &s[i + 2..];
                let end = rest.find(')')?;
                Some(rest[..end].to_string())
            })
            .collect()
    };
    let mut broken = Vec::new();
    let mut seen = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for l in link(&text) {
            if l.starts_with("http") || l.starts_with('#') || l.starts_with("mailto:") {
                continue;
            }
            seen += 1;
            let path = l.split('#').next().unwrap();
            if !f.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {l}", f.display()));
            }
        }
    }
    assert!(seen > 20, "only {seen} relative links found");
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn the_readme_is_short_and_names_the_two_commands() {
    let readme = read("README.md");
    let n = readme.lines().count();
    assert!(n <= 400, "README.md has {n} lines (at most 400)");
    assert!(readme.contains("cargo run --release -- run"));
    assert!(readme.contains("./scripts/test.sh"));
    assert!(read(".ci/run").contains("scripts/test.sh"));
}
