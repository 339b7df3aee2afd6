// Package client is a Go client of colibri's agent API (see agent/api)
// over the agent's Unix socket. Every method is one request; errors from
// the agent are *Error values with the status code and the agent's
// message.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/colibrivm/colibri/agent/api"
)

// Client talks to one agent.
type Client struct {
	socket string
	http   *http.Client
}

// Option adjusts a Client.
type Option func(*options)

type options struct {
	wrap func(http.RoundTripper) http.RoundTripper
}

// WithTransport wraps the client's transport (the Unix-socket one) in
// another, e.g. to log or check every request.
func WithTransport(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(o *options) { o.wrap = wrap }
}

// New returns a client of the agent listening on socket.
func New(socket string, opts ...Option) *Client {
	var o options
	for _, f := range opts {
		f(&o)
	}
	var tr http.RoundTripper = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	if o.wrap != nil {
		tr = o.wrap(tr)
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Do sends a raw request to the agent (for what the typed methods do not
// cover, and for tests): path is the URL path with its query, body is
// sent as it is.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://colibri"+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.http.Do(req)
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Error is an error response from the agent.
type Error struct {
	// Status is the HTTP status code; Message the agent's message.
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// IsNotFound reports whether err is the agent's 404 (no such VM).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// IsConflict reports whether err is the agent's 409 (the VM's state
// forbids it, or the name is taken).
func IsConflict(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusConflict
}

// do sends one request and decodes a JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := c.send(ctx, method, path, query, body, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent: decoding the answer to %s %s: %w", method, path, err)
	}
	return nil
}

// send sends one request and returns a successful response, whose body
// the caller closes.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body any, accept string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("agent: encoding the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := "http://colibri" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return nil, fmt.Errorf("no colibri agent on %s (start one with 'colibri agent --socket %s'): %w", c.socket, c.socket, err)
		}
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e api.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return nil, &Error{Status: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}

func vmPath(name string, rest string) string { return "/vms/" + url.PathEscape(name) + rest }

// Ping returns the agent's versions.
func (c *Client) Ping(ctx context.Context) (api.Ping, error) {
	var p api.Ping
	return p, c.do(ctx, "GET", "/ping", nil, nil, &p)
}

// VMs lists the VMs.
func (c *Client) VMs(ctx context.Context) ([]api.VM, error) {
	var vms []api.VM
	return vms, c.do(ctx, "GET", "/vms", nil, nil, &vms)
}

// CreateVM creates a VM from spec, and starts it if start.
func (c *Client) CreateVM(ctx context.Context, spec api.VMSpec, start bool) (api.VM, error) {
	return c.CreateVMRaw(ctx, spec, start)
}

// CreateVMRaw is CreateVM with any JSON-encodable body (a spec decoded
// from a file as it is, say).
func (c *Client) CreateVMRaw(ctx context.Context, body any, start bool) (api.VM, error) {
	var vm api.VM
	var q url.Values
	if start {
		q = url.Values{"start": {"true"}}
	}
	return vm, c.do(ctx, "POST", "/vms", q, body, &vm)
}

// VM returns one VM.
func (c *Client) VM(ctx context.Context, name string) (api.VM, error) {
	var vm api.VM
	return vm, c.do(ctx, "GET", vmPath(name, ""), nil, nil, &vm)
}

// Start boots a VM.
func (c *Client) Start(ctx context.Context, name string) (api.VM, error) {
	return c.action(ctx, name, "start", nil)
}

// Pause pauses a VM.
func (c *Client) Pause(ctx context.Context, name string) (api.VM, error) {
	return c.action(ctx, name, "pause", nil)
}

// Resume resumes a paused VM.
func (c *Client) Resume(ctx context.Context, name string) (api.VM, error) {
	return c.action(ctx, name, "resume", nil)
}

// Stop stops a VM and returns once it has ended.
func (c *Client) Stop(ctx context.Context, name string, opts api.Stop) (api.VM, error) {
	return c.action(ctx, name, "stop", opts)
}

func (c *Client) action(ctx context.Context, name, action string, body any) (api.VM, error) {
	var vm api.VM
	return vm, c.do(ctx, "POST", vmPath(name, "/"+action), nil, body, &vm)
}

// Delete deletes a VM (with force, a running one too).
func (c *Client) Delete(ctx context.Context, name string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.do(ctx, "DELETE", vmPath(name, ""), q, nil, nil)
}

// Wait waits until the VM's run ends and says how it ended.
func (c *Client) Wait(ctx context.Context, name string) (api.Exit, error) {
	var e api.Exit
	return e, c.do(ctx, "GET", vmPath(name, "/wait"), nil, nil, &e)
}

// Counters returns a VM's measurements.
func (c *Client) Counters(ctx context.Context, name string) (api.Counters, error) {
	var ct api.Counters
	return ct, c.do(ctx, "GET", vmPath(name, "/counters"), nil, nil, &ct)
}

// Console returns a VM's console output from offset (the oldest kept
// when older) and, with follow, keeps the stream open. The caller closes
// the reader; start is the offset of its first byte.
func (c *Client) Console(ctx context.Context, name string, offset int64, follow bool) (rc io.ReadCloser, start int64, err error) {
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.send(ctx, "GET", vmPath(name, "/console"), q, nil, "")
	if err != nil {
		return nil, 0, err
	}
	start, _ = strconv.ParseInt(resp.Header.Get("X-Console-Offset"), 10, 64)
	return resp.Body, start, nil
}

// Switches returns the switches with their ports.
func (c *Client) Switches(ctx context.Context) ([]api.Switch, error) {
	var s []api.Switch
	return s, c.do(ctx, "GET", "/switches", nil, nil, &s)
}

// Sched returns the scheduler's state.
func (c *Client) Sched(ctx context.Context) (api.Sched, error) {
	var s api.Sched
	return s, c.do(ctx, "GET", "/sched", nil, nil, &s)
}

// SetSched changes the policy, live.
func (c *Client) SetSched(ctx context.Context, p api.SetSched) (api.Sched, error) {
	var s api.Sched
	return s, c.do(ctx, "PUT", "/sched", nil, p, &s)
}

// Metrics returns the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, "GET", "/metrics", nil, nil, "text/plain")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Events streams the agent's events to fn until ctx ends, the agent
// closes the stream, or fn returns false.
func (c *Client) Events(ctx context.Context, fn func(api.Event) bool) error {
	resp, err := c.send(ctx, "GET", "/events", nil, nil, "application/x-ndjson")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("agent: decoding an event: %w", err)
		}
		if !fn(ev) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
