// The web app and the PhoneRelay bridge (set up by tests/web.rs): Settings → Advanced takes the
// key and phone id, a conversation with a phone number on a picked channel, delivery status, a
// reply that comes back through the bridge, and a refusal shown with the bridge's reason.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, launch, pageMaker, check, step, tid, run } from './harness.mjs';

const RELAY = env.RELAY_URL;
const ART = env.ARTIFACTS;
const PHONE = '+15551230001';

const browser = await launch();
const { pages, newPage } = pageMaker(browser);
const message = (page, text) => page.locator(tid('message'), { hasText: text });

await run(browser, pages, ART, 'bridge', async () => {
  const dora = await newPage();
  await dora.goto(env.DORA_URL);
  await dora.locator('#me-address', { hasText: 'dora' }).waitFor();

  await step('a phone number must be in international form', async () => {
    await dora.locator(tid('external-new')).click();
    await dora.locator(tid('external-channel')).selectOption('wa');
    await dora.locator(tid('external-to')).fill('555 123');
    await dora.locator(tid('external-start')).click();
    await dora.locator(tid('external-error'), { hasText: 'international' }).waitFor();
    await dora.keyboard.press('Escape');
    await dora.waitForFunction(() => !document.getElementById('external-dialog').open);
  });

  await step('Settings → Advanced keeps the PhoneRelay key and phone id for this relay', async () => {
    await dora.locator(tid('settings-open')).click();
    await dora.locator(tid('settings-bridge-key')).fill(env.BRIDGE_KEY);
    await dora.locator(tid('settings-phone-id')).fill(env.PHONE_ID);
    await dora.locator(tid('settings-save')).click();
    await dora.waitForFunction(() => !document.getElementById('settings').open);
    const kept = await dora.evaluate((relay) => JSON.parse(localStorage.getItem('gtswc.bridge:' + relay)), RELAY);
    check(kept.key === env.BRIDGE_KEY && kept.phone_id === env.PHONE_ID, 'kept per relay: ' + JSON.stringify(kept));
    await dora.reload();
    await dora.locator('#me-address', { hasText: 'dora' }).waitFor();
    await dora.locator(tid('settings-open')).click();
    await dora.waitForFunction(() => document.getElementById('settings').open);
    check((await dora.locator(tid('settings-phone-id')).inputValue()) === env.PHONE_ID, 'still there after a reload');
    await dora.keyboard.press('Escape');
    await dora.waitForFunction(() => !document.getElementById('settings').open);
  });

  await step('start a WhatsApp conversation with a number; the message goes out and says so', async () => {
    await dora.locator(tid('external-new')).click();
    await dora.locator(tid('external-channel')).selectOption('wa');
    await dora.locator(tid('external-to')).fill('+1 (555) 123-0001');
    await dora.locator(tid('external-start')).click();
    await dora.locator('#conv-sub', { hasText: 'WhatsApp · ' + PHONE }).waitFor();
    await dora.locator(tid('composer')).fill('Your table is ready');
    await dora.locator(tid('composer')).press('Enter');
    const sent = message(dora, 'Your table is ready');
    await sent.locator(tid('delivery-status') + '[data-status="sent"]').waitFor();
    check((await sent.locator(tid('delivery-status')).textContent()).includes('WhatsApp'), 'sent via WhatsApp');
    check(!(await dora.locator(tid('error-banner')).isVisible()), 'no error: ' + (await dora.locator(tid('error-banner')).textContent()));
    check((await sent.locator(tid('msg-edit')).count()) === 0, 'what went out on WhatsApp cannot be edited');
    await dora.screenshot({ path: join(ART, 'bridge-sent.png') });
  });

  await step('the reply on WhatsApp comes back into the conversation, marked with its channel', async () => {
    const r = await fetch(RELAY + '/api/v1/bridge/inbound', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + env.BRIDGE_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ phone_id: env.PHONE_ID, channel: 'wa', from: PHONE, text: 'On my way!', name: 'Eli' }),
    });
    check(r.ok, 'the bridge posted the reply: ' + r.status);
    await message(dora, 'On my way!').waitFor();
    const item = dora.locator(tid('conversation-item'), { has: dora.locator(tid('channel-badge'), { hasText: 'WhatsApp' }) });
    await item.waitFor();
  });

  await step('a reply typed here goes out on the same channel', async () => {
    await dora.locator(tid('composer')).fill('See you soon');
    await dora.locator(tid('send-button')).click();
    await message(dora, 'See you soon').locator(tid('delivery-status') + '[data-status="sent"]').waitFor();
  });

  await step('a message the bridge refuses shows why', async () => {
    writeFileSync(env.BRIDGE_MODE, '400 number blocked by carrier');
    await dora.locator(tid('composer')).fill('Are you there?');
    await dora.locator(tid('composer')).press('Enter');
    const failed = message(dora, 'Are you there?').locator(tid('delivery-status') + '[data-status="failed"]');
    await failed.waitFor();
    check((await failed.textContent()).includes('number blocked by carrier'), 'the reason: ' + (await failed.textContent()));
    writeFileSync(env.BRIDGE_MODE, '200');
    await dora.screenshot({ path: join(ART, 'bridge-failed.png') });
  });

  await step('email without SMTP on this relay: a clear message, nothing sent', async () => {
    await dora.locator(tid('external-new')).click();
    await dora.locator(tid('external-channel')).selectOption('email');
    await dora.locator(tid('external-to')).fill('Eli@Example.com');
    await dora.locator(tid('external-start')).click();
    await dora.locator('#conv-sub', { hasText: 'Email · eli@example.com' }).waitFor();
    await dora.locator(tid('composer')).fill('Minutes attached');
    await dora.locator(tid('composer')).press('Enter');
    await dora.locator(tid('error-banner'), { hasText: 'SMTP' }).waitFor();
    check((await message(dora, 'Minutes attached').count()) === 0, 'not shown as sent');
    check(await dora.locator('#me-address', { hasText: 'dora' }).isVisible(), 'still signed in');
  });
});
