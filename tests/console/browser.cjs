// Drives the console in a real Chromium (Debian's, headless) and prints what
// it saw as one JSON line; tests/console.rs asserts on it. Usage:
//   node browser.cjs <base url> <chart hash> <markov event id or ""> <screenshot dir>
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, chartHash, markovEvent, shots] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.AGENTDRIFT_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });
  const errors = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
  const out = { errors };

  // Overview: one row per segment, the latest events, live updates connected.
  await page.goto(`${url}/#/`);
  await page.waitForSelector("#segments tbody tr");
  await page.waitForSelector("#live.on", { timeout: 10000 });
  out.overview_rows = await page.locator("#segments tbody tr").count();
  out.overview_recent = await page.locator("#recent-events li").count();
  // Keyboard: Tab from the page start reaches the first segment link.
  await page.keyboard.press("Tab");
  out.first_tab = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  await page.screenshot({ path: `${shots}/overview.png` });

  // Control chart: limit line, centre line, alarm points; zoom changes what is drawn.
  await page.goto(`${url}/${chartHash}`);
  await page.waitForSelector("svg.chart path.stat");
  out.chart_limit_lines = await page.locator("svg.chart path.limit").count();
  out.chart_centre_lines = await page.locator("svg.chart line.centre").count();
  out.chart_alarms = await page.locator("svg.chart circle.alarm").count();
  out.chart_options = await page.locator("#chart-pick option").count();
  await page.screenshot({ path: `${shots}/chart.png` });
  const statBefore = await page.locator("svg.chart path.stat").getAttribute("d");
  await page.click("button[aria-label='Zoom in']");
  const statAfter = await page.locator("svg.chart path.stat").getAttribute("d");
  out.zoom_redraws = statBefore !== statAfter;
  await page.click("button:text-is(\"All\")");

  // Clicking an alarm point opens its event.
  const alarm = page.locator("svg.chart circle.alarm").last();
  out.clicked_event = await alarm.getAttribute("data-event");
  await alarm.click();
  await page.waitForSelector("#event-statistic");
  out.event_hash = await page.evaluate(() => location.hash);
  out.event_statistic = await page.locator("#event-statistic").textContent();
  await page.screenshot({ path: `${shots}/event.png` });

  // A session of the event opens its replay.
  const link = page.locator("#exemplars a").first();
  out.clicked_session = await link.textContent();
  await link.click();
  await page.waitForSelector("#steps li");
  out.session_hash = await page.evaluate(() => location.hash);
  out.session_steps = await page.locator("#steps li").count();
  out.session_features = await page.locator("#features tbody tr").count();
  await page.locator("#steps li").nth(3).scrollIntoViewIfNeeded();
  await page.screenshot({ path: `${shots}/session.png` });

  // A Markov event shows its transition heat map.
  if (markovEvent) {
    await page.goto(`${url}/#/event/${encodeURIComponent(markovEvent)}`);
    await page.waitForSelector("#heatmap");
    out.heatmap_cells = await page.locator("#heatmap td[title]").count();
    await page.screenshot({ path: `${shots}/markov-event.png` });
  }
  await browser.close();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
