// Peer hub for ws-bench: uWebSockets.js (npm @trufflesuite/uws-js-unofficial
// 20.30.0-unofficial.0, its native module only: see uws_native.js).
// GET /ws: every message from any client is published to every connected client, the
// sender included (app.publish, not ws.publish, which skips the sender).
// permessage-deflate off. Prints `listening on http://127.0.0.1:PORT` on stdout.
//
//   tools/ws_peers/install.sh
//   NODE_PATH="${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers/node_modules" \
//       node tools/ws_peers/uws_hub.js --port 0
'use strict';
const loadNativeUws = require('./uws_native.js');

let native;
try {
  native = loadNativeUws();
} catch (e) {
  console.error(`uws_hub: ${e.message}`);
  process.exit(1);
}
const { uws, file } = native;
console.error(`uws_hub: native module ${file}`);

const i = process.argv.indexOf('--port');
const wanted = i >= 0 ? Number(process.argv[i + 1]) : 0;
if (!Number.isInteger(wanted) || wanted < 0 || wanted > 65535) {
  console.error('uws_hub: --port takes 0..65535');
  process.exit(2);
}

const TOPIC = 'all';
const app = uws.App();
app.ws('/ws', {
  compression: uws.DISABLED,
  maxPayloadLength: 1 << 20,
  maxBackpressure: 1 << 20,
  idleTimeout: 0,
  sendPingsAutomatically: false,
  open: (ws) => {
    ws.subscribe(TOPIC);
  },
  message: (ws, message, isBinary) => {
    app.publish(TOPIC, message, isBinary);
  },
});
app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end('not found\n');
});
app.listen('127.0.0.1', wanted, (token) => {
  if (!token) {
    console.error(`uws_hub: cannot listen on 127.0.0.1:${wanted}`);
    process.exit(1);
  }
  console.log(`listening on http://127.0.0.1:${uws.us_socket_local_port(token)}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
