// A Node ws-wrapper server (npm ws-wrapper 3.0.3 over Node `ws`), for the Rust
// client's interop test (tests/ws_wrapper.rs): requests, rejections, named
// channels, events both ways, and requests of its own to the client.
//
//   NODE_PATH=... node tests/interop/wsw_node_server.mjs
//
// Listens on 127.0.0.1, a free port, prints `listening on ws://127.0.0.1:PORT`,
// and exits when its stdin closes.
import { createRequire } from "node:module"
import path from "node:path"

const require = createRequire(path.join(process.env.NODE_PATH, "x.js"))
const { WebSocketServer } = require("ws")
const { default: WebSocketWrapper } = await import(path.join(process.env.NODE_PATH, "ws-wrapper/lib/wrapper.mjs"))

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
let connections = 0

wss.on("connection", (socket) => {
	connections += 1
	const ws = new WebSocketWrapper(socket, { requestTimeout: 10000 })

	// Requests from the client, and their rejections.
	ws.on("add", (a, b) => a + b)
	ws.on("echo", (x) => x)
	ws.on("fail", () => {
		throw new Error("node says no")
	})
	ws.on("fail-plain", () => Promise.reject("plain string"))
	ws.on("never", () => new Promise(() => {}))
	ws.of("math").on("mul", (a, b) => a * b)

	// Events: each answered with an event.
	ws.on("notify-me", (...args) => ws.emit("notified", ...args))
	ws.of("math").on("notify-me", (...args) => ws.emit("notified", "math", ...args))

	// Requests to the client: ask-me(name, ...args) requests name(...args) of
	// the client (on the same channel) and answers with its answer or error.
	ws.on("ask-me", (name, ...args) => ws.request(name, ...args))
	ws.of("room1").on("ask-me", (name, ...args) => ws.of("room1").request(name, ...args))

	// Unprompted, as soon as the client connects: an event, and a request
	// whose answer goes back to the client as event `heard`.
	ws.emit("welcome", connections)
	ws.request("whoareyou", connections).then(
		(answer) => ws.emit("heard", answer),
		(err) => ws.emit("heard-error", err.message),
	)
})

wss.on("listening", () => {
	console.log(`listening on ws://127.0.0.1:${wss.address().port}`)
})

process.stdin.resume()
process.stdin.on("end", () => process.exit(0))
