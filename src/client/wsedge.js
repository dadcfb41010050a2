// wsedge.js: the wsedge protocol client for browsers and Node (a global WebSocket: Node >= 22,
// or Node 20 with --experimental-websocket). One ES module, no dependencies; types in
// wsedge.d.ts. Served by every wsedge server at /client/wsedge.js.
//
// A session outlives its connections: it reconnects with exponential backoff and full jitter,
// subscribes and joins again with `recover` from the last position seen per channel (kept in
// a pluggable store: localStorage in browsers, memory elsewhere), recovers its own user
// channel in the upgrade request, tells per channel whether the recovery was exact, refreshes
// its token from a provider before it expires, and waits out RATE_LIMIT_EXCEEDED's retry_after.

/** Close codes after which reconnecting cannot help (the client is at fault or not allowed). */
const FINAL_CODES = new Set([1002, 1003, 1007, 1009, 1010]);

/** Whether a close invites a reconnect (1008 only for `token expired` with a token provider). */
export function shouldReconnect(code, reason, hasTokenProvider) {
  if (FINAL_CODES.has(code)) return false;
  if (code === 1008) return Boolean(hasTokenProvider) && reason === 'token expired';
  return true;
}

/** Delays drawn from [0, min(cap, base * 2^attempt)] (full jitter), in milliseconds. */
export class Backoff {
  constructor({ base = 500, cap = 20000, maxAttempts = 0, stableAfter = 10000, random = Math.random } = {}) {
    Object.assign(this, { base, cap, maxAttempts, stableAfter, random });
    this.attempt = 0;
    this.connectedAt = null;
  }

  window() {
    return Math.min(this.cap, this.base * 2 ** Math.min(this.attempt, 40));
  }

  /** The next delay, or null once maxAttempts have failed in a row. */
  nextDelay() {
    if (this.maxAttempts && this.attempt >= this.maxAttempts) return null;
    const w = this.window();
    this.attempt += 1;
    return this.random() * w;
  }

  connected(now = Date.now()) {
    this.connectedAt = now;
  }

  /** A connection that lasted stableAfter resets the attempts. */
  disconnected(now = Date.now()) {
    if (this.connectedAt !== null && now - this.connectedAt >= this.stableAfter) this.attempt = 0;
    this.connectedAt = null;
  }
}

/** Positions kept in memory (lost with the page or process). */
export class MemoryStore {
  constructor() {
    this.map = new Map();
  }
  get(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  set(key, value) {
    this.map.set(key, value);
  }
  delete(key) {
    this.map.delete(key);
  }
}

/** Positions kept in localStorage, so a reloaded page recovers too. */
export class LocalStorageStore {
  constructor(prefix = 'wsedge:') {
    this.prefix = prefix;
  }
  get(key) {
    const v = globalThis.localStorage.getItem(this.prefix + key);
    return v === null ? null : JSON.parse(v);
  }
  set(key, value) {
    globalThis.localStorage.setItem(this.prefix + key, JSON.stringify(value));
  }
  delete(key) {
    globalThis.localStorage.removeItem(this.prefix + key);
  }
}

function defaultStore() {
  try {
    if (globalThis.localStorage) return new LocalStorageStore();
  } catch (_) {
    // Storage denied (private mode, sandboxed frame): memory it is.
  }
  return new MemoryStore();
}

/** A JWT's exp (seconds), read without verifying: the server verifies, the client plans. */
export function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === 'number' ? claims.exp : null;
  } catch (_) {
    return null;
  }
}

/**
 * A protocol session. Events (listen with `on(type, fn)`, which returns an unsubscribe
 * function): `connected` {data, reconnected}, `recovered` {channel, exact}, `message` (the
 * parsed JSON), `disconnected` {code, reason, retryIn}, `closed` {code, reason} (final).
 */
export class WsedgeClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.store = options.store || defaultStore();
    this.refreshBefore = options.refreshBefore ?? 30000;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.backoff = new Backoff(options.backoff || {});
    this.maxQueued = options.maxQueued ?? 1000;
    this.pingTimeout = options.pingTimeout ?? 10000;
    this.opening = null;
    this.events = new Set();
    this.rooms = new Set();
    this.exact = new Map();
    this.userChannel = null;
    this.listeners = new Map();
    this.ws = null;
    this.connections = 0;
    this.pausedUntil = 0;
    this.outbox = [];
    this.pings = new Map();
    this.pingCount = 0;
    this.rtt = null;
    this.stopped = false;
    this.timers = new Set();
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(detail);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  later(fn, ms) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, Math.max(0, ms));
    this.timers.add(t);
  }

  /**
   * Opens the session: resolves with connection.established's data once a connection is
   * established (after as many retries as the backoff allows), rejects when the session ends
   * for good first (a final close code, maxAttempts spent, or close()). Later reconnects
   * happen by themselves.
   */
  connect() {
    this.stopped = false;
    if (this.opening) return this.opening.promise;
    // Already connected: the greeting we have. A socket already opening settles the promise
    // made here (no second socket); with none, one opens now (a pending retry is not awaited,
    // and finds the socket there when it fires).
    if (this.ws && this.connectedWs === this.ws) return Promise.resolve(this.greeting);
    let settle;
    const promise = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.opening = { promise, ...settle };
    if (!this.ws) this.open().catch((e) => this.failed(this.ws, e));
    return promise;
  }

  /** One connection attempt. */
  async open() {
    let token = this.token;
    if (this.getToken) {
      const exp = token && tokenExpiry(token);
      if (!token || (exp && exp * 1000 - this.refreshBefore <= Date.now())) {
        token = this.token = await this.getToken();
        // close() while the provider was asked: no socket after all.
        if (this.stopped || this.ws) return;
      }
    }
    const u = new URL(this.url);
    if (token) u.searchParams.set('token', token);
    const own = this.userChannel && this.store.get(this.userChannel);
    if (own) {
      u.searchParams.set('recover_offset', String(own.offset));
      u.searchParams.set('recover_epoch', own.epoch);
    }
    const ws = new this.WebSocket(u.toString());
    this.ws = ws;
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => this.onClose(ws, ev.code, ev.reason);
    // Node 20's WebSocket reports a refused or failed connection with `error` alone, never
    // `close`: an error not followed by a close soon is taken as one (1006).
    ws.onerror = () => this.later(() => this.onClose(ws, 1006, 'connection failed'), 100);
  }

  /** An attempt failed before a socket existed (a token provider threw, a bad URL). */
  failed(ws, e) {
    this.emit('error', e);
    this.onClose(ws, 1006, String(e));
  }

  subscribe(events) {
    events.forEach((e) => this.events.add(e));
    this.sendMembership('subscribe', 'events', events, 'event:');
  }

  unsubscribe(events) {
    events.forEach((e) => this.events.delete(e));
    this.sendNow({ type: 'unsubscribe', data: { events } });
  }

  join(rooms) {
    rooms.forEach((r) => this.rooms.add(r));
    this.sendMembership('join', 'rooms', rooms, 'room:');
  }

  leave(rooms) {
    rooms.forEach((r) => this.rooms.delete(r));
    this.sendNow({ type: 'leave', data: { rooms } });
  }

  /**
   * A protocol ping; resolves with the round trip in milliseconds (also kept in `rtt`), or
   * rejects if no pong comes within `timeout` ms (default: the pingTimeout option, 10000).
   */
  ping(timeout = this.pingTimeout) {
    const id = `p${++this.pingCount}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(id);
        reject(new Error(`wsedge: no pong within ${timeout} ms`));
      }, timeout);
      this.pings.set(id, { at: performance.now(), resolve, reject, timer });
      this.send({ type: 'ping', data: { pingId: id } });
    });
  }

  /**
   * Sends a message now if the connection is open and nothing waits; otherwise queues it, in
   * order, until the connection is (re)established and any RATE_LIMIT_EXCEEDED pause is over.
   * At most `maxQueued` (1000) wait: past that it throws, nothing is dropped silently.
   * close() discards what waits.
   */
  send(message) {
    const open = this.ws && this.ws.readyState === 1 && this.connectedWs === this.ws;
    if (!open || Date.now() < this.pausedUntil || this.outbox.length) {
      if (this.outbox.length >= this.maxQueued) {
        throw new Error(`wsedge: ${this.outbox.length} messages already wait to be sent (maxQueued)`);
      }
      this.outbox.push(message);
      return;
    }
    this.sendNow(message);
  }

  recoveredExactly(channel) {
    return this.exact.has(channel) ? this.exact.get(channel) : null;
  }

  position(channel) {
    return this.store.get(channel);
  }

  /** Closes with 1000 and stops reconnecting; queued sends are discarded, pings rejected. */
  close() {
    this.stopped = true;
    this.timers.forEach(clearTimeout);
    this.timers.clear();
    this.outbox = [];
    for (const [id, p] of this.pings) {
      clearTimeout(p.timer);
      p.reject?.(new Error('wsedge: closed'));
      this.pings.delete(id);
    }
    const ws = this.ws;
    if (!ws) {
      this.settle(new Error('wsedge: closed'));
      return;
    }
    ws.close(1000);
    // A socket that already failed (Node 20: error, no close event) never sends close.
    if (ws.readyState === 3) this.onClose(ws, 1006, 'closed');
  }

  /** Settles connect()'s promise: resolved with the greeting's data, or rejected. */
  settle(outcome, data) {
    const o = this.opening;
    if (!o) return;
    this.opening = null;
    if (outcome instanceof Error) o.reject(outcome);
    else o.resolve(data);
  }

  sendNow(message) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(message));
  }

  sendMembership(type, key, names, prefix) {
    const recover = {};
    for (const n of names) {
      const p = this.store.get(prefix + n);
      if (p) recover[n] = { offset: p.offset, epoch: p.epoch };
    }
    const data = { [key]: names };
    if (Object.keys(recover).length) data.recover = recover;
    this.sendNow({ type, data });
  }

  notePosition(channel, offset, epoch) {
    if (!channel || typeof offset !== 'number' || typeof epoch !== 'string') return;
    const p = this.store.get(channel);
    if (!p || p.epoch !== epoch || offset > p.offset) this.store.set(channel, { offset, epoch });
  }

  recovered(channel, exact) {
    this.exact.set(channel, exact);
    this.emit('recovered', { channel, exact });
  }

  onMessage(raw) {
    let v;
    try {
      v = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch (_) {
      this.emit('message', raw);
      return;
    }
    const d = v.data || {};
    switch (v.type) {
      case 'connection.established':
        return this.onEstablished(d);
      case 'pong': {
        const p = this.pings.get(d.pingId);
        if (p) {
          clearTimeout(p.timer);
          this.pings.delete(d.pingId);
          this.rtt = performance.now() - p.at;
          p.resolve(this.rtt);
        }
        break;
      }
      case 'error':
        if (d.code === 'RATE_LIMIT_EXCEEDED') {
          this.pausedUntil = Date.now() + 1000 * (d.retry_after || 1);
          this.later(() => this.flushOutbox(), this.pausedUntil - Date.now());
        }
        break;
      case 'subscription.acknowledged':
      case 'room.joined':
        for (const p of Object.values(d.positions || {})) {
          if (p.recovered === true) {
            // The missed messages follow and move the position themselves.
          } else {
            if (p.recovered === false) this.store.delete(p.channel);
            this.notePosition(p.channel, p.offset, p.epoch);
          }
          if (typeof p.recovered === 'boolean') this.recovered(p.channel, p.recovered);
        }
        break;
      default:
        break;
    }
    if (v.channel) {
      const held = this.store.get(v.channel);
      if (held && held.epoch !== v.epoch) {
        // History was lost in between: as a failed recovery.
        this.store.delete(v.channel);
        this.recovered(v.channel, false);
      }
      this.notePosition(v.channel, v.offset, v.epoch);
    }
    this.emit('message', v);
  }

  onEstablished(data) {
    this.connectedWs = this.ws;
    this.greeting = data;
    this.connections += 1;
    this.backoff.connected();
    const reconnected = this.connections > 1;
    this.emit('connected', { data, reconnected });
    const p = data.position;
    if (p) {
      this.userChannel = p.channel;
      if (data.recovery) {
        if (!data.recovery.recovered) this.store.delete(p.channel);
        this.recovered(p.channel, Boolean(data.recovery.recovered));
      }
      if (!data.recovery || !data.recovery.recovered) this.notePosition(p.channel, p.offset, p.epoch);
    }
    if (this.events.size) this.sendMembership('subscribe', 'events', [...this.events], 'event:');
    if (this.rooms.size) this.sendMembership('join', 'rooms', [...this.rooms], 'room:');
    this.flushOutbox();
    this.scheduleRefresh();
    this.settle(null, data);
  }

  flushOutbox() {
    if (Date.now() < this.pausedUntil || this.connectedWs !== this.ws) return;
    while (this.outbox.length && this.ws && this.ws.readyState === 1) this.sendNow(this.outbox.shift());
  }

  scheduleRefresh() {
    if (!this.getToken || !this.token) return;
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const ws = this.ws;
    this.later(async () => {
      if (this.stopped || ws !== this.ws) return;
      try {
        this.token = await this.getToken();
        this.sendNow({ type: 'token.refresh', data: { token: this.token } });
        this.scheduleRefresh();
      } catch (e) {
        this.emit('error', e);
      }
    }, exp * 1000 - this.refreshBefore - Date.now());
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.connectedWs = null;
    this.backoff.disconnected();
    const final = () => {
      this.emit('closed', { code, reason });
      const e = new Error(`wsedge: closed ${code}${reason ? ` ${reason}` : ''}`);
      Object.assign(e, { code, reason });
      this.settle(e);
    };
    if (this.stopped) {
      final();
      return;
    }
    if (code === 1008 && reason === 'token expired') this.token = null;
    const again = shouldReconnect(code, reason, Boolean(this.getToken));
    const retryIn = again ? this.backoff.nextDelay() : null;
    if (retryIn === null) {
      this.stopped = true;
      final();
      return;
    }
    this.emit('disconnected', { code, reason, retryIn });
    this.later(() => {
      if (!this.stopped && !this.ws) this.open().catch((e) => this.failed(this.ws, e));
    }, retryIn);
  }
}
