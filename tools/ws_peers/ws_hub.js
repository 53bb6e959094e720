// Peer hub for ws-bench: Node `ws` 8 (exact version in package.json).
// GET /ws: every text (or binary) message from any client is sent to every connected
// client, the sender included. permessage-deflate off. Prints
// `listening on http://127.0.0.1:PORT` on stdout once listening.
//
//   tools/ws_peers/install.sh
//   NODE_PATH="${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers/node_modules" \
//       node tools/ws_peers/ws_hub.js --port 0
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

function port() {
  const i = process.argv.indexOf('--port');
  const p = i >= 0 ? Number(process.argv[i + 1]) : 0;
  if (!Number.isInteger(p) || p < 0 || p > 65535) {
    console.error('ws_hub: --port takes 0..65535');
    process.exit(2);
  }
  return p;
}

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});
const wss = new WebSocketServer({
  server,
  path: '/ws',
  perMessageDeflate: false,
  clientTracking: true,
  maxPayload: 1 << 20,
});
wss.on('connection', (socket) => {
  socket.on('error', () => {});
  socket.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});
server.listen(port(), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
