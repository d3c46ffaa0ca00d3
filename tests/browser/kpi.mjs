// Opens the continuity page in headless Chromium, at phone width and at
// desktop width: signs in with the token, waits for the eight figures and
// the charts, reports an incident through the page's form, and takes a
// screenshot at each width. Prints one JSON line with what it saw; exits
// non-zero on any failure.
//
// usage: node kpi.mjs <base-url> <token> <phone.png> <desktop.png>
import { chromium } from "playwright-core";

const [base, token, phoneShot, desktopShot] = process.argv.slice(2);
if (!base || !token || !phoneShot || !desktopShot) {
  console.error("usage: node kpi.mjs <base-url> <token> <phone.png> <desktop.png>");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

// What one width shows: the figures, the bars drawn, whether anything
// sticks out sideways (the page wider than the screen, or an element past
// its right edge).
async function look(page, width) {
  await page.waitForFunction(() => document.querySelectorAll("#figs .fig").length === 8, null, { timeout: 15000 });
  return await page.evaluate((w) => ({
    width: document.documentElement.scrollWidth,
    viewport: w,
    figures: [...document.querySelectorAll("#figs .fig")].map((f) => [f.querySelector("span").textContent, f.querySelector("b").textContent]),
    daily_bars: document.querySelectorAll("#daily rect").length,
    time_bars: document.querySelectorAll("#times rect").length,
    rows: document.querySelectorAll("#rows tr").length,
    cut_off: [...document.querySelectorAll("main section, .fig, button")]
      .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > w + 0.5 || r.left < -0.5); })
      .map((e) => e.id || e.className || e.tagName),
  }), width);
}

const seen = {};
try {
  const errors = [];
  // Phone: sign in, look, report through the form.
  const phone = await browser.newContext({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  let page = await phone.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  const res = await page.goto(base + "/kpi", { waitUntil: "load" });
  seen.status = res.status();
  await page.waitForSelector("#signin:not([hidden])", { timeout: 10000 });
  await page.fill("#token", token);
  await page.tap("#login");
  await page.waitForSelector("#view:not([hidden])", { timeout: 10000 });
  seen.phone = await look(page, 375);
  await page.fill("#rservice", "loyalty");
  await page.fill("#rsummary", "points not credited since noon");
  await page.tap("#report");
  await page.waitForFunction(() => /Reported as|already had it/.test(document.getElementById("rresult").textContent), null, { timeout: 10000 });
  seen.report = await page.textContent("#rresult");
  await page.waitForFunction(() => document.querySelectorAll("#rows tr").length >= 2, null, { timeout: 10000 });
  seen.after_report = await look(page, 375);
  await page.screenshot({ path: phoneShot, fullPage: true });
  // Desktop: a fresh sign-in, the same page wide.
  const desk = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await desk.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/kpi", { waitUntil: "load" });
  await page.waitForSelector("#signin:not([hidden])", { timeout: 10000 });
  await page.fill("#token", token);
  await page.click("#login");
  await page.waitForSelector("#view:not([hidden])", { timeout: 10000 });
  seen.desktop = await look(page, 1280);
  await page.screenshot({ path: desktopShot, fullPage: true });
  seen.errors = errors;
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(String(e && e.stack || e));
  console.log(JSON.stringify(seen));
  process.exitCode = 1;
} finally {
  await browser.close();
}
