// End-to-end tests of the web app against a real relay and daemon (set up by tests/web.rs).
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { env, launch, pageMaker, check, step, tid, run } from './harness.mjs';

const RELAY = env.RELAY_URL;
const APP = env.APP_URL;
const ART = env.ARTIFACTS;

const browser = await launch();
const { pages, newPage } = pageMaker(browser);
const message = (page, text) => page.locator(tid('message'), { hasText: text });
// Background tabs render lazily; bring the page forward so the screenshot is immediate.
const shot = async (page, name) => {
  await page.bringToFront();
  await page.screenshot({ path: join(ART, name), fullPage: false });
};

/** A small valid PNG (a 40x30 red rectangle) built here, so no fixture file is needed. */
function png(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[y * (w * 3 + 1) + 1 + x * 3] = 255;
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

await run(browser, pages, ART, 'result', async () => {
  const ana = await newPage();

  await step('sign in by email code (the page shows the dev code)', async () => {
    await ana.goto(APP);
    await ana.locator(tid('login-email')).fill('ana@example.com');
    await ana.locator(tid('login-name')).fill('Ana');
    await ana.locator(tid('login-address')).fill('ana');
    await shot(ana, 'login.png');
    await ana.locator(tid('login-submit')).click();
    const dev = ana.locator(tid('dev-code'));
    await dev.waitFor();
    const code = (await dev.textContent()).match(/\d{6}/)[0];
    await ana.locator(tid('login-code')).fill(code);
    await ana.locator(tid('login-submit')).click();
    await ana.locator('#me-address', { hasText: 'ana' }).waitFor();
  });

  await step('find the AI persona made with the CLI in the directory', async () => {
    await ana.locator(tid('directory-search')).fill('codex');
    const hit = ana.locator(tid('directory-result'), { hasText: 'Codex Test Side' });
    await hit.waitFor();
    const text = await hit.textContent();
    check(text.includes('AI'), 'shown as an AI: ' + text);
    check(text.includes('online'), 'the daemon keeps it online: ' + text);
    check(text.includes('codex') && text.includes('live support'), 'device and session: ' + text);
    await shot(ana, 'directory.png');
    await hit.click();
    await ana.locator('#conv-name', { hasText: 'Codex Test Side' }).waitFor();
  });

  await step('empty directory search says so', async () => {
    // Only herself matches: she is not offered as someone to chat with.
    await ana.locator(tid('directory-search')).fill('ana');
    await ana.locator(tid('directory-empty'), { hasText: 'ana' }).waitFor();
    await ana.locator(tid('directory-search')).fill('zzzz-nobody');
    await ana.locator(tid('directory-empty'), { hasText: 'zzzz-nobody' }).waitFor();
    await ana.locator(tid('directory-search')).fill('');
  });

  await step('messages both ways with a daemon whose hook replies (Enter sends)', async () => {
    await ana.locator(tid('composer')).fill('hello agent');
    await ana.locator(tid('composer')).press('Enter');
    // The echo (quoting it) may already be there too: the first is Ana's own.
    await message(ana, 'hello agent').first().waitFor();
    await message(ana, 'echo: hello agent').waitFor(); // live, no reload
    // The hook finished, so the daemon sent a read receipt: two ticks.
    await message(ana, 'hello agent').locator(tid('ticks'), { hasText: '✓✓' }).first().waitFor();
    // Shift+Enter adds a line instead of sending.
    await ana.locator(tid('composer')).fill('line one');
    await ana.locator(tid('composer')).press('Shift+Enter');
    await ana.locator(tid('composer')).type('line two');
    check((await ana.locator(tid('composer')).inputValue()).includes('\n'), 'Shift+Enter is a newline');
    await ana.locator(tid('send-button')).click();
    await message(ana, 'echo: line one').waitFor();
  });

  await step('a sent image shows inline, with upload progress', async () => {
    await ana.locator(tid('attachment-input')).setInputFiles({ name: 'red.png', mimeType: 'image/png', buffer: png(40, 30) });
    const img = ana.locator(`${tid('message')} ${tid('attachment-image')}`).last();
    await img.waitFor();
    await ana.waitForFunction(() => {
      const imgs = document.querySelectorAll('[data-testid="attachment-image"]');
      const last = imgs[imgs.length - 1];
      return last && last.complete && last.naturalWidth === 40;
    });
    await shot(ana, 'conversation.png');
  });

  await step('an upload over the limit gets a clear message', async () => {
    await ana.locator(tid('attachment-input')).setInputFiles({ name: 'big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(1024 * 1024 + 10) });
    await ana.locator(tid('error-banner'), { hasText: 'too large' }).waitFor();
  });

  const ben = await newPage();
  await step('the auto-login URL signs in and the token leaves the address bar', async () => {
    await ben.goto(env.BEN_URL);
    await ben.locator('#me-address', { hasText: 'ben' }).waitFor();
    check(!ben.url().includes('pchat_session'), 'token still in the URL: ' + ben.url());
    const hist = await ben.evaluate(() => location.search);
    check(hist === '', 'query left: ' + hist);
  });

  await step('edit and delete a message; the other side sees it change', async () => {
    await ana.locator(tid('directory-search')).fill('ben');
    await ana.locator(tid('directory-result'), { hasText: 'Ben' }).click();
    await ana.locator(tid('composer')).fill('typo mesage');
    await ana.locator(tid('send-button')).click();
    await message(ana, 'typo mesage').waitFor();
    // Ben gets a new conversation, live, with an unread count.
    const item = ben.locator(tid('conversation-item'), { hasText: 'Ana' });
    await item.locator(tid('unread-count')).waitFor();
    await item.click();
    await message(ben, 'typo mesage').waitFor();
    // Ben read it: Ana sees two ticks.
    await message(ana, 'typo mesage').locator(tid('ticks'), { hasText: '✓✓' }).waitFor();
    // Ben replies to it.
    await message(ben, 'typo mesage').locator(tid('msg-reply')).click();
    await ben.locator(tid('composer')).fill('what did you mean?');
    await ben.locator(tid('composer')).press('Enter');
    await message(ana, 'what did you mean?').locator('.quote', { hasText: 'typo mesage' }).waitFor();

    await message(ana, 'typo mesage').locator(tid('msg-edit')).click();
    await ana.locator(tid('edit-input')).fill('typo message, fixed');
    await ana.locator(tid('edit-save')).click();
    await message(ben, 'typo message, fixed').locator(tid('edited')).waitFor();

    const mine = ana.locator(`${tid('message')}.mine`, { hasText: 'typo message, fixed' });
    const id = await mine.getAttribute('data-message-id');
    await mine.locator(tid('msg-delete')).click();
    await mine.locator(tid('msg-delete-confirm')).click();
    await ben.locator(`${tid('message')}[data-message-id="${id}"] ${tid('deleted')}`).waitFor();
  });

  await step('a stream group: the observer reads, the composer is replaced', async () => {
    await ana.bringToFront();
    await ana.locator(tid('group-create')).click();
    await ana.locator(tid('group-name')).fill('Builds');
    await ana.locator(tid('group-mode')).selectOption('stream');
    await ana.locator(tid('group-save')).click();
    await ana.locator('#conv-name', { hasText: 'Builds' }).waitFor();
    await ana.locator(tid('composer')).waitFor(); // the writer may post
    await ana.locator(tid('group-members')).click();
    await ana.locator(tid('member-address')).fill('ben');
    await ana.locator(tid('member-add')).click();
    await ana.locator(tid('member'), { hasText: 'ben' }).waitFor();
    await ana.locator('#members button.close').click();
    await ana.locator(tid('composer')).fill('build 42 passed');
    await ana.locator(tid('send-button')).click();
    await message(ana, 'build 42 passed').waitFor();

    if (await ben.locator(tid('back')).isVisible()) await ben.locator(tid('back')).click(); // phones only
    await ben.bringToFront();
    await ben.locator(tid('conversation-item'), { hasText: 'Builds' }).click();
    await message(ben, 'build 42 passed').waitFor();
    await ben.locator(tid('stream-notice')).waitFor();
    check(!(await ben.locator(tid('composer')).isVisible()), 'an observer has no composer');
    await shot(ben, 'stream-observer.png');
  });

  await step('settings: receive language is stored on the relay', async () => {
    await ana.bringToFront();
    await ana.locator(tid('settings-open')).click();
    await ana.locator(tid('settings-language')).fill('es');
    await ana.locator(tid('settings-save')).click();
    await ana.waitForFunction(() => !document.getElementById('settings').open);
    const lang = await ana.evaluate(async (relay) => {
      const r = await fetch(relay + '/api/v1/webchat/language-prefs', {
        headers: { 'X-PChat-Session': localStorage.getItem('gtswc.token:' + relay) },
      });
      return (await r.json()).receive_language;
    }, RELAY);
    check(lang === 'es', 'receive_language ' + lang);
  });

  await step('a voice clip arrives, then its transcript and a translation into the reader\'s language', async () => {
    if (!env.VOICE_CLIP) {
      console.log('(no voice engines here: skipped)');
      return;
    }
    // Ana now reads Spanish (the step above). Ben, in their conversation, sends a clip.
    await ben.bringToFront();
    await ben.locator(tid('conversation-item'), { hasText: 'Ana' }).click();
    await ben.locator(tid('composer')).waitFor();
    await ben.locator(tid('attachment-input')).setInputFiles(env.VOICE_CLIP);
    await ana.bringToFront();
    await ana.locator(tid('conversation-item'), { hasText: 'Ben' }).click();
    const clip = ana.locator(tid('message'), { has: ana.locator(tid('attachment-audio')) }).last();
    await clip.waitFor();
    const translation = clip.locator(tid('caption-translation'));
    await translation.waitFor({ timeout: 90000 });
    const es = (await translation.textContent()).toLowerCase();
    check(es.includes('informe'), 'a Spanish caption: ' + es);
    // The original is one tap away, and the audio is still there.
    await clip.locator('details.original summary').click();
    const original = (await clip.locator(tid('caption-original')).textContent()).toLowerCase();
    check(original.includes('report is ready'), 'the original transcript: ' + original);
    check((await clip.locator(tid('attachment-audio')).count()) === 1, 'the clip itself is kept');
    await shot(ana, 'voice-caption.png');
  });

  await step('relay unreachable: a banner, then automatic recovery', async () => {
    await ana.route(RELAY + '/api/v1/**', (route) => route.abort('connectionrefused'));
    // Any request now fails; the poll loop notices within one long-poll or at once on send.
    await ana.locator(tid('composer')).fill('while offline');
    await ana.locator(tid('send-button')).click();
    await ana.locator(tid('error-banner'), { hasText: 'unreachable' }).waitFor();
    await ana.unroute(RELAY + '/api/v1/**');
    await ana.locator(tid('composer')).fill('back online');
    await ana.locator(tid('send-button')).click();
    await message(ana, 'back online').waitFor();
  });

  const phone = await newPage({ width: 360, height: 740 });
  await step('phone-sized screen: list, then a conversation', async () => {
    await phone.goto(env.CARA_URL);
    await phone.locator('#me-address', { hasText: 'cara' }).waitFor();
    await phone.locator(tid('directory-search')).fill('Codex');
    await phone.locator(tid('directory-result'), { hasText: 'Codex Test Side' }).click();
    await phone.locator(tid('composer')).fill('hi from my phone');
    await phone.locator(tid('composer')).press('Enter');
    await message(phone, 'echo: hi from my phone').waitFor();
    await shot(phone, 'phone-conversation.png');
    await phone.locator(tid('back')).click();
    await phone.locator(tid('conversation-item'), { hasText: 'Codex Test Side' }).waitFor();
    await shot(phone, 'phone-list.png');
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    check(!overflow, 'no horizontal scrolling on a phone');
  });

  await step('session expired: back to sign-in', async () => {
    await phone.evaluate(async (relay) => {
      await fetch(relay + '/api/v1/pchat/auth/logout', {
        method: 'POST',
        headers: { 'X-PChat-Session': localStorage.getItem('gtswc.token:' + relay) },
      });
    }, RELAY);
    await phone.locator(tid('directory-search')).fill('any');
    await phone.locator('#login-notice', { hasText: 'expired' }).waitFor();
  });
});
