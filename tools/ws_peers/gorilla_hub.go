// Peer hub for ws-bench: Go net/http with gorilla/websocket (Debian's
// golang-github-gorilla-websocket-dev 1.5.0, built with Go from golang-go by
// install.sh, GOPATH mode, nothing downloaded).
// GET /ws: every text (or binary) message from any client is sent to every connected
// client, the sender included. permessage-deflate off. The layout of gorilla's own
// chat example: a reader and a writer goroutine per connection, a bounded send
// queue per client (256 messages; a full one closes that client), buffers of
// 1,024 bytes. GOMAXPROCS is Go's default: the cores the process may run on.
// Prints `listening on http://127.0.0.1:PORT` on stdout once listening.
//
//	tools/ws_peers/install.sh      # builds ${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers/gorilla_hub
//	"${XDG_CACHE_HOME:-$HOME/.cache}/fn-registry-ws-peers/gorilla_hub" --port 0
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/gorilla/websocket"
)

type message struct {
	kind int
	data []byte
}

type client struct {
	conn *websocket.Conn
	send chan message
}

type hub struct {
	mu      sync.RWMutex
	clients map[*client]struct{}
}

func (h *hub) add(c *client) {
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
}

// remove takes c out of the hub and closes its queue (no send can follow:
// broadcast holds the read lock while it sends).
func (h *hub) remove(c *client) {
	h.mu.Lock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(c.send)
	}
	h.mu.Unlock()
}

func (h *hub) broadcast(m message) {
	h.mu.RLock()
	for c := range h.clients {
		select {
		case c.send <- m:
		default:
			// A slow client: close its connection; its reader removes it.
			go c.conn.Close()
		}
	}
	h.mu.RUnlock()
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:    1024,
	WriteBufferSize:   1024,
	EnableCompression: false,
	CheckOrigin:       func(*http.Request) bool { return true },
}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(1 << 20)
	c := &client{conn: conn, send: make(chan message, 256)}
	h.add(c)
	go func() {
		for m := range c.send {
			if conn.WriteMessage(m.kind, m.data) != nil {
				conn.Close()
			}
		}
	}()
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			break
		}
		h.broadcast(message{kind, data})
	}
	h.remove(c)
	conn.Close()
}

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1 (0: any free one)")
	flag.Parse()
	if *port < 0 || *port > 65535 {
		fmt.Fprintln(os.Stderr, "gorilla_hub: --port takes 0..65535")
		os.Exit(2)
	}
	h := &hub{clients: make(map[*client]struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", h.serve)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "gorilla_hub: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("listening on http://127.0.0.1:%d\n", ln.Addr().(*net.TCPAddr).Port)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintf(os.Stderr, "gorilla_hub: %v\n", err)
		os.Exit(1)
	}
}
