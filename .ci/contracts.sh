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
# An alert sink whose receiver is never up, so the alert families have samples too.
printf '[[alerts.sink]]\nname = "nowhere"\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n' >"$work/agentdrift.toml"
"$BIN" serve --baseline baselines/tau-all.adb --data-dir "$work/data" --listen 127.0.0.1:0 \
  --otlp-grpc-listen 127.0.0.1:0 --config "$work/agentdrift.toml" >"$work/out" 2>"$work/err" &
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

# The shipped alerting rules: valid, their unit tests pass, and every metric they name is one
# this build registers (a renamed metric would silently never fire). README's metric table is
# the registry (a unit test holds them equal), and lists families that have no sample yet.
promtool check rules deploy/prometheus/agentdrift-rules.yml
(cd deploy/prometheus && promtool test rules agentdrift-rules.test.yml)
for name in $(grep -o 'agentdrift_[a-z_]*' deploy/prometheus/agentdrift-rules.yml | sed 's/_bucket$//' | sort -u); do
  grep -qF "| \`${name}\` |" README.md ||
    { echo "deploy/prometheus/agentdrift-rules.yml uses ${name}, which the service does not register"; exit 1; }
done
echo "contracts: alerting rules checked and unit-tested"

# The shipped systemd unit (where systemd-analyze exists), with ExecStart at this build's binary.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$work/systemd"
  sed "s#/usr/local/bin/agentdrift#$(realpath "$BIN")#" deploy/systemd/agentdrift.service >"$work/systemd/agentdrift.service"
  systemd-analyze verify "$work/systemd/agentdrift.service"
  echo "contracts: systemd-analyze verify passed"
fi
