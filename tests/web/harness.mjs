// Shared by the browser test scripts: Debian's Chromium through playwright-core, pages with a
// default timeout, named steps, and failure screenshots. Every wait is a condition with a timeout.
import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const env = process.env;
export const TIMEOUT = 15000;

export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      ...extraArgs,
    ],
  });
}

export function pageMaker(browser) {
  const pages = [];
  async function newPage(viewport = { width: 1280, height: 800 }) {
    const ctx = await browser.newContext({ viewport });
    const page = await ctx.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('pageerror', (e) => console.error('page error:', e.message));
    pages.push(page);
    return page;
  }
  return { pages, newPage };
}

export function check(cond, message) {
  if (!cond) throw new Error('check failed: ' + message);
}

export async function step(name, fn) {
  process.stdout.write(`- ${name} ... `);
  const t = Date.now();
  await fn();
  console.log(`ok (${Date.now() - t} ms)`);
}

export const tid = (id) => `[data-testid="${id}"]`;

/** Runs `body`, screenshots every page on failure, writes ART/<name>.txt, exits 0 or 1. */
export async function run(browser, pages, art, name, body) {
  let failed = false;
  try {
    await body();
  } catch (e) {
    failed = true;
    console.log('FAILED');
    console.error(e);
    for (const [i, p] of pages.entries()) {
      await p.screenshot({ path: join(art, `${name}-failure-${i}.png`) }).catch(() => {});
    }
  } finally {
    await browser.close();
  }
  writeFileSync(join(art, `${name}.txt`), failed ? 'failed\n' : 'ok\n');
  process.exit(failed ? 1 : 0);
}
