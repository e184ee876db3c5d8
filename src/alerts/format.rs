//! The messages a sink sends, one per group of events: the webhook's JSON
//! (and its signature), Slack's blocks, Alertmanager's alerts. Pure: the
//! time is an argument.

use super::severity::{Severity, severity};
use crate::detect::event::DriftEvent;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Where links in a message point.
#[derive(Clone, Debug)]
pub struct Links {
    /// Base URL of the service, without a trailing `/`.
    pub base: String,
}

impl Links {
    /// The event in the console (evidence, what moved, its chart and sessions).
    pub fn event(&self, e: &DriftEvent) -> String {
        format!("{}/#/event/{}", self.base, pct(&e.id))
    }

    /// A session's replay in the console.
    pub fn session(&self, id: &str) -> String {
        format!("{}/#/session/{}", self.base, pct(id))
    }

    /// The event as JSON (`GET /v1/events/{id}`).
    pub fn api_event(&self, e: &DriftEvent) -> String {
        format!("{}/v1/events/{}", self.base, pct(&e.id))
    }
}

/// Percent-encodes a path segment.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The webhook body: every event whole, with its severity and links.
pub fn webhook(sink: &str, events: &[DriftEvent], links: &Links, now_ms: i64) -> Vec<u8> {
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "severity": severity(e).as_str(),
                "url": links.event(e),
                "api_url": links.api_event(e),
                "session_url": links.session(&e.session_id),
                "event": e,
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "source": "agentdrift",
        "sink": sink,
        "sent_ms": now_ms,
        "events": items,
    }))
    .expect("JSON values always encode")
}

/// `sha256=<hex>` of HMAC-SHA256 over the body: the `X-Agentdrift-Signature` header.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A number as people read it in a message.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{x:.2e}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One line of evidence: the statistic against its limit, the p-value, the direction.
pub fn evidence(e: &DriftEvent) -> String {
    let mut s = format!("statistic {} vs limit {}", num(e.statistic), num(e.limit));
    if let Some(p) = e.p_value {
        s.push_str(&format!(", p = {}", num(p)));
    }
    if let Some(d) = e.direction {
        s.push_str(match d {
            crate::spc::Direction::Up => ", up",
            crate::spc::Direction::Down => ", down",
        });
    }
    s
}

/// What moved, largest first, at most three.
fn moved(e: &DriftEvent) -> String {
    e.moved
        .iter()
        .take(3)
        .map(|m| format!("{}: {} → {}", m.what, num(m.baseline), num(m.observed)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Slack escapes: `&`, `<`, `>`.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Slack incoming-webhook message: a header, then per event its
/// severity, segment, detector, summary, evidence, what moved and links.
pub fn slack(events: &[DriftEvent], links: &Links) -> Vec<u8> {
    let worst = events.iter().map(severity).max().unwrap_or(Severity::Info);
    let title = if events.len() == 1 {
        format!("agentdrift: drift in {}", events[0].segment)
    } else {
        format!("agentdrift: {} drift events", events.len())
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": format!("[{}] {title}", worst.as_str())},
    })];
    for e in events {
        let mut text = format!(
            "*[{}]* `{}` · `{}`\n{}\n{}",
            severity(e).as_str(),
            slack_escape(&e.segment.to_string()),
            slack_escape(&e.detector),
            slack_escape(&e.message),
            evidence(e),
        );
        let m = moved(e);
        if !m.is_empty() {
            text.push_str(&format!("\nmoved: {}", slack_escape(&m)));
        }
        text.push_str(&format!(
            "\n<{}|event {}> · <{}|session {}>",
            links.event(e),
            e.id,
            links.session(&e.session_id),
            slack_escape(&e.session_id)
        ));
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    let fallback = events
        .iter()
        .map(|e| format!("[{}] {} {}: {}", severity(e).as_str(), e.segment, e.detector, e.message))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::to_vec(&json!({"text": fallback, "blocks": blocks})).expect("JSON values always encode")
}

/// Alertmanager alerts: one per event, labelled `alertname`, `segment`,
/// `detector`, `family`, `severity` (so repeated events of one chart renew one
/// alert), with the evidence in annotations, `generatorURL` at the event,
/// `startsAt` at the event (never later than now) and `endsAt` `resolve_secs`
/// after now, so an alert resolves when its chart stops firing.
pub fn alertmanager(events: &[DriftEvent], links: &Links, now_ms: i64, resolve_secs: u64) -> Vec<u8> {
    let ends = now_ms.saturating_add((resolve_secs as i64).saturating_mul(1000));
    let alerts: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut annotations = json!({
                "summary": e.message,
                "description": format!("{} in {}: {}", e.detector, e.segment, evidence(e)),
                "event_id": e.id,
                "session_id": e.session_id,
                "session_url": links.session(&e.session_id),
                "statistic": num(e.statistic),
                "limit": num(e.limit),
            });
            if let Some(p) = e.p_value {
                annotations["p_value"] = json!(num(p));
            }
            let m = moved(e);
            if !m.is_empty() {
                annotations["moved"] = json!(m);
            }
            if !e.exemplars.is_empty() {
                annotations["exemplars"] = json!(e.exemplars.iter().take(5).cloned().collect::<Vec<_>>().join(" "));
            }
            json!({
                "labels": {
                    "alertname": "AgentDrift",
                    "segment": e.segment.to_string(),
                    "detector": e.detector,
                    "family": e.kind,
                    "severity": severity(e).as_str(),
                },
                "annotations": annotations,
                "startsAt": rfc3339(e.ts.min(now_ms)),
                "endsAt": rfc3339(ends),
                "generatorURL": links.event(e),
            })
        })
        .collect();
    serde_json::to_vec(&alerts).expect("JSON values always encode")
}

/// Unix milliseconds as RFC 3339 UTC (`1970-01-01T00:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::event::Moved;
    use crate::model::SegmentKey;

    fn ev(id: &str) -> DriftEvent {
        DriftEvent {
            id: id.into(),
            detector: "ewma:output_tokens".into(),
            kind: "ewma".into(),
            segment: SegmentKey::new("shop/gpt-4o", "refund"),
            fallback_from: None,
            session_id: "sess 1/a".into(),
            seq: None,
            ts: 1_800_000_000_000,
            statistic: 3.5,
            limit: 1.4,
            p_value: None,
            direction: Some(crate::spc::Direction::Up),
            moved: vec![Moved {
                what: "output_tokens".into(),
                baseline: 120.0,
                observed: 410.0,
                score: 4.0,
            }],
            exemplars: vec!["sess 1/a".into(), "s2".into()],
            observations: vec![],
            message: "output tokens <up>".into(),
            grounding: None,
        }
    }

    fn links() -> Links {
        Links {
            base: "https://drift.example".into(),
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        // Independent values: `date -u -d @0`, `@951782400` (2000-02-29, a leap day
        // of a century divisible by 400), `@1800000000`, and one before the epoch.
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
        assert_eq!(rfc3339(4_107_542_399_000), "2100-02-28T23:59:59.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_webhook_carries_each_event_whole_with_its_severity_and_links() {
        let body: Value = serde_json::from_slice(&webhook("hook", &[ev("ev_1"), ev("ev_2")], &links(), 5)).unwrap();
        assert_eq!(body["sink"], "hook");
        assert_eq!(body["events"].as_array().unwrap().len(), 2);
        let first = &body["events"][0];
        assert_eq!(first["event"], serde_json::to_value(ev("ev_1")).unwrap());
        assert_eq!(first["severity"], "critical", "3.5 / 1.4 = 2.5 ≥ 2");
        assert_eq!(first["url"], "https://drift.example/#/event/ev_1");
        assert_eq!(first["api_url"], "https://drift.example/v1/events/ev_1");
        assert_eq!(first["session_url"], "https://drift.example/#/session/sess%201%2Fa");
    }

    #[test]
    fn slack_escapes_text_and_links_every_event() {
        let body: Value = serde_json::from_slice(&slack(&[ev("ev_1")], &links())).unwrap();
        let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.contains("output tokens &lt;up&gt;"), "{section}");
        assert!(section.contains("statistic 3.5 vs limit 1.4, up"), "{section}");
        assert!(section.contains("moved: output_tokens: 120 → 410"), "{section}");
        assert!(
            section.contains("<https://drift.example/#/event/ev_1|event ev_1>"),
            "{section}"
        );
        assert_eq!(
            body["blocks"][0]["text"]["text"],
            "[critical] agentdrift: drift in shop/gpt-4o/refund"
        );
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("[critical] shop/gpt-4o/refund")
        );
    }

    #[test]
    fn alertmanager_alerts_have_the_labels_and_resolve_after_delivery() {
        let now = 1_900_000_000_000;
        let body: Value = serde_json::from_slice(&alertmanager(&[ev("ev_1")], &links(), now, 600)).unwrap();
        let a = &body[0];
        assert_eq!(a["labels"]["alertname"], "AgentDrift");
        assert_eq!(a["labels"]["segment"], "shop/gpt-4o/refund");
        assert_eq!(a["labels"]["detector"], "ewma:output_tokens");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["annotations"]["event_id"], "ev_1");
        assert_eq!(a["startsAt"], rfc3339(1_800_000_000_000));
        assert_eq!(a["endsAt"], rfc3339(now + 600_000));
        assert_eq!(a["generatorURL"], "https://drift.example/#/event/ev_1");
        // An event stamped in the future starts now.
        let mut future = ev("ev_2");
        future.ts = now + 10;
        let body: Value = serde_json::from_slice(&alertmanager(&[future], &links(), now, 600)).unwrap();
        assert_eq!(body[0]["startsAt"], rfc3339(now));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.0012345), "0.001");
        assert_eq!(num(2.5e-9), "2.50e-9");
        assert_eq!(num(-1.25), "-1.25");
    }
}
