// node play.mjs URL SECONDS: opens URL (tests/web/player.html served by tidecast) in headless Chromium,
// waits SECONDS and prints {support, samples, errors, partLoads} as one JSON line.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, seconds] = [process.argv[2], Number(process.argv[3] || 10)];
const profile = mkdtempSync(join(tmpdir(), "tidecast-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
  ],
});
try {
  const page = browser.pages()[0] || (await browser.newPage());
  const console_ = [];
  page.on("console", (m) => console_.push(m.text()));
  await page.goto(url);
  await page.waitForTimeout(seconds * 1000);
  const out = await page.evaluate(() => ({
    support: window.support, samples: window.samples, errors: window.errors, partLoads: window.partLoads,
    resyncs: window.resyncs,
  }));
  out.console = console_.slice(-20);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
