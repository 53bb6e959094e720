// The JavaScript ws-wrapper client (npm ws-wrapper 3.0.3 over Node `ws`)
// against rt-server's /rpc: events both ways, requests both ways, rejections,
// named channels.
//
//   NODE_PATH=... node tests/interop/wsw_node_client.mjs ws://127.0.0.1:PORT/rpc
import assert from "node:assert/strict"
import { createRequire } from "node:module"
import path from "node:path"

const require = createRequire(path.join(process.env.NODE_PATH, "x.js"))
const WebSocket = require("ws")
const { default: WebSocketWrapper } = await import(path.join(process.env.NODE_PATH, "ws-wrapper/lib/wrapper.mjs"))

const url = process.argv[2]
const socket = new WebSocket(url)
const ws = new WebSocketWrapper(socket, { requestTimeout: 5000 })
await new Promise((resolve, reject) => {
	socket.on("open", resolve)
	socket.on("error", reject)
})

// Requests client -> server, and their rejections.
assert.equal(await ws.request("add", 2, 3), 5)
assert.deepEqual(await ws.request("echo", { a: [1, "x"] }), { a: [1, "x"] })
await assert.rejects(ws.request("fail"), (e) => e instanceof Error && e.message === "nope")
await assert.rejects(ws.request("nope-no-handler"), (e) => e.message === "No event listener for 'nope-no-handler'")
// Named channels.
assert.equal(await ws.of("room1").request("who"), "me")
await assert.rejects(ws.of("room2").request("who"), (e) => e.message === "Channel 'room2' does not exist")

// Events server -> client (answering an event client -> server).
const notified = new Promise((resolve) => ws.on("notified", (...args) => resolve(args)))
ws.emit("notify-me", "hi", 2)
assert.deepEqual(await notified, ["hi", 2])

// Requests server -> client: the server asks us and forwards our answer or rejection.
ws.on("double", (x) => x * 2)
ws.on("refuse", () => {
	throw new Error("client says no")
})
assert.equal(await ws.request("ask-me", "double", 21), 42)
await assert.rejects(ws.request("ask-me", "refuse", 0), (e) => e.message === "client says no")

socket.close(1000)
console.log("ws-wrapper 3.0.3 client against rt-server /rpc: requests, rejections, channels, events and requests both ways: ok")
