// The web app attacked from the browser (set up by tests/web.rs): a page on another origin
// trying to sign in as someone, a rebound host name, and links that would move a signed-in
// person's token to another relay or swap their identity. Each went through before its fix.
import { createServer } from 'node:http';
import { env, launch, pageMaker, check, step, tid, run } from './harness.mjs';

const RELAY = env.RELAY_URL;
const APP = env.APP_URL;
const ART = env.ARTIFACTS;
const relayPort = new URL(RELAY).port;

/** A small HTTP server on 127.0.0.1 that answers `handler` and remembers every request. */
async function server(handler) {
  const seen = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      handler(req, res);
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}`, seen, close: () => srv.close() };
}

// The attacker's site: a page that tries the takeover the old relay allowed.
const evil = await server((req, res) => {
  res.setHeader('Content-Type', 'text/html');
  res.end(`<!doctype html><title>cute cats</title><script>
    window.attack = (async () => {
      const out = { codeRead: false, sessionRead: false, errors: [] };
      const post = (path, body) => fetch(${JSON.stringify(RELAY)} + path, {
        method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify(body) });
      try {
        const r = await post('/api/v1/pchat/auth/request-code', { email: 'ben@example.com' });
        const v = await r.json();
        out.codeRead = !!v.dev_code;
        const s = await post('/api/v1/pchat/auth/verify-code', { email: 'ben@example.com', code: v.dev_code });
        out.sessionRead = !!(await s.json()).session_token;
      } catch (e) { out.errors.push(String(e)); }
      // Even without reading the answer (no-cors), the relay must not act on the request.
      try {
        await fetch(${JSON.stringify(RELAY)} + '/api/v1/pchat/auth/request-code', {
          method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' },
          body: JSON.stringify({ email: 'ben@example.com' }) });
      } catch (e) { out.errors.push(String(e)); }
      return out;
    })();
  </script>`);
});

// Another relay (or a hostile one): records what reaches it, answers like a relay with no
// session, and allows CORS so the app's requests would get through if it made them.
const other = await server((req, res) => {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Allow-Headers', '*');
  res.setHeader('Content-Type', 'application/json');
  if (req.method === 'OPTIONS') {
    res.statusCode = 204;
    res.end();
    return;
  }
  res.statusCode = 401;
  res.end(JSON.stringify({ ok: false, error: { code: 'invalid_token', message: 'no' } }));
});
const tokenArrived = () =>
  other.seen.filter((r) => r.headers['x-pchat-session'] || (r.headers.authorization || '').includes('pct_'));

const browser = await launch([`--host-resolver-rules=MAP rebound.test 127.0.0.1`]);
const { pages, newPage } = pageMaker(browser);
const confirmShown = (page, text) => page.locator(tid('confirm'), { hasText: text }).waitFor();

await run(browser, pages, ART, 'attack', async () => {
  await step('a page on another origin cannot get a code or a session', async () => {
    const page = await newPage();
    await page.goto(evil.url);
    const out = await page.evaluate(() => window.attack);
    check(!out.codeRead, 'the page read a dev code');
    check(!out.sessionRead, 'the page got a session');
    check(out.errors.length > 0, 'the cross-origin read was blocked: ' + JSON.stringify(out));
  });

  await step('a name rebound to 127.0.0.1 gets nothing from a loopback relay', async () => {
    const page = await newPage();
    const resp = await page.goto(`http://rebound.test:${relayPort}/app/webchat/chat.html`);
    check(resp.status() === 403, 'status ' + resp.status());
    check((await resp.text()).includes('host_not_allowed'), 'the refusal names the host check');
    const code = await page.evaluate(async () => {
      const r = await fetch('/api/v1/pchat/auth/request-code', {
        method: 'POST', body: JSON.stringify({ email: 'ben@example.com' }) });
      return [r.status, await r.text()];
    });
    check(code[0] === 403 && !code[1].includes('dev_code'), 'same-origin request on the rebound name: ' + code);
  });

  const ben = await newPage();
  await step('signed in as Ben on the relay', async () => {
    await ben.goto(env.BEN_URL);
    await ben.locator('#me-address', { hasText: 'ben' }).waitFor();
  });

  await step('?server_url=OTHER asks first and sends nothing there; staying keeps Ben', async () => {
    await ben.goto(`${APP}?server_url=${encodeURIComponent(other.url)}`);
    await confirmShown(ben, other.url);
    check(other.seen.length === 0, 'requests reached the other relay before any answer: ' + other.seen.length);
    await ben.locator(tid('confirm-no')).click();
    await ben.locator('#me-address', { hasText: 'ben' }).waitFor();
    check(tokenArrived().length === 0, "Ben's token reached the other relay");
    const saved = await ben.evaluate(() => localStorage.getItem('gtswc.relay'));
    check(saved === null || saved === location.origin, 'saved relay changed to ' + saved);
  });

  await step("a link with an attacker's token and relay changes nothing unconfirmed", async () => {
    await ben.goto(`${APP}?pchat_session=pct_attacker&server_url=${encodeURIComponent(other.url)}`);
    await confirmShown(ben, other.url);
    check(!ben.url().includes('pchat_session'), 'the token left the address bar at once');
    await ben.locator(tid('confirm-no')).click();
    await ben.locator('#me-address', { hasText: 'ben' }).waitFor();
    check(other.seen.length === 0, 'the other relay was contacted: ' + JSON.stringify(other.seen));
  });

  await step("a link with another identity's token on this relay asks before switching", async () => {
    await ben.goto(env.MALLORY_URL);
    await confirmShown(ben, 'Mallory');
    await ben.locator(tid('confirm-no')).click();
    await ben.locator('#me-address', { hasText: 'ben' }).waitFor();
    check((await ben.locator('#me-name').textContent()) === 'Ben', 'still Ben');
  });

  await step('connecting to another relay when asked: sign in there, no token carried', async () => {
    await ben.goto(`${APP}?server_url=${encodeURIComponent(other.url)}`);
    await confirmShown(ben, other.url);
    await ben.locator(tid('confirm-yes')).click();
    await ben.locator(tid('login-relay'), { hasText: other.url }).waitFor();
    await ben.locator(tid('login-email')).fill('ben@example.com');
    await ben.locator(tid('login-submit')).click();
    await ben.locator(tid('error-banner')).waitFor();
    check(other.seen.some((r) => r.url.includes('request-code')), 'the sign-in went to the other relay');
    check(tokenArrived().length === 0, "Ben's token reached the other relay");
  });

  await step('back to the first relay: still signed in as Ben (tokens are kept per relay)', async () => {
    await ben.goto(`${APP}?server_url=${encodeURIComponent(RELAY)}`);
    await confirmShown(ben, RELAY);
    await ben.locator(tid('confirm-yes')).click();
    await ben.locator('#me-address', { hasText: 'ben' }).waitFor();
    check(tokenArrived().length === 0, "Ben's token reached the other relay");
  });
  evil.close();
  other.close();
});
