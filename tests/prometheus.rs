//! The operator's view, with real parts: a real Prometheus (Debian package `prometheus`)
//! scrapes a running server while a publisher and viewers exchange media, and every PromQL
//! expression of the Grafana dashboard (`grafana/parley-overview.json`) must evaluate without
//! error and return data. A metric renamed in code without the dashboard following fails
//! here. `promtool check metrics` lints the scraped text.
//!
//! Owns: the Prometheus child process (killed by a guard, even when a test panics) and its
//! temporary directory. Waits poll Prometheus's HTTP API or `/metrics` with a deadline; no
//! sleep stands in for a condition.

mod common;

use common::{play, Kind, Member, PlayOptions, Relay, SentLog, Viewer, SPEAKING};
use parley::config::Config;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dashboard under test.
const DASHBOARD: &str = include_str!("../grafana/parley-overview.json");
/// The scrape job name, as in `grafana/prometheus.yml`.
const JOB: &str = "parley";
/// The datasource every panel and target must use.
const DATASOURCE_UID: &str = "${datasource}";
/// What Grafana's `$__rate_interval` becomes here: four 1 s scrape intervals and more.
const RATE_INTERVAL: &str = "10s";
/// How long media and signaling waits may take.
const WAIT: Duration = Duration::from_secs(20);

// --- the dashboard ---------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("grafana/parley-overview.json is valid JSON")
}

/// Every panel, the panels inside rows included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("dashboard has panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// One PromQL expression of a panel.
struct Query {
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every `expr` of every panel target.
fn queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default().trim();
            assert!(
                !expr.is_empty(),
                "panel {:?} has a target without an expr",
                p["title"]
            );
            out.push(Query {
                panel: p["title"].as_str().unwrap_or("?").to_owned(),
                ref_id: t["refId"].as_str().unwrap_or("?").to_owned(),
                expr: expr.to_owned(),
            });
        }
    }
    out
}

/// The template variables (datasource excluded) with the values this test gives them: the
/// test's job name for `job`, the "All" value for a variable that has one.
fn variables(dash: &Value) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for v in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        let name = v["name"].as_str().expect("a variable has a name");
        let value = match (name, v["type"].as_str()) {
            (_, Some("datasource")) => continue,
            ("job", _) => JOB.to_owned(),
            _ if v["includeAll"] == Value::Bool(true) => v["allValue"]
                .as_str()
                .unwrap_or_else(|| panic!("variable {name}: includeAll needs an allValue"))
                .to_owned(),
            _ => panic!("variable {name}: this test does not know what value to give it"),
        };
        vars.insert(name.to_owned(), value);
    }
    for (name, value) in [
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "1s"),
        ("__range", "1m"),
    ] {
        vars.insert(name.to_owned(), value.to_owned());
    }
    vars
}

/// `expr` with `$name` and `${name}` replaced, longest names first.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[name])
            .replace(&format!("${name}"), &vars[name]);
    }
    assert!(
        !out.contains('$'),
        "an unknown variable is left in {out:?} (from {expr:?})"
    );
    out
}

/// A variable's query: `label_values(SELECTOR, LABEL)`.
fn label_values(v: &Value) -> Option<(String, String)> {
    let q = v["query"]["query"]
        .as_str()
        .or_else(|| v["query"].as_str())?;
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

#[test]
fn the_dashboard_takes_its_datasource_from_a_variable() {
    let dash = dashboard();
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` template variable");
    assert_eq!(ds["type"], "datasource", "{ds}");
    assert_eq!(ds["query"], "prometheus", "{ds}");
    let expected = serde_json::json!({"type": "prometheus", "uid": DATASOURCE_UID});
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], expected, "variable {}", v["name"]);
        assert!(
            label_values(v).is_some(),
            "variable {}: label_values(..)",
            v["name"]
        );
    }
    let mut ids = std::collections::BTreeSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "duplicate panel id in {title:?}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], expected, "panel {title:?}");
        let targets = p["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            assert_eq!(t["datasource"], expected, "panel {title:?} target {t}");
        }
    }
    // No datasource anywhere names a uid, except Grafana's built-in annotation source.
    fn walk(v: &Value, path: &str) {
        match v {
            Value::Object(map) => {
                if let Some(ds) = map.get("datasource") {
                    let builtin = ds["type"] == "grafana";
                    match ds {
                        Value::Object(_) if !builtin => assert_eq!(
                            ds["uid"], DATASOURCE_UID,
                            "{path}: hard-coded datasource {ds}"
                        ),
                        Value::String(s) => assert_eq!(s, DATASOURCE_UID, "{path}"),
                        _ => {}
                    }
                }
                for (k, v) in map {
                    walk(v, &format!("{path}.{k}"));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
    walk(&dash, "$");
    // Every range selector follows Grafana's rate interval.
    for q in queries(&dash) {
        for range in q.expr.split('[').skip(1) {
            let range = range.split(']').next().unwrap_or_default();
            assert_eq!(
                range, "$__rate_interval",
                "panel {:?} {}: {}",
                q.panel, q.ref_id, q.expr
            );
        }
    }
}

// --- Prometheus --------------------------------------------------------------------------

/// A Prometheus server scraping one target every second; killed when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base: String,
    client: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A binary of the Debian package `prometheus` (`prometheus`, `promtool`): `/usr/bin/NAME`,
/// else NAME on the PATH; the environment variable `env` overrides both.
fn tool(name: &str, env: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| {
        let debian = format!("/usr/bin/{name}");
        if std::path::Path::new(&debian).exists() {
            debian
        } else {
            name.to_owned()
        }
    })
}

impl Prometheus {
    /// Starts Prometheus with a config that scrapes `target`'s `/metrics` as job `parley`.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "prometheus-{}-{}",
            std::process::id(),
            target.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("create the Prometheus directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let port = free_port();
        let bin = tool("prometheus", "PARLEY_PROMETHEUS_BIN");
        let child = Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {bin}: {e}. Install the Debian package `prometheus` \
                     (./scripts/test.sh --setup-only does)"
                )
            });
        Prometheus {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// The end of Prometheus's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Panics (with the log) if Prometheus has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("Prometheus exited ({status}):\n{}", self.log_tail());
        }
    }

    /// Evaluates `expr` now: `Ok(result)` (the `data.result` vector) or `Err(reason)`.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let response = self
            .client
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let http = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("HTTP {http}, not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "HTTP {http}, status {}: {} {}",
                body["status"], body["errorType"], body["error"]
            ));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector") => Ok(body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            Some("scalar") => Ok(vec![
                serde_json::json!({"metric": {}, "value": body["data"]["result"]}),
            ]),
            other => Err(format!("unexpected resultType {other:?}")),
        }
    }

    /// The first value of `expr`'s result as a number, if any.
    async fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).await.ok()?;
        result.first().and_then(sample)
    }

    /// Waits until `expr` has a value `>= at_least`.
    async fn wait_for_value(&mut self, expr: &str, at_least: f64, limit: Duration) -> f64 {
        let start = Instant::now();
        loop {
            self.check_running();
            let v = self.value(expr).await;
            if let Some(v) = v.filter(|v| *v >= at_least) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for `{expr}` >= {at_least} (last: {v:?})\n\
                 Prometheus log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A vector sample's value.
fn sample(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

/// `None` if some series of a (non-empty) result has a finite value, else its values.
fn no_number(result: &[Value]) -> Option<String> {
    if result.iter().filter_map(sample).any(f64::is_finite) {
        return None;
    }
    let values: Vec<String> = result
        .iter()
        .map(|s| format!("{} = {}", s["metric"], s["value"][1]))
        .collect();
    Some(values.join(", "))
}

// --- the server's /metrics ---------------------------------------------------------------

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "GET {url}: Content-Type {content_type:?}"
    );
    response.text().await.expect("the /metrics body")
}

/// Sum of every sample of `name` (exact metric name) whose labels contain all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric_name = series.split('{').next()?;
            (metric_name == name && labels.iter().all(|want| series.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Runs `promtool check metrics` on `text`: (success, output).
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let bin = tool("promtool", "PARLEY_PROMTOOL_BIN");
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e} (Debian package `prometheus`)"));
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

#[tokio::test]
async fn metrics_are_served_on_the_http_port_without_metrics_listen() {
    let server = parley::start(Config::loopback()).await.expect("server");
    assert_eq!(server.metrics_addr, None);
    let text = scrape(&format!("{}/metrics", server.base_url())).await;
    for family in [
        "parley_rooms",
        "parley_sessions",
        "process_cpu_seconds_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "/metrics lacks {family}:\n{text}"
        );
    }
    // The scrape itself is counted, under its route template.
    let text = scrape(&format!("{}/metrics", server.base_url())).await;
    assert!(
        metric(
            &text,
            "parley_http_requests_total",
            &["route=\"/metrics\"", "status=\"200\""]
        ) >= 1.0,
        "the first scrape is counted:\n{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn promtool_check_metrics_accepts_the_exposition() {
    // Media and HTTP errors first, so every family has its label values in the text.
    let server = parley::start(Config::loopback()).await.expect("server");
    let base = server.base_url();
    let log = SentLog::default();
    let ann = Member::join(&base, "lint", "ann", 0, &log).await;
    let bob = play(&base, "lint", PlayOptions::slots("bob", 1, 1))
        .await
        .expect("bob plays");
    media_reaches(&bob, "bob").await;
    let http = reqwest::Client::new();
    assert_eq!(
        status_of(http.delete(format!("{base}/sessions/unknown"))).await,
        404
    );
    let text = scrape(&format!("{base}/metrics")).await;
    let (ok, output) = promtool_check(&text);
    eprintln!("promtool check metrics: ok={ok}\n{output}");
    assert!(
        ok,
        "promtool check metrics rejects Parley's /metrics (naming and help lint):\n{output}"
    );
    bob.close().await;
    ann.leave().await;
    server.shutdown().await;
}

// --- the whole picture -------------------------------------------------------------------

/// Waits until `viewer` has received audio and video packets.
async fn media_reaches(viewer: &Viewer, who: &str) {
    viewer
        .wait_for(&format!("{who} to receive audio and video"), WAIT, |got| {
            got.iter().filter(|r| r.kind == Kind::Video).count() >= 5
                && got.iter().filter(|r| r.kind == Kind::Audio).count() >= 5
        })
        .await
        .expect("media flows");
}

/// Sends one request and returns its status.
async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request
        .send()
        .await
        .expect("HTTP request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_every_dashboard_query_with_data() {
    let started = Instant::now();
    let dash = dashboard();
    let vars = variables(&dash);

    // The server: /metrics on its own listener, media through a relay that will lose 1
    // datagram in 20 (so the NACK, retransmission and loss panels have something to show),
    // and room for three sessions so that a fourth POST gets a 503. A cluster node (of one,
    // on a real Redis), for the cluster panels.
    let redis = common::redis::Redis::start().await;
    let mut relay = Relay::bind().await.expect("relay");
    let mut config = Config::loopback();
    config.redis_url = Some(redis.url());
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    config.public_port = Some(relay.addr.port());
    config.max_sessions = 3;
    let server = parley::start(config).await.expect("server");
    relay.forward_to(server.media_addr);
    let base = server.base_url();
    let metrics_addr = server.metrics_addr.expect("--metrics-listen is bound");
    let metrics_url = format!("http://{metrics_addr}/metrics");

    let mut prometheus = Prometheus::start(metrics_addr);

    // One publisher (VP8 + Opus, 50 packets/s each) and two viewers.
    let log = SentLog::default();
    let ann = Member::join(&base, "stage", "ann", 0, &log).await;
    ann.speak(SPEAKING);
    let bob = play(&base, "stage", PlayOptions::slots("bob", 1, 1))
        .await
        .expect("bob plays");
    let cat = play(&base, "stage", PlayOptions::slots("cat", 1, 1))
        .await
        .expect("cat plays");
    media_reaches(&bob, "bob").await;
    media_reaches(&cat, "cat").await;
    relay.drop_one_in(20);

    // HTTP errors (4xx and 5xx) for the error panels.
    let http = reqwest::Client::new();
    let sdp = "application/sdp";
    let requests = [
        (
            "DELETE an unknown session",
            status_of(http.delete(format!("{base}/sessions/unknown"))).await,
            404,
        ),
        (
            "POST an offer as text/plain",
            status_of(
                http.post(format!("{base}/whip/stage"))
                    .header("content-type", "text/plain")
                    .body("v=0\r\n"),
            )
            .await,
            415,
        ),
        (
            "POST a fourth session over --max-sessions 3",
            status_of(
                http.post(format!("{base}/whep/stage"))
                    .header("content-type", sdp)
                    .body("v=0\r\n"),
            )
            .await,
            503,
        ),
        (
            "GET /metrics on the HTTP port with --metrics-listen",
            status_of(http.get(format!("{base}/metrics"))).await,
            404,
        ),
        (
            "GET /rooms",
            status_of(http.get(format!("{base}/rooms"))).await,
            200,
        ),
    ];
    for (what, got, want) in requests {
        assert_eq!(got, want, "{what}");
    }
    // A connection to the ICE-TCP port that is not ICE, for the refused panel.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = server.ice_tcp_addr.expect("ICE-TCP");
        let mut junk = tokio::net::TcpStream::connect(tcp).await.expect("connect");
        junk.write_all(&[0, 4, 1, 2, 3, 4]).await.expect("write");
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(WAIT, junk.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the server closes it"
        );
    }

    // Prometheus sees the target.
    prometheus
        .wait_for_value(&format!("up{{job=\"{JOB}\"}}"), 1.0, WAIT)
        .await;

    // The RTCP statistics are read every 5 s per session: wait until jitter has observations
    // and the relay's losses made Parley NACK the publisher.
    let rtcp = Instant::now();
    loop {
        let text = scrape(&metrics_url).await;
        let counts = ["parley_jitter_seconds_count", "parley_nacks_sent_total"]
            .map(|m| (m, metric(&text, m, &[])));
        if counts.iter().all(|(_, v)| *v > 0.0) {
            break;
        }
        assert!(
            rtcp.elapsed() < WAIT,
            "RTCP statistics never showed up in /metrics: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A viewer leaves (DELETE) and another joins, so ended counters move and session setup
    // has a fresh observation inside the rate interval. The relay stops losing datagrams
    // while dan connects: lost DTLS flights back off for seconds, and connecting under loss
    // is not what this test is about.
    cat.close().await;
    relay.drop_one_in(0);
    let dan = play(&base, "stage", PlayOptions::slots("dan", 1, 1))
        .await
        .expect("dan plays");
    media_reaches(&dan, "dan").await;
    relay.drop_one_in(20);
    let setups = metric(
        &scrape(&metrics_url).await,
        "parley_session_setup_seconds_count",
        &[],
    );

    // Enough history: Prometheus has the churn and eight scrapes.
    prometheus
        .wait_for_value(
            &format!("sum(parley_session_setup_seconds_count{{job=\"{JOB}\"}})"),
            setups,
            WAIT,
        )
        .await;
    prometheus
        .wait_for_value(
            &format!("count_over_time(up{{job=\"{JOB}\"}}[1m])"),
            8.0,
            WAIT,
        )
        .await;

    // The template variables' own queries find the job and the instance.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let Some((selector, label)) = label_values(v) else {
            continue;
        };
        let selector = substitute(&selector, &vars);
        let result = prometheus
            .query(&selector)
            .await
            .unwrap_or_else(|e| panic!("variable {}: `{selector}` fails: {e}", v["name"]));
        assert!(
            result.iter().any(|s| s["metric"][&label].is_string()),
            "variable {}: `{selector}` has no `{label}` label: {result:?}",
            v["name"]
        );
    }

    // Every panel expression evaluates without error and returns series, and every panel
    // shows at least one number (a quantile of a histogram without observations in the
    // interval is NaN: a panel of only such quantiles shows nothing). Wait for all of them
    // together (rates need two scrapes of a new series), then report each that never did.
    let queries = queries(&dash);
    assert!(queries.len() >= 30, "only {} queries", queries.len());
    let until = Instant::now() + WAIT;
    let (failures, nan_only) = loop {
        prometheus.check_running();
        let mut failures = Vec::new();
        let mut nan_only = Vec::new();
        let mut panel_has_number: BTreeMap<&str, bool> = BTreeMap::new();
        for q in &queries {
            let expr = substitute(&q.expr, &vars);
            let shown = panel_has_number.entry(&q.panel).or_default();
            let at = format!("panel {:?} {}: `{expr}`", q.panel, q.ref_id);
            match prometheus.query(&expr).await {
                Err(e) => failures.push(format!("{at}: {e}")),
                Ok(result) if result.is_empty() => failures.push(format!("{at}: empty result")),
                Ok(result) => match no_number(&result) {
                    None => *shown = true,
                    Some(values) => nan_only.push(format!("{at}: {values}")),
                },
            }
        }
        for (panel, shown) in panel_has_number {
            if !shown {
                failures.push(format!("panel {panel:?}: no target has a finite value"));
            }
        }
        if failures.is_empty() || Instant::now() > until {
            break (failures, nan_only);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{} dashboard queries evaluated; without a finite value: {}",
        queries.len(),
        if nan_only.is_empty() {
            "none".to_owned()
        } else {
            format!("\n  {}", nan_only.join("\n  "))
        }
    );
    assert!(
        failures.is_empty(),
        "dashboard queries fail or return no data ({} queries):\n{}\nwithout a finite value:\n{}",
        queries.len(),
        failures.join("\n"),
        nan_only.join("\n")
    );

    // The counters moved as the run says they should.
    let text = scrape(&metrics_url).await;
    let moved = [
        ("parley_rtp_received_packets_total", &["kind=\"audio\""][..]),
        ("parley_rtp_received_packets_total", &["kind=\"video\""]),
        ("parley_rtp_forwarded_packets_total", &["kind=\"audio\""]),
        ("parley_rtp_forwarded_packets_total", &["kind=\"video\""]),
        ("parley_rtp_received_bytes_total", &[]),
        ("parley_rtp_forwarded_bytes_total", &[]),
        ("parley_udp_received_datagrams_total", &[]),
        ("parley_udp_sent_datagrams_total", &[]),
        (
            "parley_sessions_ended_total",
            &["kind=\"whep\"", "reason=\"deleted\""],
        ),
        ("parley_plis_sent_total", &[]),
        ("parley_nacks_sent_total", &[]),
        ("parley_forwarding_latency_seconds_count", &[]),
        ("parley_session_setup_seconds_count", &[]),
        ("parley_jitter_seconds_count", &[]),
        ("parley_http_requests_total", &["status=\"404\""]),
        ("parley_http_requests_total", &["status=\"415\""]),
        ("parley_http_requests_total", &["status=\"503\""]),
    ];
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("parley_") && !l.contains("_bucket"))
        .collect();
    eprintln!(
        "/metrics after the run (buckets left out):\n  {}",
        samples.join("\n  ")
    );
    for (name, labels) in moved {
        assert!(
            metric(&text, name, labels) > 0.0,
            "{name}{labels:?} never moved:\n{text}"
        );
    }
    assert_eq!(metric(&text, "parley_rooms", &[]), 1.0, "one room");
    assert_eq!(
        metric(&text, "parley_sessions", &["kind=\"whep\""]),
        2.0,
        "bob and dan"
    );

    bob.close().await;
    dan.close().await;
    ann.leave().await;
    drop(prometheus);
    server.shutdown().await;
    eprintln!("run took {:?}", started.elapsed());
}
