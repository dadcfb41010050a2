// The wsedge.js suite, runnable under `node --test` (client.test.mjs) and in a browser
// (browser.html): `suite(lib, env, makeStore)` returns [name, async fn] pairs. `lib` is the
// imported wsedge.js; `env` the server's address and tokens (from tests/js_client.rs);
// `makeStore` the position store to use (memory in Node, localStorage in a browser).

const assert = {
  ok(v, msg) {
    if (!v) throw new Error(msg || 'expected a true value');
  },
  equal(a, b, msg) {
    if (a !== b) throw new Error(`${msg ? msg + ': ' : ''}${JSON.stringify(a)} !== ${JSON.stringify(b)}`);
  },
  notEqual(a, b, msg) {
    if (a === b) throw new Error(`${msg ? msg + ': ' : ''}${JSON.stringify(a)} === ${JSON.stringify(b)}`);
  },
  deepEqual(a, b, msg) {
    const [x, y] = [JSON.stringify(a), JSON.stringify(b)];
    if (x !== y) throw new Error(`${msg ? msg + ': ' : ''}${x} !== ${y}`);
  },
  match(s, re) {
    if (!re.test(s)) throw new Error(`${JSON.stringify(s)} does not match ${re}`);
  },
};

export function suite(lib, env, makeStore) {
  const { Backoff, WsedgeClient, shouldReconnect, tokenExpiry } = lib;
  const tests = [];
  const t = (name, fn) => tests.push([name, fn]);

  /** A seeded uniform source (mulberry32). */
  function seeded(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  t('backoff delays fill their whole window, which doubles up to the cap', () => {
    const random = seeded(42);
    for (let attempt = 0; attempt < 9; attempt++) {
      const tenths = new Array(10).fill(0);
      let window = 0;
      for (let i = 0; i < 2000; i++) {
        const b = new Backoff({ random });
        for (let k = 0; k < attempt; k++) b.nextDelay();
        window = b.window();
        const d = b.nextDelay();
        assert.ok(d >= 0 && d <= window, `${d} in [0, ${window}]`);
        tenths[Math.min(9, Math.floor((d / window) * 10))]++;
      }
      assert.equal(window, Math.min(20000, 500 * 2 ** attempt));
      for (const n of tenths) assert.ok(n >= 140 && n <= 260, `attempt ${attempt}: ${tenths}`);
    }
    const b = new Backoff({ maxAttempts: 2, random });
    assert.notEqual(b.nextDelay(), null);
    b.connected(0);
    b.disconnected(500); // not stable: attempts stay
    assert.notEqual(b.nextDelay(), null);
    assert.equal(b.nextDelay(), null);
    b.connected(0);
    b.disconnected(10000);
    assert.equal(b.attempt, 0);
  });

  t('close codes that mean do not come back', () => {
    for (const code of [1002, 1003, 1007, 1009, 1010]) assert.equal(shouldReconnect(code, '', true), false);
    assert.equal(shouldReconnect(1008, 'authentication failed: expired', true), false);
    assert.equal(shouldReconnect(1008, 'token expired', false), false);
    assert.equal(shouldReconnect(1008, 'token expired', true), true);
    for (const code of [1000, 1001, 1006, 1011, 1012, 1013]) assert.equal(shouldReconnect(code, '', false), true);
    assert.equal(tokenExpiry(env.token), env.token_exp);
  });

  /** Resolves with the next event of `type` that passes `pred`. */
  function next(client, type, pred = () => true) {
    return new Promise((resolve) => {
      const off = client.on(type, (e) => {
        if (pred(e)) {
          off();
          resolve(e);
        }
      });
    });
  }

  async function admin(method, path, body) {
    const r = await fetch(`${env.http}${path}`, {
      method,
      headers: { Authorization: `Bearer ${env.admin}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.ok(r.ok, `${method} ${path}: ${r.status}`);
    return r.json();
  }

  t('a session restores its subscriptions and rooms and recovers exactly what it missed', async () => {
    // No automatic reconnect during the test (the delay is up to an hour): it reconnects when
    // the test says (connect()), after the missed messages are published.
    const client = new WsedgeClient(env.ws, {
      token: env.token,
      store: makeStore(),
      backoff: { base: 3600e3, cap: 3600e3 },
    });
    try {
      await restoresAndRecovers(client);
    } finally {
      client.close();
    }
  });

  async function restoresAndRecovers(client) {
    const texts = [];
    client.on('message', (m) => m.data && typeof m.data.text === 'string' && texts.push(m.data.text));
    const connected = next(client, 'connected');
    await client.connect();
    const { data } = await connected;
    assert.equal(data.user_id, env.user);
    const acks = Promise.all([
      next(client, 'message', (m) => m.type === 'subscription.acknowledged'),
      next(client, 'message', (m) => m.type === 'room.joined'),
    ]);
    client.subscribe(['review.updated']);
    client.join(['lobby']);
    await acks;
    const three = (prefix) => new Promise((resolve) => {
      const off = client.on('message', () => {
        if (texts.filter((t) => t.startsWith(prefix)).length === 3) {
          off();
          resolve();
        }
      });
    });
    let arrived = three('one');
    await admin('POST', '/ws/events/review.updated', { data: { text: 'one: event' } });
    await admin('POST', '/ws/rooms/lobby/messages', { data: { text: 'one: room' } });
    await admin('POST', `/ws/users/${env.user}/messages`, { type: 'note', data: { text: 'one: user' } });
    await arrived;
    assert.ok(client.rtt === null);
    const rtt = await client.ping();
    assert.ok(rtt >= 0 && client.rtt === rtt);

    // Kicked (1000 "disconnected by admin": come back); one more message on each channel.
    const gone = next(client, 'disconnected');
    await admin('DELETE', `/ws/users/${env.user}`);
    const d = await gone;
    assert.equal(d.code, 1000);
    assert.ok(d.retryIn >= 0);
    await admin('POST', '/ws/events/review.updated', { data: { text: 'two: event' } });
    await admin('POST', '/ws/rooms/lobby/messages', { data: { text: 'two: room' } });
    await admin('POST', `/ws/users/${env.user}/messages`, { type: 'note', data: { text: 'two: user' } });

    const recovered = [];
    client.on('recovered', (r) => recovered.push(r));
    const again = next(client, 'connected');
    arrived = three('two');
    await client.connect();
    assert.equal((await again).reconnected, true);
    await arrived;
    assert.deepEqual(texts.filter((t) => t.startsWith('two')).sort(), ['two: event', 'two: room', 'two: user']);
    assert.equal(texts.filter((t) => t.startsWith('one')).length, 3, 'nothing twice');
    recovered.sort((a, b) => a.channel.localeCompare(b.channel));
    assert.deepEqual(recovered, [
      { channel: 'event:review.updated', exact: true },
      { channel: 'room:lobby', exact: true },
      { channel: `user:${env.user}`, exact: true },
    ]);
    assert.equal(client.recoveredExactly('room:lobby'), true);
    const closed = next(client, 'closed');
    client.close();
    assert.equal((await closed).code, 1000);
  }

  t('a token provider is asked again before the token expires', async () => {
    let calls = 0;
    const client = new WsedgeClient(env.ws, {
      getToken: async () => {
        calls += 1;
        return env.short_tokens[calls - 1];
      },
      // The first token expires in a minute, the second in an hour: refreshing this long
      // before expiry makes the first refresh due at once and the next one an hour away.
      refreshBefore: tokenExpiry(env.short_tokens[0]) * 1000 - Date.now() - 200,
      store: makeStore(),
    });
    try {
      const refreshed = next(client, 'message', (m) => m.type === 'token.refreshed');
      await client.connect();
      const m = await refreshed;
      assert.equal(calls, 2);
      assert.equal(m.data.expires_at, tokenExpiry(env.short_tokens[1]));
    } finally {
      client.close();
    }
  });

  t('a bad token closes for good with the reason, and connect() rejects with it', async () => {
    const client = new WsedgeClient(env.ws, { token: 'not-a-token', store: makeStore() });
    const closed = next(client, 'closed');
    const err = await client.connect().then(
      () => null,
      (e) => e,
    );
    const c = await closed;
    assert.equal(c.code, 1008);
    assert.match(c.reason, /^authentication failed: /);
    assert.ok(err instanceof Error, 'connect() rejected');
    assert.equal(err.code, 1008);
  });

  t('connect() resolves once connected; sends before that wait in order, bounded', async () => {
    const client = new WsedgeClient(env.ws, { token: env.token, store: makeStore(), maxQueued: 2 });
    try {
      const pongs = [];
      client.on('message', (m) => m.type === 'pong' && pongs.push(m.data.pingId));
      client.send({ type: 'ping', data: { pingId: 'early-1' } });
      client.send({ type: 'ping', data: { pingId: 'early-2' } });
      let threw = null;
      try {
        client.send({ type: 'ping', data: { pingId: 'early-3' } });
      } catch (e) {
        threw = e;
      }
      assert.ok(threw instanceof Error, 'the third send over maxQueued throws');
      const data = await client.connect();
      assert.equal(data.user_id, env.user);
      // connect() again while connected: the same greeting, no second socket.
      assert.equal((await client.connect()).user_id, env.user);
      assert.equal(client.connections, 1);
      // Right after connect(): a ping goes out at once and is answered.
      const rtt = await client.ping();
      assert.ok(rtt >= 0);
      assert.deepEqual(pongs.slice(0, 2), ['early-1', 'early-2']);
    } finally {
      client.close();
    }
  });

  return tests;
}
