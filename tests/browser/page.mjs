// Opens a self-contained page (a file) in headless Chromium at phone width
// and at desktop width, and says whether anything is cut off: the page
// wider than the screen, or a section, table cell or chart past its right
// edge. Takes a screenshot at each width. Prints one JSON line; exits
// non-zero on any failure.
//
// usage: node page.mjs <page.html> <phone.png> <desktop.png>
import { chromium } from "playwright-core";
import { pathToFileURL } from "node:url";

const [file, phoneShot, desktopShot] = process.argv.slice(2);
if (!file || !phoneShot || !desktopShot) {
  console.error("usage: node page.mjs <page.html> <phone.png> <desktop.png>");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
});
const seen = { errors: [] };
try {
  for (const [name, width, shot, mobile] of [["phone", 375, phoneShot, true], ["desktop", 1280, desktopShot, false]]) {
    const ctx = await browser.newContext({ viewport: { width, height: 900 }, isMobile: mobile, hasTouch: mobile });
    const page = await ctx.newPage();
    page.on("pageerror", (e) => seen.errors.push(String(e)));
    await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
    seen[name] = await page.evaluate((w) => ({
      width: document.documentElement.scrollWidth,
      title: document.title,
      verdict: document.querySelector(".big")?.textContent,
      charts: document.querySelectorAll("svg").length,
      bars: document.querySelectorAll("svg rect").length,
      rows: document.querySelectorAll("tbody tr").length,
      cut_off: [...document.querySelectorAll("section, td, svg")]
        .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > w + 0.5 || r.left < -0.5); })
        .map((e) => e.tagName + ":" + e.textContent.slice(0, 40)),
    }), width);
    await page.screenshot({ path: shot, fullPage: true });
    await ctx.close();
  }
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(String(e && e.stack || e));
  console.log(JSON.stringify(seen));
  process.exitCode = 1;
} finally {
  await browser.close();
}
