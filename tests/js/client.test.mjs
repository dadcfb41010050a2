// wsedge.js under node --test: the shared suite (suite.mjs) against a real wsedge server
// started by tests/js_client.rs, which passes its address and tokens in WSEDGE_TEST.
// Node 20 needs --experimental-websocket; Node >= 22 has WebSocket built in.
import { test } from 'node:test';
import * as lib from '../../src/client/wsedge.js';
import { suite } from './suite.mjs';

const env = JSON.parse(process.env.WSEDGE_TEST || '{}');
for (const [name, fn] of suite(lib, env, () => new lib.MemoryStore())) test(name, fn);
