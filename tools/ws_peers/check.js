// Checks the installed peers: exact versions, and that uWebSockets.js loads natively.
'use strict';
const loadNativeUws = require('./uws_native.js');
const wsVersion = require('ws/package.json').version;
const want = require('./package.json').dependencies.ws;
if (wsVersion !== want) {
  console.error(`ws is ${wsVersion}, want ${want}`);
  process.exit(1);
}
try {
  const { file, version } = loadNativeUws();
  console.error(`ws ${wsVersion}; @trufflesuite/uws-js-unofficial ${version}, native ${file}`);
} catch (e) {
  console.error(e.message);
  process.exit(1);
}
