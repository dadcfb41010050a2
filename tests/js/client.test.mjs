// wsedge.js under node --test: the shared suite (suite.mjs) against a real wsedge server
// started by tests/js_client.rs, which passes its address and tokens in WSEDGE_TEST.
// Node 20 needs --experimental-websocket; Node >= 22 has WebSocket built in.
import { test } from 'node:test';
import * as lib from '../../src/client/wsedge.js';
import { suite } from './suite.mjs';

const env = JSON.parse(process.env.WSEDGE_TEST || '{}');
for (const [name, fn] of suite(lib, env, () => new lib.MemoryStore())) test(name, fn);

// Node only: what a browser cannot set up (a port nobody listens on, a raw TCP server).
import net from 'node:net';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';

/** A port nobody listens on (taken from the OS, then let go). */
async function deadPort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

function events(client, type, n) {
  return new Promise((resolve) => {
    const seen = [];
    const off = client.on(type, (e) => {
      seen.push(e);
      if (seen.length === n) {
        off();
        resolve(seen);
      }
    });
  });
}

test('refused connections are retried until the server is back (Node fires only error)', async () => {
  const port = await deadPort();
  const target = new URL(env.ws);
  const client = new lib.WsedgeClient(`ws://127.0.0.1:${port}/ws`, {
    token: env.token,
    store: new lib.MemoryStore(),
    backoff: { base: 20, cap: 50 },
  });
  const refused = events(client, 'disconnected', 3);
  const opened = client.connect();
  for (const d of await refused) assert.equal(d.code, 1006);
  // The server comes back on that port (a TCP relay to the real one).
  const sockets = [];
  const relay = net.createServer((c) => {
    const up = net.connect(Number(target.port), target.hostname);
    sockets.push(c, up);
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  await new Promise((r) => relay.listen(port, '127.0.0.1', r));
  try {
    const data = await opened;
    assert.equal(data.user_id, env.user);
    assert.ok((await client.ping()) >= 0);
  } finally {
    client.close();
    relay.close();
    sockets.forEach((s) => s.destroy());
  }
});

test('ping() rejects when no pong comes in time', async () => {
  // A server that upgrades and greets, then never answers anything.
  const sockets = [];
  const server = net.createServer((c) => {
    sockets.push(c);
    c.once('data', (req) => {
      const key = /Sec-WebSocket-Key: (.*)\r\n/i.exec(req.toString())[1].trim();
      const accept = crypto
        .createHash('sha1')
        .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
        .digest('base64');
      c.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      const hello = Buffer.from(JSON.stringify({ type: 'connection.established', data: { user_id: 'x' } }));
      c.write(Buffer.concat([Buffer.from([0x81, hello.length]), hello]));
    });
    c.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const client = new lib.WsedgeClient(`ws://127.0.0.1:${server.address().port}/ws`, {
    store: new lib.MemoryStore(),
  });
  try {
    await client.connect();
    await assert.rejects(client.ping(200), /no pong within 200 ms/);
  } finally {
    client.close();
    server.close();
    sockets.forEach((s) => s.destroy());
  }
});
