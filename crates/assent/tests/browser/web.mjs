// Drives headless Chromium through Assent's web pages, for the end-to-end tests in
// crates/assent/tests/it/web.rs, which start the server, prepare the data and check the result
// through the API.
//
// Usage: node web.mjs <scenario> with the scenario's parameters as JSON in ASSENT_SCENARIO,
// and optionally ASSENT_SCREENSHOTS=<folder> to save a screenshot of each page. Prints one JSON
// line with what the page showed; exits non-zero (with the reason) when the page did not
// behave.

import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const scenario = process.argv[2];
const params = JSON.parse(process.env.ASSENT_SCENARIO ?? "{}");
const shots = process.env.ASSENT_SCREENSHOTS;
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT = 15_000;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(page, name) {
  if (!shots || params.no_shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${params.shot_prefix ?? ""}${name}.png`), fullPage: true });
}

/** The page's WCAG 2.1 A and AA violations found by axe-core, as `rule: element` lines. */
async function audit(page) {
  // Served as if it were one of the server's own scripts, so that the page's content security
  // policy stays in force.
  const url = new URL("/assets/axe.min.js", page.url()).href;
  await page.route(url, (route) => route.fulfill({ body: axeSource, contentType: "text/javascript" }));
  await page.addScriptTag({ url });
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] }));
  return result.violations.flatMap((v) => v.nodes.map((n) => `${v.id}: ${n.target.join(" ")}`));
}

/** A page that records script errors and content-security-policy refusals. */
async function open(browser, options) {
  const page = await browser.newPage(options);
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) page.errors.push(m.text());
  });
  return page;
}

const scenarios = {
  /** Opens a preference-center link, switches a purpose with the keyboard, picks a value and
   * saves. */
  async "preferences-save"(browser) {
    const page = await open(browser, {
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 1,
      locale: params.locale ?? "en-US",
      extraHTTPHeaders: params.accept_language ? { "accept-language": params.accept_language } : {},
    });
    const errors = page.errors;
    const response = await page.goto(`${params.base}/preferences?token=${encodeURIComponent(params.token)}`);
    check(response.status() === 200, `the page answered ${response.status()}`);
    await page.locator("#choices").waitFor({ state: "visible", timeout: TIMEOUT });
    const toggle = page.locator(`#switch-${params.purpose}`);
    const label = await page.locator(`#purpose-${params.purpose}`).textContent();
    const before = await toggle.isChecked();
    await shot(page, "preferences");
    const violations = await audit(page);
    // Keyboard only: focus the switch and press Space, as a keyboard user would.
    await toggle.focus();
    await page.keyboard.press("Space");
    const after = await toggle.isChecked();
    check(after !== before, "Space did not switch the purpose");
    if (params.value) {
      await page.locator(`#value-${params.value}`).check();
    }
    check(await page.locator("#unsaved").isVisible(), "the page does not say the change is unsaved");
    await page.locator("#save").click();
    const notice = page.locator("#notice.ok");
    await notice.waitFor({ state: "visible", timeout: TIMEOUT });
    await shot(page, "preferences-saved");
    check(errors.length === 0, `script errors: ${errors.join("; ")}`);
    return {
      label: label.trim(),
      before,
      after,
      notice: (await notice.textContent()).trim(),
      lang: await page.locator("html").getAttribute("lang"),
      save: (await page.locator("#save").textContent()).trim(),
      violations: [...violations, ...(await audit(page))],
    };
  },

  /** Opens a link whose token is expired, altered or missing. */
  async "preferences-error"(browser) {
    const page = await open(browser, { viewport: { width: 390, height: 700 } });
    const response = await page.goto(`${params.base}/preferences?token=${encodeURIComponent(params.token)}`);
    const title = (await page.locator("h1").textContent()).trim();
    const text = (await page.locator("main p").textContent()).trim();
    await shot(page, params.screenshot ?? "preferences-expired");
    return { status: response.status(), title, text, violations: await audit(page) };
  },

  /** Signs in to the console, finds a user, reads its timeline and status, then the dashboard
   * and an integration's deliveries (retrying a parked one). */
  async "console"(browser) {
    const page = await open(browser, { viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
    const errors = page.errors;
    await page.goto(`${params.base}/console`);
    await shot(page, "console-signin");
    const violations = await audit(page);
    await page.locator("#key").fill(params.key);
    await page.locator("#secret").fill(params.secret);
    await page.locator("#signin-button").click();
    await page.locator("#app").waitFor({ state: "visible", timeout: TIMEOUT });
    const out = {};

    await page.locator("#user-search").fill(params.organization_user_id);
    await page.locator("#user-search").press("Enter");
    const link = page.getByRole("button", { name: params.organization_user_id, exact: true });
    await link.waitFor({ timeout: TIMEOUT });
    await link.click();
    await page.locator("#timeline").waitFor({ timeout: TIMEOUT });
    out.title = (await page.locator("#user-title").textContent()).trim();
    out.timeline = await page.locator("#timeline > li").evaluateAll((items) => items.map((li) => li.dataset.event));
    out.regulations = await page.locator("#statuses section").evaluateAll((s) => s.map((x) => x.dataset.regulation));
    out.status_now = await page.locator(`#statuses section[data-regulation="gdpr"] tr[data-purpose="${params.purpose}"] .badge`).first().textContent();
    await shot(page, "console-user");
    violations.push(...(await audit(page)));
    if (params.at) {
      await page.locator("#status-at").fill(params.at);
      await page.locator("#status-at").press("Enter");
      await page.locator("#status-caption", { hasText: "As it stood" }).waitFor({ timeout: TIMEOUT });
      await page.waitForFunction(() => document.querySelector("#statuses section") !== null);
      out.status_at = await page.locator(`#statuses section[data-regulation="gdpr"] tr[data-purpose="${params.purpose}"] .badge`).first().textContent();
    }

    await page.locator('nav button[data-view="dashboard"]').click();
    await page.locator("#dashboard svg").first().waitFor({ timeout: TIMEOUT });
    out.volume_title = (await page.locator("#volume-title").textContent()).trim();
    out.charts = await page.locator("#dashboard svg").count();
    out.lines = await page.locator("#dashboard svg polyline").count();
    await shot(page, "console-dashboard");
    violations.push(...(await audit(page)));

    if (params.integration) {
      await page.locator('nav button[data-view="integrations"]').click();
      const integration = page.getByRole("button", { name: params.integration_name, exact: true });
      await integration.waitFor({ timeout: TIMEOUT });
      await integration.click();
      await page.locator("#deliveries table").waitFor({ timeout: TIMEOUT });
      out.deliveries = await page.locator("#deliveries tr[data-delivery]").count();
      await shot(page, "console-deliveries");
      const retry = page.locator(`button[data-retry="${params.parked}"]`);
      await retry.click();
      await page.locator(".notice.ok").waitFor({ timeout: TIMEOUT });
      out.retried = (await page.locator(".notice.ok").textContent()).trim();
    }
    check(errors.length === 0, `script errors: ${errors.join("; ")}`);
    out.violations = violations;
    return out;
  },

  /** Tries to sign in to the console with a wrong secret. */
  async "console-wrong-secret"(browser) {
    const page = await open(browser, { viewport: { width: 1280, height: 700 } });
    await page.goto(`${params.base}/console`);
    await page.locator("#key").fill(params.key);
    await page.locator("#secret").fill(params.secret);
    await page.locator("#signin-button").click();
    const error = page.locator("#signin-error");
    await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0, null, { timeout: TIMEOUT });
    return {
      error: (await error.textContent()).trim(),
      signed_in: await page.locator("#app").isVisible(),
    };
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario '${scenario}'; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"], headless: true });
try {
  const result = await run(browser);
  console.log(JSON.stringify(result));
} catch (err) {
  console.error(`${scenario}: ${err.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
