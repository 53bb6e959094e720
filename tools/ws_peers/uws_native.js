// Loads the native uWebSockets.js module of @trufflesuite/uws-js-unofficial directly.
// The package's own entry point silently falls back to a slow JavaScript build when
// the binary for this Node ABI is missing; this refuses instead.
'use strict';
const path = require('path');

module.exports = function loadNativeUws() {
  let pkgDir;
  try {
    pkgDir = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  } catch (e) {
    throw new Error('@trufflesuite/uws-js-unofficial is not installed (run tools/ws_peers/install.sh and set NODE_PATH)');
  }
  const version = require(path.join(pkgDir, 'package.json')).version;
  if (version !== '20.30.0-unofficial.0') {
    throw new Error(`@trufflesuite/uws-js-unofficial is ${version}, want 20.30.0-unofficial.0`);
  }
  const file = path.join(
    pkgDir,
    'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  );
  let uws;
  try {
    uws = require(file);
  } catch (e) {
    throw new Error(`native uWebSockets.js did not load (${file}): ${e.message}; refusing the JavaScript fallback`);
  }
  if (typeof uws.App !== 'function' || typeof uws.us_socket_local_port !== 'function') {
    throw new Error(`${file} loaded but is not the native uWebSockets.js module`);
  }
  return { uws, file, version };
};
