// gts-webchat web app: plain JavaScript, no build step, no network but the relay.
'use strict';

const $ = (id) => document.getElementById(id);
const LS = {
  get: (k) => localStorage.getItem('gtswc.' + k),
  set: (k, v) => (v == null ? localStorage.removeItem('gtswc.' + k) : localStorage.setItem('gtswc.' + k, v)),
};

/** Builds an element; strings become text nodes (never HTML). */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A session token belongs to the relay that issued it and is only ever sent there: tokens are
// kept per relay, and the app never carries one relay's token to another.
const tokenKey = (relay) => 'token:' + relay;

/** A relay address in canonical form (origin + path, no trailing slash), or null. */
function normRelay(raw) {
  try {
    const u = new URL(raw);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    if (u.search || u.hash || u.username || u.password) return null;
    return (u.origin + u.pathname).replace(/\/+$/, '');
  } catch (_) {
    return null;
  }
}

function useRelay(relay) {
  state.relay = relay;
  state.token = LS.get(tokenKey(relay));
  state.bridge = loadBridge(relay);
}

// ---- the PhoneRelay bridge: conversations with phone numbers and email addresses ----------

// Kept per relay, like the session token.
const bridgeKey = (relay) => 'bridge:' + relay;
const CHANNELS = { sms: 'SMS', wa: 'WhatsApp', tg: 'Telegram', notify: 'Notify', email: 'Email' };

function loadBridge(relay) {
  try {
    const b = JSON.parse(LS.get(bridgeKey(relay)) || '{}');
    return { key: String(b.key || ''), phone_id: String(b.phone_id || '') };
  } catch (_) {
    return { key: '', phone_id: '' };
  }
}

function saveBridge(key, phoneId) {
  state.bridge = { key: key.trim(), phone_id: phoneId.trim() };
  LS.set(bridgeKey(state.relay), state.bridge.key || state.bridge.phone_id ? JSON.stringify(state.bridge) : null);
}

/** The channel of a conversation with an outside address (`wa:+1555…`), or null. */
function channelOf(address) {
  const i = (address || '').indexOf(':');
  const ch = i > 0 ? address.slice(0, i) : '';
  return Object.hasOwn(CHANNELS, ch) ? ch : null;
}

/** `channel:recipient` as the relay writes it, or an error message (the relay checks again). */
function externalAddress(channel, raw) {
  const v = raw.trim();
  if (channel === 'email') {
    return /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v) ? 'email:' + v.toLowerCase() : { error: 'That is not an email address.' };
  }
  const phone = v.replace(/[\s.()-]/g, '');
  if (/^\+[1-9]\d{7,14}$/.test(phone)) return channel + ':' + phone;
  if (channel === 'tg' && /^@[A-Za-z0-9_]{5,32}$/.test(v)) return 'tg:' + v.toLowerCase();
  return { error: 'Use the international form: + and the country code, e.g. +15551230001.' };
}

function channelBadge(address) {
  const ch = channelOf(address);
  return ch ? h('span', { class: 'badge channel', 'data-testid': 'channel-badge' }, CHANNELS[ch]) : null;
}

function openExternalDialog() {
  $('external-error').hidden = true;
  $('external-to').value = '';
  $('external-dialog').showModal();
}

function startExternal() {
  const channel = $('external-channel').value;
  const addr = externalAddress(channel, $('external-to').value);
  if (typeof addr !== 'string') {
    $('external-error').textContent = addr.error;
    $('external-error').hidden = false;
    return;
  }
  $('external-dialog').close();
  if (!state.bridge.key) {
    showBanner('Add your PhoneRelay API key in Settings → Advanced to send on ' + CHANNELS[channel] + '.');
  }
  ensureConv(addr, { display_name: addr.slice(addr.indexOf(':') + 1), type: 'direct' });
  openConversation(addr);
}

/** Follows a sent message's delivery (queued → sent or failed) until it settles. */
async function trackDelivery(m) {
  for (let wait = 500; ; wait = Math.min(wait * 2, 5000)) {
    try {
      const s = await api('GET', '/api/v1/messages/' + encodeURIComponent(m.message_id), undefined, { bridge: true });
      m.delivery = { status: s.status, error: s.error || null };
      if (state.active === convKeyOf(m)) renderMessages();
      if (s.status !== 'queued') return;
    } catch (e) {
      if (e.status === 401 || e.status === 404) return;
    }
    await sleep(wait);
  }
}

function deliveryView(m) {
  const d = m.delivery;
  if (!d) return null;
  const label = d.status === 'failed' ? 'Not delivered: ' + (d.error || 'failed') : d.status === 'sent' ? 'Sent via ' + (CHANNELS[channelOf(m.to)] || m.to) : 'Queued…';
  return h('span', { class: 'delivery ' + d.status, 'data-testid': 'delivery-status', 'data-status': d.status, title: d.error || '' }, label);
}

const state = {
  relay: '',
  token: null,
  me: null,
  convs: new Map(), // with -> conversation
  byId: new Map(), // message_id -> message object
  active: null,
  cursor: '0',
  gen: 0, // bumps on every sign-in/out; stale loops stop
  replyTo: null,
  maxUpload: 25 * 1024 * 1024,
  groups: new Map(),
  recorder: null,
  prefs: { receive_language: null, read_aloud: false },
  // PhoneRelay settings for this relay (Settings → Advanced): { key, phone_id }.
  bridge: { key: '', phone_id: '' },
};

class RelayError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// ---- banner ---------------------------------------------------------------

let bannerTimer = null;
function showBanner(text, { sticky = false, info = false } = {}) {
  const b = $('banner');
  b.textContent = text;
  b.title = 'Click to dismiss';
  b.classList.toggle('info', info);
  b.hidden = false;
  clearTimeout(bannerTimer);
  if (!sticky) bannerTimer = setTimeout(() => (b.hidden = true), 7000);
}
function hideBanner() {
  $('banner').hidden = true;
}

// ---- relay access -----------------------------------------------------------

async function api(method, path, body, { signal, bridge = false } = {}) {
  const headers = {};
  if (state.token) headers['X-PChat-Session'] = state.token;
  // The PhoneRelay key goes only to the relay it was entered for, and only when needed.
  if (bridge && state.bridge.key) headers['Authorization'] = 'Bearer ' + state.bridge.key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(state.relay + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new RelayError('unreachable', 'The relay is unreachable', 0);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    /* not JSON */
  }
  if (!resp.ok) {
    const code = (data && data.error && data.error.code) || 'http_' + resp.status;
    const message = (data && data.error && data.error.message) || resp.statusText;
    if (resp.status === 401 && state.token && (code === 'unauthorized' || code === 'invalid_token')) {
      sessionExpired();
    }
    throw new RelayError(code, message, resp.status);
  }
  return data;
}

function fileUrl(url) {
  return /^https?:/.test(url) ? url : state.relay + url;
}

// ---- sign in ------------------------------------------------------------------

function showLogin(notice) {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-relay').textContent = state.relay;
  $('login-notice').hidden = !notice;
  $('login-notice').textContent = notice || '';
  $('code-step').hidden = true;
  $('login-submit').textContent = 'Send me a code';
  $('login-email').value = LS.get('email') || '';
  $('login-email').focus();
}

let codeRequested = false;
let loginId = null; // names our code request, so nobody else's wrong guesses can void it
async function onLoginSubmit(ev) {
  ev.preventDefault();
  const email = $('login-email').value.trim();
  const name = $('login-name').value.trim();
  const address = $('login-address').value.trim();
  const btn = $('login-submit');
  btn.disabled = true;
  try {
    if (!codeRequested) {
      const r = await api('POST', '/api/v1/pchat/auth/request-code', {
        email,
        display_name: name || undefined,
        purpose: 'login',
      });
      codeRequested = true;
      loginId = r.login_id || null;
      $('code-step').hidden = false;
      $('login-code').placeholder = r.code_length > 6 ? `${r.code_length} letters and digits` : '6 digits';
      $('dev-code').hidden = !r.dev_code;
      $('dev-code').textContent = r.dev_code ? 'Development code: ' + r.dev_code : '';
      $('code-sent').hidden = !r.emailed;
      btn.textContent = 'Sign in';
      $('login-code').focus();
    } else {
      const r = await api('POST', '/api/v1/pchat/auth/verify-code', {
        email,
        code: $('login-code').value.trim(),
        login_id: loginId || undefined,
        display_name: name || undefined,
        chat_address: address || undefined,
        public_visible: true,
        kind: 'human',
      });
      codeRequested = false;
      LS.set('email', email);
      setSession(r.session_token);
      await startSession();
    }
  } catch (e) {
    if (e.code === 'code_expired' || e.code === 'code_locked') {
      codeRequested = false;
      $('code-step').hidden = true;
      btn.textContent = 'Send me a code';
    }
    showBanner(e.message);
  } finally {
    btn.disabled = false;
  }
}

function setSession(token) {
  state.token = token;
  LS.set(tokenKey(state.relay), token);
}

function sessionExpired() {
  if (!state.token) return;
  state.token = null;
  LS.set(tokenKey(state.relay), null);
  state.gen++;
  showLogin('Your session has expired. Sign in again.');
}

async function signOut() {
  try {
    await api('POST', '/api/v1/webchat/presence', { visible: false });
    await api('POST', '/api/v1/pchat/auth/logout', {});
  } catch (_) {
    /* best effort */
  }
  state.token = null;
  LS.set(tokenKey(state.relay), null);
  state.gen++;
  state.convs.clear();
  state.byId.clear();
  state.active = null;
  showLogin();
}

// ---- session ----------------------------------------------------------------------

function presenceBody(visible) {
  return {
    chat_address: state.me && state.me.chat_address,
    visible,
    device_name: 'browser',
    session_name: 'web',
    listen_channel: 'pchat',
  };
}

async function startSession() {
  const gen = ++state.gen;
  let me = null;
  for (let wait = 500; !me; wait = Math.min(wait * 2, 10000)) {
    try {
      me = await api('GET', '/api/v1/webchat/me');
    } catch (e) {
      if (e.status === 401) return; // sessionExpired showed sign-in
      showBanner('Relay unreachable. Retrying…', { sticky: true });
      await sleep(wait);
      if (gen !== state.gen) return;
    }
  }
  hideBanner();
  state.me = me;
  state.cursor = me.stream_head; // live from now; history comes per conversation
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = me.display_name;
  $('me-address').textContent = me.chat_address;
  try {
    const health = await api('GET', '/health');
    state.maxUpload = health.max_upload_bytes || state.maxUpload;
  } catch (_) {
    /* keep the default */
  }
  api('POST', '/api/v1/webchat/presence', presenceBody(true)).catch(() => {});
  api('GET', '/api/v1/webchat/language-prefs').then((p) => (state.prefs = p)).catch(() => {});
  await loadConversations();
  pollLoop(gen);
  presenceLoop(gen);
}

async function presenceLoop(gen) {
  while (gen === state.gen) {
    await sleep(30000);
    if (gen !== state.gen) return;
    api('POST', '/api/v1/webchat/presence', presenceBody(true)).catch(() => {});
  }
}

async function loadConversations() {
  const r = await api('GET', '/api/v1/webchat/conversations');
  for (const c of r.conversations) {
    const conv = ensureConv(c.with, c);
    conv.unread = c.unread;
    conv.last = c.last_message;
    if (c.last_message) state.byId.set(c.last_message.message_id, c.last_message);
  }
  renderConversations();
}

async function pollLoop(gen) {
  let wait = 500;
  while (gen === state.gen) {
    try {
      const r = await api('POST', '/api/v1/webchat/poll', {
        chat_address: state.me.chat_address,
        after: state.cursor,
        wait: 25,
        limit: 200,
      });
      if (gen !== state.gen) return;
      if (!$('banner').hidden && $('banner').textContent.startsWith('Relay unreachable')) hideBanner();
      wait = 500;
      for (const m of r.messages) applyEvent(m);
      state.cursor = r.next_cursor;
    } catch (e) {
      if (gen !== state.gen || e.status === 401) return;
      showBanner('Relay unreachable. Retrying…', { sticky: true });
      await sleep(wait);
      wait = Math.min(wait * 2, 10000);
    }
  }
}

// ---- conversations ------------------------------------------------------------------

function ensureConv(key, info) {
  let c = state.convs.get(key);
  if (!c) {
    c = {
      with: key,
      type: key.startsWith('group:') ? 'group' : 'direct',
      display_name: key,
      kind: null,
      mode: null,
      can_post: true,
      last: null,
      unread: 0,
      messages: [],
      loaded: false,
      earliest: null,
      more: true,
    };
    state.convs.set(key, c);
  }
  if (info) {
    for (const k of ['display_name', 'kind', 'mode', 'can_post']) {
      if (info[k] != null) c[k] = info[k];
    }
    if (info.type) c.type = info.type;
  }
  return c;
}

function convKeyOf(m) {
  if (m.group_id) return 'group:' + m.group_id;
  return m.from === state.me.chat_address ? m.to : m.from;
}

function isMine(m) {
  return m.from === state.me.chat_address && m.type === 'message';
}

function applyEvent(m) {
  if (m.type === 'message') {
    const key = convKeyOf(m);
    const conv = ensureConv(key, m.group_id ? null : { display_name: m.from_name, kind: m.from_kind });
    if (m.group_id && conv.display_name === key) refreshGroupInfo(conv);
    if (!conv.messages.some((x) => x.message_id === m.message_id)) {
      conv.messages.push(m);
      state.byId.set(m.message_id, m);
    }
    conv.last = m;
    const visible = state.active === key && document.visibilityState === 'visible';
    if (visible) {
      renderMessages();
      markRead([m]);
    } else if (!isMine(m)) {
      conv.unread += 1;
    }
    renderConversations();
    return;
  }
  const target = state.byId.get(m.message_id);
  if (!target) return;
  if (m.type === 'edit') {
    target.text = m.text;
    target.edited_at = m.created_at;
  } else if (m.type === 'delete') {
    target.deleted = true;
    target.text = '';
    target.attachments = [];
  } else if (m.type === 'read') {
    target.read = true;
  } else if (m.type === 'caption') {
    target.caption = m.caption;
    // Read-aloud: play the spoken translation as it arrives (the person asked for it).
    if (state.prefs.read_aloud && m.caption && m.caption.audio && state.active === convKeyOf(target)) {
      const player = new Audio(fileUrl(m.caption.audio.url));
      player.play().catch(() => {});
    }
  }
  renderMessages();
  renderConversations();
}

async function refreshGroupInfo(conv) {
  try {
    const r = await api('GET', '/api/v1/webchat/groups');
    for (const g of r.groups) {
      state.groups.set(g.group_id, g);
      const c = state.convs.get('group:' + g.group_id);
      if (c) Object.assign(c, { display_name: g.name, mode: g.mode, can_post: g.can_post, type: 'group' });
    }
  } catch (_) {
    /* shown on next use */
  }
  if (conv === currentConv()) renderHeader();
  renderConversations();
}

function currentConv() {
  return state.active ? state.convs.get(state.active) : null;
}

function renderConversations() {
  const list = $('conversations');
  const convs = [...state.convs.values()].sort((a, b) => {
    const ta = a.last ? a.last.created_at : '';
    const tb = b.last ? b.last.created_at : '';
    return tb.localeCompare(ta);
  });
  list.replaceChildren(
    ...convs.map((c) => {
      const last = c.last;
      const snippet = !last
        ? c.type === 'group'
          ? c.mode === 'stream'
            ? 'Stream group'
            : 'Group'
          : ''
        : last.deleted
          ? 'Message deleted'
          : (last.from === state.me.chat_address ? 'You: ' : '') +
            (last.text || (last.attachments && last.attachments.length ? 'Attachment: ' + last.attachments[0].name : ''));
      return h(
        'li',
        {
          'data-testid': 'conversation-item',
          'data-with': c.with,
          class: c.with === state.active ? 'active' : '',
          onclick: () => openConversation(c.with),
        },
        h('span', { class: 'name' }, c.display_name, kindBadge(c), channelBadge(c.with)),
        c.unread > 0 ? h('span', { class: 'unread', 'data-testid': 'unread-count' }, String(c.unread)) : h('span'),
        h('span', { class: 'snippet' }, snippet),
      );
    }),
  );
  $('no-conversations').hidden = convs.length > 0;
}

function kindBadge(c) {
  if (c.type === 'group') return h('span', { class: 'badge' }, c.mode === 'stream' ? 'stream' : 'group');
  if (c.kind === 'agent') return h('span', { class: 'badge agent' }, 'AI');
  return null;
}

async function openConversation(key) {
  state.active = key;
  state.replyTo = null;
  $('app').classList.add('in-conversation');
  const conv = ensureConv(key);
  renderHeader();
  renderMessages();
  renderConversations();
  if (!conv.loaded) {
    await loadHistory(conv);
    if (channelOf(key) && state.bridge.key) {
      for (const m of conv.messages.filter(isMine).slice(-20)) if (!m.delivery) trackDelivery(m);
    }
  }
  if (conv.type === 'group' && !state.groups.has(key.slice(6))) await refreshGroupInfo(conv);
  renderHeader();
  renderMessages(true);
  // What was unread here is read now.
  if (conv.unread > 0) {
    const received = conv.messages.filter((m) => !isMine(m) && !m.deleted);
    markRead(received.slice(-conv.unread));
    conv.unread = 0;
    renderConversations();
  }
  $('composer').focus();
}

async function loadHistory(conv, before) {
  const q = new URLSearchParams({ with: conv.with, limit: '50' });
  if (before) q.set('before', before);
  try {
    const r = await api('GET', '/api/v1/webchat/history?' + q.toString());
    const known = new Set(conv.messages.map((m) => m.message_id));
    const older = r.messages.filter((m) => !known.has(m.message_id));
    for (const m of older) state.byId.set(m.message_id, m);
    conv.messages = before ? older.concat(conv.messages) : older.concat(conv.messages);
    conv.earliest = r.messages.length ? r.messages[0].cursor : conv.earliest;
    conv.more = r.messages.length === 50;
    conv.loaded = true;
  } catch (e) {
    if (e.code === 'not_member') conv.loaded = true;
    else if (e.status !== 401) showBanner(e.message);
  }
}

function markRead(messages) {
  for (const m of messages) {
    if (isMine(m) || m.deleted) continue;
    api('POST', '/api/v1/webchat/read', { message_id: m.message_id }).catch(() => {});
  }
}

function renderHeader() {
  const conv = currentConv();
  $('empty-state').hidden = !!conv;
  if (!conv) {
    $('composer-area').hidden = true;
    $('stream-notice').hidden = true;
    $('group-members').hidden = true;
    $('conv-name').textContent = '';
    $('conv-sub').textContent = '';
    return;
  }
  $('conv-name').textContent = conv.display_name;
  const ch = channelOf(conv.with);
  $('conv-sub').textContent =
    conv.type === 'group'
      ? conv.mode === 'stream'
        ? 'stream group'
        : 'group'
      : ch
        ? CHANNELS[ch] + ' · ' + conv.with.slice(ch.length + 1)
        : conv.with + (conv.kind === 'agent' ? ' · AI' : '');
  $('group-members').hidden = conv.type !== 'group';
  const observer = conv.type === 'group' && !conv.can_post;
  $('composer-area').hidden = observer;
  $('stream-notice').hidden = !observer;
  $('reply-bar').hidden = !state.replyTo;
  if (state.replyTo) $('reply-text').textContent = 'Replying to: ' + (state.replyTo.text || 'attachment');
}

function renderMessages(scrollToEnd) {
  const box = $('messages');
  const conv = currentConv();
  if (!conv) {
    box.replaceChildren();
    return;
  }
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const items = conv.messages.map(renderMessage);
  if (conv.more && conv.loaded && conv.messages.length) {
    items.unshift(
      h('button', { class: 'load-earlier', onclick: async () => { await loadHistory(conv, conv.earliest); renderMessages(); } }, 'Load earlier messages'),
    );
  }
  box.replaceChildren(...items);
  if (scrollToEnd || nearEnd) box.scrollTop = box.scrollHeight;
}

function attachmentView(a) {
  const url = fileUrl(a.url);
  if (a.kind === 'image') return h('img', { class: 'inline', src: url, alt: a.name, loading: 'lazy', 'data-testid': 'attachment-image' });
  if (a.kind === 'video') return h('video', { src: url, controls: true, preload: 'metadata', 'data-testid': 'attachment-video' });
  if (a.kind === 'audio' || a.kind === 'voice') {
    return h('div', { class: 'small muted' }, a.kind === 'voice' ? 'Voice clip' : a.name, h('br'), h('audio', { src: url, controls: true, preload: 'metadata', 'data-testid': 'attachment-audio' }));
  }
  return h('a', { class: 'file', href: url, download: a.name, rel: 'noopener', 'data-testid': 'attachment-file' }, a.name + ' (' + humanSize(a.size) + ')');
}

function humanSize(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

function timeOf(iso) {
  const d = new Date(iso);
  return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** The transcript and translation under a message; the original stays as it is. */
function captionView(m) {
  const voice = (m.attachments || []).some((a) => a.kind === 'voice');
  const c = m.caption;
  if (!c) {
    return voice && !m.deleted ? h('div', { class: 'caption muted', 'data-testid': 'caption-pending' }, 'transcribing…') : null;
  }
  const box = h('div', { class: 'caption', 'data-testid': 'caption' });
  if (c.translation) {
    box.append(h('div', { class: 'translation', 'data-testid': 'caption-translation', lang: c.translation_language || '' }, c.translation));
    const original = c.transcript || (voice ? '' : m.text);
    if (original) {
      const d = h('details', { class: 'original' }, h('summary', {}, 'Original' + (c.language ? ` (${c.language})` : '')));
      d.append(h('div', { lang: c.language || '', 'data-testid': 'caption-original' }, original));
      box.append(d);
    }
  } else if (c.transcript != null) {
    box.append(h('div', { class: 'transcript', 'data-testid': 'caption-transcript', lang: c.language || '' }, c.transcript || '(no speech)'));
  }
  if (c.audio) {
    box.append(h('audio', { src: fileUrl(c.audio.url), controls: true, preload: 'none', 'data-testid': 'caption-audio', 'aria-label': 'Translation read aloud' }));
  }
  if (c.caption_failed) box.append(h('div', { class: 'caption-failed muted small', 'data-testid': 'caption-failed' }, c.caption_failed));
  return box;
}

function renderMessage(m) {
  const mine = isMine(m);
  const conv = currentConv();
  const quoted = m.reply_to ? state.byId.get(m.reply_to) : null;
  const foot = h('div', { class: 'foot' });
  if (m.edited_at && !m.deleted) foot.append(h('span', { 'data-testid': 'edited' }, 'edited'));
  if (!m.deleted) {
    if (!(conv && conv.type === 'group' && !conv.can_post)) {
      foot.append(h('button', { 'data-testid': 'msg-reply', onclick: () => startReply(m) }, 'Reply'));
    }
    // What went out by SMS or email cannot be changed there.
    if (mine && !channelOf(m.to)) {
      foot.append(h('button', { 'data-testid': 'msg-edit', onclick: (ev) => startEdit(ev, m) }, 'Edit'));
    }
    if (mine) {
      foot.append(h('button', { 'data-testid': 'msg-delete', onclick: (ev) => confirmDelete(ev, m) }, 'Delete'));
    }
  }
  if (mine && channelOf(m.to)) foot.append(deliveryView(m));
  if (mine && !channelOf(m.to)) {
    foot.append(
      h('span', { class: 'ticks' + (m.read ? ' read' : ''), 'data-testid': 'ticks', title: m.read ? 'Read' : 'Delivered' }, m.read ? '✓✓' : '✓'),
    );
  }
  return h(
    'div',
    { class: 'msg' + (mine ? ' mine' : ''), 'data-testid': 'message', 'data-message-id': m.message_id },
    h(
      'div',
      { class: 'meta' },
      h('span', { class: 'who' }, mine ? 'You' : m.from_name),
      !mine && m.from_kind === 'agent' ? h('span', { class: 'badge agent' }, 'AI') : null,
      h('time', { datetime: m.created_at }, timeOf(m.created_at)),
    ),
    quoted ? h('div', { class: 'quote' }, '↪ ' + (quoted.deleted ? 'deleted message' : quoted.text || 'attachment')) : null,
    m.deleted
      ? h('div', { class: 'deleted', 'data-testid': 'deleted' }, 'This message was deleted')
      : m.text
        ? h('div', { class: 'text', 'data-testid': 'message-text' }, m.text)
        : null,
    m.deleted ? null : (m.attachments || []).map(attachmentView),
    m.deleted ? null : captionView(m),
    foot,
  );
}

function startReply(m) {
  state.replyTo = m;
  renderHeader();
  $('composer').focus();
}

function startEdit(ev, m) {
  const bubble = ev.target.closest('.msg');
  const textEl = bubble.querySelector('.text');
  const area = h('textarea', { 'data-testid': 'edit-input', rows: 2 });
  area.value = m.text;
  const save = h('button', {
    'data-testid': 'edit-save',
    onclick: async () => {
      const text = area.value;
      try {
        await api('POST', '/api/v1/webchat/edit', { message_id: m.message_id, text });
        m.text = text;
        m.edited_at = new Date().toISOString();
      } catch (e) {
        showBanner(e.message);
      }
      renderMessages();
    },
  }, 'Save');
  const cancel = h('button', { onclick: () => renderMessages() }, 'Cancel');
  const editor = h('div', {}, area, h('div', { class: 'foot' }, cancel, save));
  if (textEl) textEl.replaceWith(editor);
  else bubble.append(editor);
  area.focus();
}

function confirmDelete(ev, m) {
  const btn = ev.target;
  btn.textContent = 'Delete for everyone?';
  btn.dataset.testid = 'msg-delete-confirm';
  btn.onclick = async (e) => {
    e.stopPropagation();
    try {
      await api('POST', '/api/v1/webchat/delete', { message_id: m.message_id });
      m.deleted = true;
      m.text = '';
      m.attachments = [];
    } catch (err) {
      showBanner(err.message);
    }
    renderMessages();
  };
}

// ---- sending ---------------------------------------------------------------------

async function sendMessage(extra) {
  const conv = currentConv();
  if (!conv) return;
  const text = $('composer').value;
  const attachments = (extra && extra.attachments) || [];
  if (!text.trim() && attachments.length === 0) return;
  const external = channelOf(conv.with);
  const body = {
    phone_id: external ? state.bridge.phone_id || undefined : 'pchat_free_phone',
    channel: external || 'pchat',
    source: state.me.chat_address,
    to: external ? conv.with.slice(external.length + 1) : conv.with,
    text,
    reply_to: state.replyTo ? state.replyTo.message_id : undefined,
    attachments: attachments.length ? attachments : undefined,
  };
  $('send-button').disabled = true;
  try {
    const r = await api('POST', '/api/v1/messages', body, { bridge: !!external });
    const m = {
      cursor: '',
      type: 'message',
      message_id: r.message_id,
      from: state.me.chat_address,
      from_name: state.me.display_name,
      from_kind: state.me.kind,
      to: conv.with,
      text,
      created_at: r.created_at,
      reply_to: body.reply_to || null,
      group_id: conv.type === 'group' ? conv.with.slice(6) : null,
      attachments,
      delivery: r.status ? { status: r.status, error: null } : null,
    };
    if (external) trackDelivery(m);
    conv.messages.push(m);
    state.byId.set(m.message_id, m);
    conv.last = m;
    $('composer').value = '';
    state.replyTo = null;
    renderHeader();
    renderMessages(true);
    renderConversations();
  } catch (e) {
    if (e.status !== 401) showBanner(e.message);
  } finally {
    $('send-button').disabled = false;
  }
}

function upload(file, kind) {
  return new Promise((resolve, reject) => {
    if (file.size > state.maxUpload) {
      reject(new RelayError('payload_too_large', `That file is too large: this relay takes up to ${humanSize(state.maxUpload)}.`, 413));
      return;
    }
    const form = new FormData();
    form.append('kind', kind);
    form.append('file', file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', state.relay + '/api/v1/webchat/upload');
    xhr.setRequestHeader('X-PChat-Session', state.token);
    $('upload').hidden = false;
    $('upload-name').textContent = file.name;
    $('upload-progress').value = 0;
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) $('upload-progress').value = Math.round((e.loaded / e.total) * 100);
    };
    xhr.onload = () => {
      $('upload').hidden = true;
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch (_) {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300 && data) resolve(data.attachment);
      else if (xhr.status === 413) reject(new RelayError('payload_too_large', `That file is too large: this relay takes up to ${humanSize(state.maxUpload)}.`, 413));
      else if (xhr.status === 401) {
        sessionExpired();
        reject(new RelayError('invalid_token', 'Session expired', 401));
      } else reject(new RelayError('upload_failed', (data && data.error && data.error.message) || 'The upload failed', xhr.status));
    };
    xhr.onerror = () => {
      $('upload').hidden = true;
      reject(new RelayError('unreachable', 'The relay is unreachable; the file was not sent.', 0));
    };
    xhr.send(form);
  });
}

async function sendFile(file, kind) {
  try {
    const attachment = await upload(file, kind || 'auto');
    await sendMessage({ attachments: [attachment] });
  } catch (e) {
    if (e.status !== 401) showBanner(e.message);
  }
}

async function toggleRecording() {
  const btn = $('voice-record');
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showBanner('Voice clips need a browser with microphone recording.');
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (_) {
    showBanner('The microphone is not available (permission denied or no device).');
    return;
  }
  const chunks = [];
  const rec = new MediaRecorder(stream);
  rec.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  rec.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    btn.classList.remove('recording');
    btn.textContent = 'Voice';
    const type = rec.mimeType || 'audio/webm';
    const ext = type.includes('ogg') ? 'ogg' : 'webm';
    const file = new File(chunks, `voice-${new Date().toISOString().replace(/[:.]/g, '-')}.${ext}`, { type });
    await sendFile(file, 'voice');
  };
  state.recorder = rec;
  rec.start();
  btn.classList.add('recording');
  btn.textContent = 'Stop';
}

// ---- directory ---------------------------------------------------------------------

let searchTimer = null;
function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 200);
}

async function runSearch() {
  const q = $('directory-search').value.trim();
  const list = $('directory');
  if (!q) {
    list.hidden = true;
    list.replaceChildren();
    return;
  }
  try {
    const r = await api('GET', '/api/v1/webchat/directory?' + new URLSearchParams({ q, limit: '30' }));
    if ($('directory-search').value.trim() !== q) return;
    list.hidden = false;
    // Yourself is not someone to start a chat with: an answer of only you is "no one".
    const others = r.results.filter((e) => e.chat_address !== state.me.chat_address);
    if (!others.length) {
      list.replaceChildren(h('li', { class: 'muted', 'data-testid': 'directory-empty' }, `No one matches “${q}”.`));
      return;
    }
    list.replaceChildren(
      ...others
        .map((e) => {
          const isGroup = e.type === 'group';
          const detail = isGroup
            ? `${e.mode} group · ${e.member_count} members`
            : [e.chat_address, e.device_name, e.session_name].filter(Boolean).join(' · ');
          return h(
            'li',
            { 'data-testid': 'directory-result', 'data-address': e.chat_address, onclick: () => pickResult(e) },
            h(
              'span',
              { class: 'name' },
              isGroup ? null : h('span', { class: 'dot' + (e.online ? ' on' : ''), title: e.online ? 'online' : 'offline' }),
              e.display_name,
              isGroup ? h('span', { class: 'badge' }, 'group') : e.kind === 'agent' ? h('span', { class: 'badge agent' }, 'AI') : h('span', { class: 'badge' }, 'person'),
              e.online && e.status ? h('span', { class: 'badge working', 'data-testid': 'status' }, e.status) : null,
            ),
            h('span', { class: 'muted small' }, isGroup ? '' : e.online ? 'online' : 'offline'),
            h('span', { class: 'detail' }, detail),
          );
        }),
    );
  } catch (e) {
    if (e.status !== 401) showBanner(e.message);
  }
}

async function pickResult(e) {
  $('directory-search').value = '';
  $('directory').hidden = true;
  if (e.type === 'group') {
    try {
      const r = await api('POST', `/api/v1/webchat/groups/${e.group_id}/join`, {});
      if (r.pending) {
        showBanner('Asked to join; an admin will decide.', { info: true });
        return;
      }
    } catch (err) {
      showBanner(err.message);
      return;
    }
    ensureConv(e.chat_address, { display_name: e.display_name, mode: e.mode, type: 'group' });
    await refreshGroupInfo(state.convs.get(e.chat_address));
  } else {
    ensureConv(e.chat_address, { display_name: e.display_name, kind: e.kind, type: 'direct' });
  }
  await openConversation(e.chat_address);
}

// ---- groups ------------------------------------------------------------------------

async function createGroup() {
  const name = $('group-name').value.trim();
  if (!name) return;
  try {
    const r = await api('POST', '/api/v1/webchat/groups', {
      name,
      visibility: $('group-visibility').value,
      mode: $('group-mode').value,
    });
    $('new-group').close();
    $('group-name').value = '';
    const key = 'group:' + r.group_id;
    ensureConv(key, { display_name: name, type: 'group', mode: $('group-mode').value, can_post: true });
    await refreshGroupInfo(state.convs.get(key));
    await openConversation(key);
  } catch (e) {
    showBanner(e.message);
  }
}

async function openMembers() {
  const conv = currentConv();
  if (!conv || conv.type !== 'group') return;
  const gid = conv.with.slice(6);
  await refreshGroupInfo(conv);
  const g = state.groups.get(gid);
  const admin = g && g.role === 'admin';
  $('members-title').textContent = 'Members of ' + conv.display_name;
  $('members-admin').hidden = !admin;
  try {
    const r = await api('GET', `/api/v1/webchat/groups/${gid}/members`);
    $('members-list').replaceChildren(
      ...r.members.map((m) =>
        h('li', { 'data-testid': 'member' }, h('span', {}, m.display_name, ' ', h('span', { class: 'muted small' }, m.chat_address)), h('span', { class: 'badge' }, m.role), h('span')),
      ),
    );
    if (admin) {
      const jr = await api('GET', `/api/v1/webchat/groups/${gid}/join-requests`);
      $('requests-list').replaceChildren(
        ...(jr.requests.length
          ? jr.requests.map((q) =>
              h(
                'li',
                { 'data-testid': 'join-request' },
                h('span', {}, q.display_name + ' (' + q.chat_address + ')'),
                h('button', { 'data-testid': 'request-accept', onclick: () => decide(gid, q.chat_address, 'accept') }, 'Accept'),
                h('button', { 'data-testid': 'request-reject', onclick: () => decide(gid, q.chat_address, 'reject') }, 'Reject'),
              ),
            )
          : [h('li', { class: 'muted' }, 'No pending requests')]),
      );
    }
  } catch (e) {
    showBanner(e.message);
  }
  if (!$('members').open) $('members').showModal();
}

async function decide(gid, address, decision) {
  try {
    await api('POST', `/api/v1/webchat/groups/${gid}/join-requests/${encodeURIComponent(address)}/${decision}`, {});
  } catch (e) {
    showBanner(e.message);
  }
  await openMembers();
}

async function addMember() {
  const conv = currentConv();
  const address = $('member-address').value.trim();
  if (!conv || !address) return;
  try {
    await api('POST', `/api/v1/webchat/groups/${conv.with.slice(6)}/members`, { member_address: address });
    $('member-address').value = '';
  } catch (e) {
    showBanner(e.message);
  }
  await openMembers();
}

// ---- settings ------------------------------------------------------------------------

async function openSettings() {
  $('set-name').value = state.me.display_name;
  $('set-visible').checked = state.me.public_visible;
  $('set-relay').value = state.relay;
  $('set-bridge-key').value = state.bridge.key;
  $('set-phone-id').value = state.bridge.phone_id;
  try {
    const p = await api('GET', '/api/v1/webchat/language-prefs');
    state.prefs = p;
    $('set-lang').value = p.receive_language || '';
    $('set-read-aloud').checked = !!p.read_aloud;
  } catch (_) {
    $('set-lang').value = '';
  }
  $('settings').showModal();
}

async function saveSettings() {
  const relay = $('set-relay').value.trim().replace(/\/+$/, '');
  try {
    const name = $('set-name').value.trim();
    await api('PUT', '/api/v1/webchat/profile', { display_name: name || undefined, public_visible: $('set-visible').checked });
    state.prefs = await api('PUT', '/api/v1/webchat/language-prefs', {
      receive_language: $('set-lang').value.trim(),
      read_aloud: $('set-read-aloud').checked,
    });
    const me = await api('GET', '/api/v1/webchat/me');
    state.me = me;
    $('me-name').textContent = me.display_name;
    api('POST', '/api/v1/webchat/presence', presenceBody(true)).catch(() => {});
    saveBridge($('set-bridge-key').value, $('set-phone-id').value);
    $('settings').close();
  } catch (e) {
    showBanner(e.message);
    return;
  }
  if (relay && relay !== state.relay) {
    const next = normRelay(relay);
    if (!next) {
      showBanner('That relay URL is not valid: use http(s)://host[:port]');
      return;
    }
    // Another relay means another identity: this one stays signed in for when you come back.
    LS.set('relay', next);
    switchRelay(next);
  }
}

function switchRelay(relay) {
  state.gen++;
  state.convs.clear();
  state.byId.clear();
  state.active = null;
  useRelay(relay);
  if (state.token) startSession();
  else showLogin();
}

// ---- confirmations ----------------------------------------------------------------------

/** Asks the person a yes/no question in a modal; resolves true only for an explicit yes. */
function confirmChoice({ title, body, yes, no }) {
  const d = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-body').textContent = body;
  $('confirm-yes').textContent = yes;
  $('confirm-no').textContent = no;
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-yes').onclick = null;
      $('confirm-no').onclick = null;
      d.oncancel = null;
      if (d.open) d.close();
      resolve(answer);
    };
    $('confirm-yes').onclick = () => done(true);
    $('confirm-no').onclick = () => done(false);
    d.oncancel = () => done(false);
    d.showModal();
  });
}

/** Who a token signs in as on the current relay ("Name (address)"), or null. */
async function whoIs(token) {
  try {
    const r = await fetch(state.relay + '/api/v1/webchat/me', { headers: { 'X-PChat-Session': token } });
    if (!r.ok) return null;
    const me = await r.json();
    return `${me.display_name} (${me.chat_address})`;
  } catch (_) {
    return null;
  }
}

// ---- boot -----------------------------------------------------------------------------

function wire() {
  $('banner').addEventListener('click', hideBanner);
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('directory-search').addEventListener('input', onSearchInput);
  $('send-button').addEventListener('click', () => sendMessage());
  $('composer').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendMessage();
    }
  });
  $('attachment-input').addEventListener('change', async (e) => {
    const f = e.target.files && e.target.files[0];
    e.target.value = '';
    if (f) await sendFile(f, 'auto');
  });
  $('voice-record').addEventListener('click', toggleRecording);
  $('reply-cancel').addEventListener('click', () => {
    state.replyTo = null;
    renderHeader();
  });
  $('back').addEventListener('click', () => {
    state.active = null;
    $('app').classList.remove('in-conversation');
    renderHeader();
    renderConversations();
  });
  $('group-create').addEventListener('click', () => $('new-group').showModal());
  $('group-save').addEventListener('click', createGroup);
  $('group-members').addEventListener('click', openMembers);
  $('member-add').addEventListener('click', addMember);
  $('settings-open').addEventListener('click', openSettings);
  $('external-new').addEventListener('click', openExternalDialog);
  $('external-start').addEventListener('click', startExternal);
  $('settings-save').addEventListener('click', saveSettings);
  $('sign-out').addEventListener('click', async () => {
    $('settings').close();
    await signOut();
  });
  for (const d of document.querySelectorAll('dialog')) {
    for (const b of d.querySelectorAll('button.close')) b.addEventListener('click', () => d.close());
  }
  const pane = document.querySelector('.conversation');
  pane.addEventListener('dragover', (e) => {
    if (!currentConv()) return;
    e.preventDefault();
    $('drop-hint').hidden = false;
  });
  pane.addEventListener('dragleave', () => ($('drop-hint').hidden = true));
  pane.addEventListener('drop', async (e) => {
    e.preventDefault();
    $('drop-hint').hidden = true;
    const f = e.dataTransfer.files && e.dataTransfer.files[0];
    if (f && currentConv()) await sendFile(f, 'auto');
  });
  document.addEventListener('visibilitychange', () => {
    const conv = currentConv();
    if (document.visibilityState === 'visible' && conv && conv.unread > 0) openConversation(conv.with);
  });
  window.addEventListener('pagehide', () => {
    if (!state.token || !state.me) return;
    fetch(state.relay + '/api/v1/webchat/presence', {
      method: 'POST',
      keepalive: true,
      headers: { 'Content-Type': 'application/json', 'X-PChat-Session': state.token },
      body: JSON.stringify(presenceBody(false)),
    }).catch(() => {});
  });
}

async function boot() {
  wire();
  const params = new URLSearchParams(location.search);
  const linkToken = params.get('pchat_session');
  const linkRelay = params.get('server_url');
  // The link's token (and the rest of it) leaves the address bar and history at once.
  if (linkToken || linkRelay) history.replaceState(null, '', location.pathname + location.hash);
  // Before tokens were kept per relay there was one; it belonged to the saved relay.
  const legacy = LS.get('token');
  if (legacy) {
    const owner = normRelay(LS.get('relay') || '') || location.origin;
    if (!LS.get(tokenKey(owner))) LS.set(tokenKey(owner), legacy);
    LS.set('token', null);
  }
  const saved = normRelay(LS.get('relay') || '') || location.origin;
  let relay = saved;
  let tokenFits = true; // whether the link's token was made for the relay we end up on
  if (linkRelay) {
    const asked = normRelay(linkRelay);
    if (!asked) {
      showBanner(`The link names a relay address that is not valid; staying on ${saved}.`);
      tokenFits = false;
    } else if (asked !== saved) {
      // A link may not move the app to another relay (and send it this app's data) silently.
      const go = await confirmChoice({
        title: 'Connect to another relay?',
        body: `This link points the app at the relay ${asked}. You are using ${saved}. ` +
          `You would sign in to ${asked} separately; nothing from ${saved} is sent there. ` +
          `Only continue if you trust ${asked}.`,
        yes: `Connect to ${asked}`,
        no: `Stay on ${saved}`,
      });
      if (go) {
        relay = asked;
        LS.set('relay', asked);
      } else {
        tokenFits = false;
      }
    }
  }
  useRelay(relay);
  if (linkToken && tokenFits && linkToken !== state.token) {
    if (!state.token) {
      setSession(linkToken);
    } else {
      // Already signed in here: a link must not swap in someone else's identity unasked.
      const [current, offered] = await Promise.all([whoIs(state.token), whoIs(linkToken)]);
      if (offered) {
        const go = await confirmChoice({
          title: 'Switch identity?',
          body: `This link signs you in on ${relay} as ${offered}. ` +
            `You are signed in as ${current || 'someone else'}.`,
          yes: `Switch to ${offered}`,
          no: 'Stay signed in as I am',
        });
        if (go) setSession(linkToken);
      } else {
        showBanner('The sign-in link is expired or not valid on this relay.');
      }
    }
  }
  if (state.token) startSession();
  else showLogin();
}

document.addEventListener('DOMContentLoaded', boot);
