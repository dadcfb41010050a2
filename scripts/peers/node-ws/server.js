// Echo/broadcast peer on Node's `ws` (one thread, like every Node server).
'use strict';
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2] || 9102);
const wss = new WebSocketServer({ host: '127.0.0.1', port, maxPayload: 16 << 20, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.length >= 9 && data.toString('latin1', 0, 9) === 'broadcast') {
      for (const client of wss.clients) {
        if (client.readyState === 1) client.send(data, { binary: false });
      }
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});
wss.on('listening', () => console.log(`node-ws listening on ${port}`));
