// Echo/broadcast peer on Bun.serve (its WebSocket server is uWebSockets; one thread).
// TLS_CERT and TLS_KEY (PEM files) make it serve wss:// (BoringSSL).
const port = Number(process.argv[2] || 9103);
const tls = process.env.TLS_CERT
  ? { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) }
  : undefined;
const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  tls,
  fetch(req, srv) {
    if (srv.upgrade(req)) return undefined;
    return new Response('upgrade required', { status: 426 });
  },
  websocket: {
    maxPayloadLength: 16 << 20,
    perMessageDeflate: false,
    idleTimeout: 0,
    backpressureLimit: 64 << 20,
    open(ws) {
      ws.subscribe('all');
    },
    message(ws, message) {
      if (typeof message === 'string' && message.startsWith('broadcast')) {
        server.publish('all', message);
      } else {
        ws.send(message);
      }
    },
  },
});
console.log(`bun listening on ${port}`);
