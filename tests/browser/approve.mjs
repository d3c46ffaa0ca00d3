// Opens an approval link in headless Chromium at phone size, signs in with
// the approver's token, checks the evidence is on screen, taps Approve and
// waits until the page shows the incident recovered. Prints one JSON line
// with what it saw; exits non-zero on any failure.
//
// usage: node approve.mjs <link> <token> <screenshot.png>
import { chromium } from "playwright-core";

const [link, token, shot] = process.argv.slice(2);
if (!link || !token || !shot) {
  console.error("usage: node approve.mjs <link> <token> <screenshot.png>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const seen = {};
let page;
try {
  const ctx = await browser.newContext({
    viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const res = await page.goto(link, { waitUntil: "load" });
  seen.status = res.status();
  seen.bytes = (await res.body()).length;
  await page.waitForSelector("#signin:not([hidden])", { timeout: 10000 });
  await page.fill("#token", token);
  await page.tap("#login");
  await page.waitForSelector("#view:not([hidden])", { timeout: 10000 });
  await page.waitForFunction(() => document.querySelectorAll("#evidence li").length > 0
    && document.querySelectorAll("#plan li").length > 0, null, { timeout: 15000 });
  await page.waitForSelector("#approve:not([disabled])", { timeout: 15000 });
  seen.who = await page.textContent("#who");
  seen.cause = await page.textContent("#cause");
  seen.evidence = await page.$$eval("#evidence li", (l) => l.map((x) => x.textContent));
  seen.plan = await page.$$eval("#plan li", (l) => l.map((x) => x.textContent));
  seen.blast = await page.textContent("#blast");
  seen.chart_points = await page.$eval("#chart polyline", (p) => p.getAttribute("points").split(" ").length).catch(() => 0);
  seen.width = await page.evaluate(() => document.documentElement.scrollWidth);
  const box = await page.locator("#approve").boundingBox();
  seen.approve_button = { width: Math.round(box.width), height: Math.round(box.height) };
  await page.fill("#comment", "bill pay can wait; checkout cannot");
  await page.tap("#approve");
  await page.waitForFunction(() => /approved/.test(document.getElementById("result").textContent), null, { timeout: 15000 });
  seen.result = await page.textContent("#result");
  await page.waitForFunction(() => document.getElementById("istate").textContent === "recovered", null, { timeout: 90000 });
  seen.incident_state = await page.textContent("#istate");
  seen.actions = await page.$$eval("#actions li", (l) => l.map((x) => x.textContent));
  seen.approval_state = await page.textContent("#astate");
  seen.errors = errors;
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(seen));
} catch (e) {
  if (page) await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error("browser test failed:", e.message, JSON.stringify(seen));
  process.exitCode = 1;
} finally {
  await browser.close();
}
