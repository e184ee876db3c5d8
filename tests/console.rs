//! Issue 16, the console: the real binary's `GET /` driven in Debian's
//! Chromium (headless, through playwright-core): each view loads with the
//! data the API holds, alarm points open their events, sessions their
//! replays, and the page logs no error.

use crate::service_e2e::{Server, get_json, looping_session, post_text};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SEGMENT: &str = "taubench-airline/gpt-4o/airline";
const CHART: &str = "ewma:steps";

fn chromium() -> String {
    let path = std::env::var("AGENTDRIFT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "the console test needs Chromium at {path}: `apt-get install chromium` (Debian; .ci/run installs it), \
         or set AGENTDRIFT_CHROMIUM"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_segments_charts_events_and_replays_in_a_real_browser() {
    let chromium = chromium();
    let modules = crate::support::node_modules("console", &crate::support::repo().join("tests/console/package.json"));
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    let server = Server::start(&baseline, &dir.path().join("data"), &[]);
    let url = server.url.clone();
    // In-control recorded sessions, then sessions that loop on one tool call.
    let recorded =
        std::fs::read_to_string(crate::support::repo().join("fixtures/sessions/taubench-gpt-4o-airline.jsonl"))
            .unwrap();
    let mut batches = vec![recorded];
    for i in 0..40 {
        batches.push(looping_session(&format!("loop-{i}")).join("\n"));
    }
    for b in batches {
        let r = post_text(&c, &url, b).await;
        assert_eq!(r.status(), 200);
    }
    // What the API holds, to check the views against.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (series, markov) = loop {
        let series = get_json(&c, &format!("{url}/v1/charts?segment={SEGMENT}&chart={CHART}")).await;
        let markov = get_json(&c, &format!("{url}/v1/events?detector=markov&limit=1")).await;
        let alarms = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p.get("events").is_some())
            .count();
        if alarms >= 5 && !markov["events"].as_array().unwrap().is_empty() {
            break (series, markov["events"][0].clone());
        }
        assert!(
            Instant::now() < deadline,
            "the drifted sessions raised no chart alarm and no Markov event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let points = series["points"].as_array().unwrap();
    let alarm_points: Vec<&Value> = points.iter().filter(|p| p.get("events").is_some()).collect();
    // Alarm points sit at the value that crossed, beyond the limit.
    for p in &alarm_points {
        let (stat, limit) = (p["statistic"].as_f64().unwrap(), p["limit"].as_f64().unwrap());
        assert!(stat.abs() > limit, "an alarm point is beyond its limit: {p}");
    }
    let segments = get_json(&c, &format!("{url}/v1/segments")).await["segments"]
        .as_array()
        .unwrap()
        .len();
    let charts = get_json(&c, &format!("{url}/v1/segments/{SEGMENT}")).await["charts"]
        .as_array()
        .unwrap()
        .len();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let chart_hash = format!("#/chart/{}/{}", SEGMENT.replace('/', "%2F"), CHART.replace(':', "%3A"));
    let out = Command::new("node")
        .arg(crate::support::repo().join("tests/console/browser.cjs"))
        .arg(&url)
        .arg(&chart_hash)
        .arg(markov["id"].as_str().unwrap())
        .arg(&shots)
        .env("NODE_PATH", &modules)
        .env("AGENTDRIFT_CHROMIUM", &chromium)
        .output()
        .expect("run node (the console test needs Node.js)");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| {
        panic!(
            "the browser run printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(seen["errors"], serde_json::json!([]), "the page logged errors");
    assert_eq!(seen["overview_rows"], segments, "one overview row per segment");
    assert!(
        seen["overview_recent"].as_u64().unwrap() > 0,
        "the latest events are listed"
    );
    assert!(
        seen["first_tab"]
            .as_str()
            .is_some_and(|t| t.starts_with("taubench-airline/gpt-4o/")),
        "Tab from the page start reaches the first segment's link: {}",
        seen["first_tab"]
    );
    assert_eq!(seen["chart_limit_lines"], 2, "a two-sided EWMA shows ±limit");
    assert_eq!(seen["chart_centre_lines"], 1);
    assert_eq!(
        seen["chart_alarms"],
        alarm_points.len(),
        "one marker per alarm point the API holds"
    );
    assert_eq!(
        seen["chart_options"], charts,
        "every chart of the segment can be picked"
    );
    assert_eq!(seen["zoom_redraws"], true);
    // The clicked alarm is the newest alarm point's event, and the event view shows it.
    let clicked = seen["clicked_event"].as_str().unwrap();
    assert_eq!(
        clicked,
        alarm_points.last().unwrap()["events"][0],
        "the last marker is the newest alarm"
    );
    assert_eq!(seen["event_hash"], format!("#/event/{clicked}"));
    let event = get_json(&c, &format!("{url}/v1/events/{clicked}")).await;
    assert_eq!(event["detector"], CHART);
    let shown: f64 = seen["event_statistic"].as_str().unwrap().parse().unwrap();
    assert!(
        (shown - event["statistic"].as_f64().unwrap()).abs() < 1e-3,
        "{shown} vs {event}"
    );
    // The session opened from the event is its replay, every step of it.
    let sid = seen["clicked_session"].as_str().unwrap();
    assert_eq!(sid, event["session_id"], "the event's own session comes first");
    assert_eq!(seen["session_hash"], format!("#/session/{sid}"));
    let replay = get_json(&c, &format!("{url}/v1/sessions/{sid}/replay")).await;
    assert_eq!(seen["session_steps"], replay["steps"].as_array().unwrap().len());
    let report = get_json(&c, &format!("{url}/v1/sessions/{sid}")).await;
    assert_eq!(seen["session_features"], report["features"].as_array().unwrap().len());
    // The Markov event's heat map has a cell per moved transition.
    let transitions = markov["moved"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["what"].as_str().unwrap().contains(" → "))
        .count();
    assert!(transitions > 0);
    assert_eq!(seen["heatmap_cells"], transitions);
    // README shows these; AGENTDRIFT_WRITE_SCREENSHOTS=1 refreshes the committed copies.
    if std::env::var_os("AGENTDRIFT_WRITE_SCREENSHOTS").is_some() {
        let docs = crate::support::repo().join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        for f in [
            "overview.png",
            "chart.png",
            "event.png",
            "session.png",
            "markov-event.png",
        ] {
            std::fs::copy(shots.join(f), docs.join(f)).unwrap();
        }
    }
    server.terminate();
}
