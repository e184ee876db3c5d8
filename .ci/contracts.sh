#!/usr/bin/env bash
# Contracts standard tools must accept: `promtool check metrics` on /metrics in both
# formats, with samples in every family the traffic below touches. (The OpenAPI document
# is validated by the test suite itself: tests/service_e2e.rs runs openapi-spec-validator.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${AGENTDRIFT_BIN:?set AGENTDRIFT_BIN to the agentdrift binary}"

if ! command -v promtool >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

work=$(mktemp -d)
"$BIN" serve --baseline baselines/tau-all.adb --data-dir "$work/data" --listen 127.0.0.1:0 \
  --otlp-grpc-listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/out" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "serve did not start:"; cat "$work/err"; exit 1; }

head -400 fixtures/sessions/taubench-gpt-4o-airline.jsonl |
  curl -fsS -XPOST -H 'content-type: application/x-ndjson' --data-binary @- "$url/v1/steps" >/dev/null
curl -fsS -XPOST -H 'content-type: application/json' --data-binary @fixtures/otel/genai_single.json \
  "$url/v1/traces" >/dev/null
# A first scrape, so that both answers below count a /metrics request.
curl -fsS "$url/metrics" -o /dev/null
curl -fsS -H 'Accept: application/openmetrics-text; version=1.0.0' "$url/metrics" -o "$work/metrics.om"
curl -fsS "$url/metrics" -o "$work/metrics.txt"
promtool check metrics <"$work/metrics.txt"
# promtool reads the 0.0.4 format; the OpenMetrics answer must hold the same samples.
diff <(grep -v '^#' "$work/metrics.txt" | cut -d' ' -f1 | sort) \
     <(grep -v '^#' "$work/metrics.om" | cut -d' ' -f1 | sort)
echo "contracts: promtool check metrics passed ($(grep -c '^# TYPE' "$work/metrics.txt") families)"
