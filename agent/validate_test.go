package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/colibrivm/colibri/agent/api"
)

// loadSpec parses and validates the API's OpenAPI document.
func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		t.Fatalf("the OpenAPI document does not parse: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	// The clients speak to http://colibri over the socket.
	doc.Servers = openapi3.Servers{{URL: "http://colibri"}}
	return doc
}

// validator is an http.RoundTripper that checks every request and every
// response against the OpenAPI document, recording what does not match.
type validator struct {
	t      testing.TB
	next   http.RoundTripper
	router routers.Router

	mu       sync.Mutex
	failures []string
	checked  int
}

func newValidator(t testing.TB, next http.RoundTripper) *validator {
	doc := loadSpec(t)
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &validator{t: t, next: next, router: r}
}

func (v *validator) fail(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.failures = append(v.failures, fmt.Sprintf(format, args...))
}

// streams are answers the validator does not read to their end.
func isStream(req *http.Request) bool {
	return strings.HasSuffix(req.URL.Path, "/events") || req.URL.Query().Get("follow") == "true"
}

func (v *validator) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		// Unknown routes and methods are tested for their error bodies.
		resp, rerr := v.next.RoundTrip(req)
		return resp, rerr
	}
	check := req.Clone(req.Context())
	check.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true}}
	reqErr := openapi3filter.ValidateRequest(req.Context(), in)
	resp, err := v.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	// A request the document refuses must be one the agent refuses too.
	if reqErr != nil && resp.StatusCode < 400 {
		v.fail("%s %s: the document refuses the request (%v) but the agent answered %d", req.Method, req.URL, reqErr, resp.StatusCode)
	}
	if isStream(req) {
		return resp, nil
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	opts := &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true}
	ct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/json") {
		opts.ExcludeResponseBody = true
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(rb)), Options: opts}
	if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
		v.fail("%s %s → %d: the answer does not match the document: %v\n%s", req.Method, req.URL, resp.StatusCode, err, rb)
	}
	v.mu.Lock()
	v.checked++
	v.mu.Unlock()
	return resp, nil
}

// report fails the test for every mismatch seen.
func (v *validator) report() {
	v.t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, f := range v.failures {
		v.t.Error(f)
	}
	v.t.Logf("%d requests and answers checked against the OpenAPI document", v.checked)
}
