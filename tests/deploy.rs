//! The deployment files, checked without a Docker engine or a cluster
//! (none runs in CI): the compose stack and the Kubernetes manifests
//! parse and refer only to files, services and ports that exist; the
//! Dockerfile is multi-stage, non-root, with a healthcheck the binary
//! answers; and the Grafana dashboard is what its generator writes.
//! (Every dashboard query returns data through a real Prometheus:
//! tests/prometheus.rs.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(p: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn s(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn compose_stack_refers_only_to_what_exists() {
    let deploy = root().join("deploy");
    let doc = &yaml(&deploy.join("docker-compose.yml"))[0];
    let services = doc["services"].as_hash().expect("services");
    let names: BTreeSet<String> = services.keys().map(s).collect();
    for want in [
        "kafka",
        "salespulse",
        "generator",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(names.contains(want), "no service {want}");
    }
    // published container ports, by service
    let mut ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (name, svc) in services {
        let name = s(name);
        for p in svc["ports"].as_vec().into_iter().flatten() {
            let p = s(p);
            let container = p.rsplit(':').next().unwrap().parse().unwrap();
            ports.entry(name.clone()).or_default().insert(container);
        }
        for dep in svc["depends_on"]
            .as_vec()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(s)
            .chain(
                svc["depends_on"]
                    .as_hash()
                    .into_iter()
                    .flat_map(|h| h.keys().map(s)),
            )
        {
            assert!(
                names.contains(&dep),
                "{name} depends on unknown service {dep}"
            );
        }
        for v in svc["volumes"].as_vec().into_iter().flatten() {
            let v = s(v);
            let host = v.split(':').next().unwrap();
            if !host.starts_with('.') {
                // A named volume: declared at the top level.
                assert!(
                    !doc["volumes"][host].is_badvalue(),
                    "{name}: volume {host} is not declared"
                );
                continue;
            }
            assert!(
                deploy.join(host).exists(),
                "{name}: volume source {host} is missing"
            );
        }
        if let Some(b) = svc["build"]["context"].as_str() {
            let ctx = deploy.join(b);
            assert!(ctx
                .join(svc["build"]["dockerfile"].as_str().unwrap())
                .exists());
        }
    }
    // Kafka advertises a listener for the host too, published there.
    let kafka_env = &doc["services"]["kafka"]["environment"];
    let advertised = s(&kafka_env["KAFKA_ADVERTISED_LISTENERS"]);
    let host = advertised
        .split(',')
        .find_map(|l| l.strip_prefix("HOST://localhost:"))
        .expect("a listener advertised as localhost for the host");
    assert!(
        ports["kafka"].contains(&host.parse().unwrap()),
        "{host} not published"
    );
    assert!(s(&kafka_env["KAFKA_LISTENERS"]).contains(&format!("HOST://:{host}")));
    // Topics come from kafka-init, with their partitions; nothing is auto-created.
    assert_eq!(s(&kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]), "false");
    let init = doc["services"]["kafka-init"]["command"][0]
        .as_str()
        .unwrap();
    let topics: BTreeMap<String, (u32, String)> = init
        .lines()
        .filter_map(|l| l.trim().strip_prefix("t "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[0].to_string(),
                (w[1].parse().unwrap(), w.get(2).unwrap_or(&"").to_string()),
            )
        })
        .collect();
    let sp_cfg = salespulse::config::Config::from_toml(
        &std::fs::read_to_string(deploy.join("salespulse.toml")).unwrap(),
    )
    .unwrap();
    let k = &sp_cfg.kafka;
    let input = topics
        .get(&k.input_topics[0])
        .unwrap_or_else(|| panic!("kafka-init does not create {}", k.input_topics[0]))
        .0;
    for t in [
        &k.kpi_topic,
        &k.alert_topic,
        &k.leaderboard_topic,
        &k.dlq_topic,
    ] {
        assert!(topics.contains_key(t), "kafka-init does not create {t}");
    }
    assert_eq!(topics[&k.partials()].0, 1, "partials: one partition");
    assert_eq!(
        topics[&k.changelog()],
        (input, "cleanup.policy=compact".to_string()),
        "changelog: as many partitions as the input, compacted"
    );
    let generated_to = doc["services"]["generator"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(s)
        .skip_while(|a| a != "--topic")
        .nth(1)
        .unwrap();
    assert!(topics.contains_key(&generated_to));
    for svc in ["salespulse", "generator"] {
        assert_eq!(
            s(&doc["services"][svc]["depends_on"]["kafka-init"]["condition"]),
            "service_completed_successfully",
            "{svc} starts once the topics exist"
        );
    }
    for (name, svc) in services {
        let want = if s(name) == "kafka-init" {
            "on-failure"
        } else {
            "unless-stopped"
        };
        assert_eq!(s(&svc["restart"]), want, "restart policy of {}", s(name));
    }
    // salespulse reaches Kafka where Kafka advertises itself
    let sp = &doc["services"]["salespulse"];
    let brokers = s(&sp["environment"]["SALESPULSE_KAFKA__BROKERS"]);
    let advertised = s(&doc["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]);
    assert!(advertised.ends_with(&brokers), "{brokers} vs {advertised}");
    assert!(names.contains(brokers.split(':').next().unwrap()));
    // the generator's command line is one the binary accepts
    let gen: Vec<String> = doc["services"]["generator"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    let help = Command::new(BIN)
        .args([&gen[0], "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in gen.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag.as_str()),
            "`salespulse {}` has no {flag}",
            gen[0]
        );
    }
    // salespulse's config listens on the port Prometheus scrapes
    let cfg = salespulse::config::Config::from_toml(
        &std::fs::read_to_string(deploy.join("salespulse.toml")).unwrap(),
    )
    .expect("deploy/salespulse.toml is valid");
    let listen_port: u16 = cfg.http.listen.rsplit(':').next().unwrap().parse().unwrap();
    let prom = &yaml(&deploy.join("prometheus/prometheus.yml"))[0];
    let target = s(&prom["scrape_configs"][0]["static_configs"][0]["targets"][0]);
    let (host, port) = target.split_once(':').unwrap();
    assert_eq!(host, "salespulse");
    assert_eq!(port.parse::<u16>().unwrap(), listen_port);
    assert!(ports["salespulse"].contains(&listen_port));
    let am = s(&prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]);
    assert!(names.contains(am.split(':').next().unwrap()));
    assert!(ports["alertmanager"].contains(&am.split(':').nth(1).unwrap().parse().unwrap()));
    // salespulse posts its alerts to that Alertmanager, with the example's default rules
    let route = cfg
        .alerts
        .routes
        .iter()
        .find(|r| r.kind == salespulse::config::alerts::RouteKind::Alertmanager)
        .expect("an alertmanager route");
    assert_eq!(route.url, format!("http://{am}"));
    let example = salespulse::config::Config::from_toml(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/salespulse.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&cfg.alerts.rules).unwrap(),
        serde_json::to_value(&example.alerts.rules).unwrap(),
        "deploy/salespulse.toml and examples/salespulse.toml hold the same rules"
    );
    assert_eq!(example.alerts.rules.len(), 9);
    // Grafana's datasource points at the Prometheus service
    let ds = &yaml(&deploy.join("grafana/provisioning/datasources/prometheus.yml"))[0];
    let url = s(&ds["datasources"][0]["url"]);
    assert_eq!(
        url,
        format!("http://prometheus:{}", ports["prometheus"].first().unwrap())
    );
    let dash = &yaml(&deploy.join("grafana/provisioning/dashboards/salespulse.yml"))[0];
    let path = s(&dash["providers"][0]["options"]["path"]);
    let gf = doc["services"]["grafana"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(s)
        .find(|v| v.contains(&path))
        .expect("dashboards volume");
    assert!(deploy
        .join(gf.split(':').next().unwrap())
        .join("salespulse.json")
        .exists());
    // The KPI history: salespulse writes to the compose PostgreSQL, and
    // Grafana's history datasource reads the same database as the same
    // user; the History dashboard is provisioned beside the other.
    let pg = &doc["services"]["postgres"]["environment"];
    let (user, password, db) = (
        s(&pg["POSTGRES_USER"]),
        s(&pg["POSTGRES_PASSWORD"]),
        s(&pg["POSTGRES_DB"]),
    );
    let url = s(&sp["environment"]["SALESPULSE_POSTGRES__URL"]);
    assert_eq!(
        url,
        format!(
            "postgres://{user}:{password}@postgres:{}/{db}",
            ports["postgres"].first().unwrap()
        )
    );
    url.parse::<tokio_postgres::Config>()
        .expect("a connection string salespulse takes");
    assert_eq!(
        s(&sp["depends_on"]["postgres"]["condition"]),
        "service_healthy"
    );
    let hds =
        &yaml(&deploy.join("grafana/provisioning/datasources/postgres.yml"))[0]["datasources"][0];
    assert_eq!(
        s(&hds["url"]),
        format!("postgres:{}", ports["postgres"].first().unwrap())
    );
    assert_eq!(s(&hds["user"]), user);
    assert_eq!(s(&hds["jsonData"]["database"]), db);
    assert_eq!(s(&hds["secureJsonData"]["password"]), password);
    let history: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            deploy
                .join(gf.split(':').next().unwrap())
                .join("salespulse-history.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for p in history["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], hds["uid"].as_str().unwrap());
        assert_eq!(p["datasource"]["type"], hds["type"].as_str().unwrap());
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_healthcheck() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    // Pinned base images, and the dependencies cached across code changes.
    for from in text.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.split(':').nth(1).unwrap_or("");
        assert!(
            tag.chars().filter(|c| c.is_ascii_digit()).count() >= 4,
            "{image}: pin a dated or full version tag"
        );
    }
    assert!(text.contains("--mount=type=cache,target=/usr/local/cargo/registry"));
    assert!(text.contains("--mount=type=cache,target=/src/target"));
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") && user != "USER 0", "{user}");
    assert!(text.contains("HEALTHCHECK") && text.contains("\"salespulse\", \"healthcheck\""));
    for l in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
    // the healthcheck command works against a running salespulse
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--events", "10", "--listen", &addr])
        .current_dir(tmp.path())
        .env("SALESPULSE_OUTPUT__SUMMARY_INTERVAL", "0s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = false;
    while Instant::now() < deadline && !ok {
        ok = Command::new(BIN)
            .args(["healthcheck", "--url", &url])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "healthcheck never passed");
    let down = Command::new(BIN)
        .args(["healthcheck", "--url", &url])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!down.success(), "healthcheck passes with nothing listening");
}

/// The Kubernetes API's own schemas (kubernetes-validate, installed by
/// scripts/install-validators.sh): every core resource passes strict
/// validation; the Prometheus Operator's kinds have no schema there.
#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(root().join("deploy/k8s/salespulse.yaml"))
        .output()
        .expect("kubernetes-validate (./scripts/install-validators.sh installs it; scripts/test.sh puts it on PATH)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for kind in ["configmap", "statefulset", "service", "poddisruptionbudget"] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{text}"
        );
    }
    for l in text.lines().filter(|l| !l.starts_with("INFO")) {
        assert!(
            l.contains("ServiceMonitor") || l.contains("PrometheusRule"),
            "{l}"
        );
    }
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let docs = yaml(&root().join("deploy/k8s/salespulse.yaml"));
    // the members' headless service is looked up by name, the others by kind
    let members = docs
        .iter()
        .find(|d| s(&d["kind"]) == "Service" && d["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless service for the StatefulSet");
    let by_kind: BTreeMap<String, &Yaml> = docs
        .iter()
        .filter(|d| !std::ptr::eq(*d, members))
        .map(|d| (s(&d["kind"]), d))
        .collect();
    for k in [
        "ConfigMap",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(by_kind.contains_key(k), "no {k}");
    }
    let dep = by_kind["StatefulSet"];
    assert_eq!(
        s(&dep["spec"]["serviceName"]),
        s(&members["metadata"]["name"])
    );
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(dep["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(by_kind["Service"]["spec"]["selector"], *labels);
    assert_eq!(members["spec"]["selector"], *labels);
    assert_eq!(
        by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        *labels
    );
    // Pod Security Standard "restricted"
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        s(&pod["securityContext"]["seccompProfile"]["type"]),
        "RuntimeDefault"
    );
    for c in pod["containers"].as_vec().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(s(&sc["capabilities"]["drop"][0]), "ALL");
    }
    // kube-prometheus-stack's default selectors pick the ServiceMonitor and rules up
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            s(&by_kind[kind]["metadata"]["labels"]["release"]),
            "kube-prometheus-stack",
            "{kind}"
        );
    }
    // The PrometheusRule holds the rules of deploy/prometheus, and promtool accepts them.
    let rules = &yaml(&root().join("deploy/prometheus/salespulse.rules.yml"))[0];
    assert_eq!(by_kind["PrometheusRule"]["spec"], *rules);
    let mut text = String::new();
    yaml_rust2::YamlEmitter::new(&mut text)
        .dump(&by_kind["PrometheusRule"]["spec"])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rules.yml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian package prometheus; ./scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // each pod's name is its static group membership id
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_vec()
        .unwrap();
    let id = env
        .iter()
        .find(|e| s(&e["name"]) == "SALESPULSE_KAFKA__INSTANCE_ID")
        .expect("kafka.instance_id from the pod name");
    assert_eq!(
        s(&id["valueFrom"]["fieldRef"]["fieldPath"]),
        "metadata.name"
    );
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/healthz");
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    let port_name = s(&c["ports"][0]["name"]);
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["port"]), port_name);
    assert_eq!(
        s(&by_kind["Service"]["spec"]["ports"][0]["targetPort"]),
        port_name
    );
    assert_eq!(
        s(&by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["port"]),
        s(&by_kind["Service"]["spec"]["ports"][0]["name"])
    );
    // the mounted config is valid salespulse config and listens on the container port
    let toml = s(&by_kind["ConfigMap"]["data"]["salespulse.toml"]);
    let cfg = salespulse::config::Config::from_toml(&toml).expect("ConfigMap config is valid");
    assert!(cfg
        .http
        .listen
        .ends_with(&format!(":{}", s(&c["ports"][0]["containerPort"]))));
    let args: Vec<String> = c["args"].as_vec().unwrap().iter().map(s).collect();
    let mount = s(&c["volumeMounts"][0]["mountPath"]);
    assert!(args
        .iter()
        .any(|a| a == &format!("{mount}/salespulse.toml")));
}

/// The committed dashboard is what deploy/grafana/make_dashboard.py
/// writes; it has a panel for every KPI family, a data-source variable
/// used by every panel, and stat panels whose thresholds come from the
/// default alert rules. (tests/prometheus.rs runs every panel's queries
/// through a real Prometheus.)
#[test]
fn dashboard_is_generated_and_complete() {
    let script = root().join("deploy/grafana/make_dashboard.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--check")
        .output()
        .expect("python3 (./scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Another currency is one argument away.
    let tmp = tempfile::tempdir().unwrap();
    let eur = tmp.path().join("eur.json");
    let st = Command::new("python3")
        .arg(&script)
        .args(["--currency", "EUR", "--out"])
        .arg(&eur)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let eur = std::fs::read_to_string(&eur).unwrap();
    assert!(eur.contains("currencyEUR") && !eur.contains("currencyUSD"));
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/salespulse.json")).unwrap(),
    )
    .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    for def in salespulse::kpi::CATALOGUE {
        let name = format!("salespulse_kpi_{}{{", def.name);
        assert!(
            exprs.iter().any(|e| e.contains(&name)),
            "no panel for {}",
            def.name
        );
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
    }
    let vars: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, BTreeSet::from(["datasource", "window", "dimension"]));
    // Stat panels: thresholds of the default rules.
    let stat = |title: &str| {
        panels
            .iter()
            .find(|p| p["type"] == "stat" && p["title"] == title)
            .unwrap_or_else(|| panic!("no stat panel {title}"))
    };
    let steps = |p: &serde_json::Value| -> Vec<f64> {
        p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["value"].as_f64())
            .collect()
    };
    assert_eq!(steps(stat("Churn rate (month)")), vec![0.04, 0.05]);
    assert_eq!(steps(stat("Reps at quota (month)")), vec![0.6, 0.65]);
    assert_eq!(
        steps(stat("Lead response p90 (day)")),
        vec![72000.0, 86400.0]
    );
}
