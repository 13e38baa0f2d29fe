// Command bbclient-go sends balancebench's requests with Go's own net/http client and connection pool.
//
// balancebench's Locust users keep the load model (closed or open loop, pacing, warm-up, the request
// budget) and write the records; this program only does what a Go service does when it calls another
// service: http.Client.Get on a Transport cloned from http.DefaultTransport, with the knobs Go has set
// from the pool policy. It reads one command per line on stdin and answers each request with one line
// on stdout, so every request is sent concurrently, as the Locust users send them:
//
//	new   <pool>                 a Transport of its own (one per user, or one shared by a source pod)
//	get   <req> <pool> <path>    GET base+path on that pool's client; answered asynchronously
//	close <pool>                 close the pool's idle connections once its requests are done
//
// It prints "ready" once it takes commands. Answer: req status error pod node client_conn server_conn conn_request latency_us length detail,
// tab-separated. client_conn numbers the TCP connections this process dialled (1, 2, ...), taken from
// httptrace's GotConn, so it is the connection Go's pool actually chose. Standard library only.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type countedConn struct {
	net.Conn
	id int64
}

type pool struct {
	client    *http.Client
	transport *http.Transport
	inflight  sync.WaitGroup
}

type settings struct {
	base           string
	keepalive      bool
	maxIdle        int // -1: unlimited
	maxConns       int // 0: unlimited
	idleTimeout    time.Duration
	connectTimeout time.Duration
	networkTimeout time.Duration
}

var dialed atomic.Int64

func newPool(s settings) *pool {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: s.connectTimeout, KeepAlive: 30 * time.Second}
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: conn, id: dialed.Add(1)}, nil
	}
	transport.DisableKeepAlives = !s.keepalive
	switch {
	case s.maxIdle < 0: // no idle cap
		transport.MaxIdleConnsPerHost = 1 << 30
		transport.MaxIdleConns = 0
	case s.maxIdle == 0: // Go reads 0 as "the default (2)"; a negative value keeps none
		transport.MaxIdleConnsPerHost = -1
	default:
		transport.MaxIdleConnsPerHost = s.maxIdle
		if s.maxIdle > transport.MaxIdleConns {
			transport.MaxIdleConns = 0
		}
	}
	transport.MaxConnsPerHost = s.maxConns
	transport.IdleConnTimeout = s.idleTimeout
	return &pool{client: &http.Client{Transport: transport, Timeout: s.networkTimeout}, transport: transport}
}

func errorKind(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return "connect"
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timeout"
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "reset"
	}
	if strings.Contains(err.Error(), "malformed HTTP") {
		return "protocol"
	}
	return "other"
}

func clean(text string) string {
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(text)
}

func get(p *pool, base, req, path string, out chan<- string) {
	defer p.inflight.Done()
	var conn int64 = -1
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if counted, ok := info.Conn.(*countedConn); ok {
			conn = counted.id
		}
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	start := time.Now()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		out <- fmt.Sprintf("%s\t0\tother\t\t\t-1\t-1\t0\t0\t0\t%s\n", req, clean(err.Error()))
		return
	}
	response, err := p.client.Do(request)
	var body []byte
	if err == nil {
		// Reading to EOF and closing hands the connection back to the pool, as any Go caller does.
		body, err = io.ReadAll(response.Body)
		response.Body.Close()
	}
	latency := time.Since(start).Microseconds()
	if err != nil {
		out <- fmt.Sprintf("%s\t0\t%s\t\t\t-1\t-1\t0\t%d\t0\t%s\n", req, errorKind(err), latency, clean(err.Error()))
		return
	}
	h := response.Header
	out <- fmt.Sprintf(
		"%s\t%d\t\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t\n", req, response.StatusCode,
		clean(h.Get("X-Pod-Name")), clean(h.Get("X-Node-Name")), conn,
		orDefault(h.Get("X-Conn-Id"), "-1"), orDefault(h.Get("X-Conn-Request"), "0"), latency, len(body),
	)
}

func orDefault(value, fallback string) string {
	if _, err := strconv.ParseInt(value, 10, 64); err != nil {
		return fallback
	}
	return value
}

func writeLines(out <-chan string, done chan<- struct{}) {
	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	for line := range out {
		w.WriteString(line)
		if len(out) == 0 { // flush once the queue is empty: one write per burst of answers
			w.Flush()
		}
	}
	w.Flush()
	close(done)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bbclient-go: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	var s settings
	flag.StringVar(&s.base, "base", "", "base URL, e.g. http://10.96.0.10:80")
	flag.BoolVar(&s.keepalive, "keepalive", true, "reuse connections")
	flag.IntVar(&s.maxIdle, "max-idle", 2, "idle connections kept per host; -1 = unlimited")
	flag.IntVar(&s.maxConns, "max-conns", 0, "open connections per host; 0 = unlimited")
	flag.DurationVar(&s.idleTimeout, "idle-timeout", 90*time.Second, "idle connection timeout; 0 = none")
	flag.DurationVar(&s.connectTimeout, "connect-timeout", 5*time.Second, "TCP connect timeout")
	flag.DurationVar(&s.networkTimeout, "network-timeout", 30*time.Second, "whole-request timeout")
	flag.Parse()
	if s.base == "" {
		fail("-base is required")
	}
	s.base = strings.TrimRight(s.base, "/")

	out := make(chan string, 4096)
	written := make(chan struct{})
	go writeLines(out, written)
	out <- "ready\n"
	pools := map[string]*pool{}
	var all sync.WaitGroup
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		fields := strings.Split(scanner.Text(), "\t")
		switch {
		case fields[0] == "new" && len(fields) == 2:
			pools[fields[1]] = newPool(s)
		case fields[0] == "get" && len(fields) == 4:
			p, ok := pools[fields[2]]
			if !ok {
				fail("get on unknown pool %q", fields[2])
			}
			p.inflight.Add(1)
			all.Add(1)
			go func(req, path string) {
				defer all.Done()
				get(p, s.base, req, path, out)
			}(fields[1], fields[3])
		case fields[0] == "close" && len(fields) == 2:
			if p, ok := pools[fields[1]]; ok {
				delete(pools, fields[1])
				go func() { p.inflight.Wait(); p.transport.CloseIdleConnections() }()
			}
		default:
			fail("bad command %q", scanner.Text())
		}
	}
	all.Wait()
	for _, p := range pools {
		p.transport.CloseIdleConnections()
	}
	close(out)
	<-written
}
