package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The raw* types are the schema as decoded, before conversion to File:
// pointers tell an absent value from a zero one, and sizes and durations
// stay text until converted with their field path at hand.
type rawFile struct {
	Pollers  *rawPollers `yaml:"pollers" json:"pollers"`
	Sched    *rawSched   `yaml:"sched" json:"sched"`
	Switches []rawSwitch `yaml:"switches" json:"switches"`
	VMs      []rawVM     `yaml:"vms" json:"vms"`
}

type rawPollers struct {
	Cores []int  `yaml:"cores" json:"cores"`
	Spin  scalar `yaml:"spin" json:"spin"`
	// TxNoticeDelay is Pollers.TxNoticeDelay.
	TxNoticeDelay scalar `yaml:"tx_notice_delay" json:"tx_notice_delay"`
}

type rawSched struct {
	Policy    string `yaml:"policy" json:"policy"`
	Cores     []int  `yaml:"cores" json:"cores"`
	Threshold scalar `yaml:"threshold" json:"threshold"`
	Quantum   scalar `yaml:"quantum" json:"quantum"`
	Grace     scalar `yaml:"grace" json:"grace"`
	Period    scalar `yaml:"period" json:"period"`
	Mode      string `yaml:"mode" json:"mode"`
	CPU       *int   `yaml:"cpu" json:"cpu"`
	FIFO      int    `yaml:"fifo" json:"fifo"`
}

type rawSwitch struct {
	Name    string      `yaml:"name" json:"name"`
	Uplinks []rawUplink `yaml:"uplinks" json:"uplinks"`
}

type rawUplink struct {
	TAP string `yaml:"tap" json:"tap"`
	XDP string `yaml:"xdp" json:"xdp"`
}

type rawVM struct {
	Name     string    `yaml:"name" json:"name"`
	Kernel   string    `yaml:"kernel" json:"kernel"`
	Initrd   string    `yaml:"initrd" json:"initrd"`
	Cmdline  string    `yaml:"cmdline" json:"cmdline"`
	Append   string    `yaml:"append" json:"append"`
	CPUs     *int      `yaml:"cpus" json:"cpus"`
	Mem      scalar    `yaml:"mem" json:"mem"`
	Class    string    `yaml:"class" json:"class"`
	Disks    []rawDisk `yaml:"disks" json:"disks"`
	NICs     []rawNIC  `yaml:"nics" json:"nics"`
	Console  string    `yaml:"console" json:"console"`
	OnReboot string    `yaml:"on_reboot" json:"on_reboot"`
	OnCrash  string    `yaml:"on_crash" json:"on_crash"`
}

type rawDisk struct {
	Path     string `yaml:"path" json:"path"`
	ReadOnly bool   `yaml:"readonly" json:"readonly"`
	OnError  string `yaml:"on_error" json:"on_error"`
}

type rawNIC struct {
	Switch   string `yaml:"switch" json:"switch"`
	MAC      string `yaml:"mac" json:"mac"`
	Offloads *bool  `yaml:"offloads" json:"offloads"`
}

// scalar is a string or number kept as text (sizes, durations). Null means
// absent.
type scalar struct {
	Text string
	Set  bool
}

var scalarType = reflect.TypeFor[scalar]()

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a string or number, got %s", n.Line, describe(n))}}
	}
	*s = scalar{Text: n.Value, Set: true}
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *scalar) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var t string
		if err := json.Unmarshal(b, &t); err != nil {
			return err
		}
		*s = scalar{Text: t, Set: true}
	case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
		*s = scalar{Text: string(b), Set: true}
	default:
		return errors.New("want a string or number")
	}
	return nil
}

// MarshalJSON implements json.Marshaler (for tests that write files back).
func (s scalar) MarshalJSON() ([]byte, error) {
	if !s.Set {
		return []byte("null"), nil
	}
	return json.Marshal(s.Text)
}

// MarshalYAML implements yaml.Marshaler.
func (s scalar) MarshalYAML() (any, error) {
	if !s.Set {
		return nil, nil
	}
	return s.Text, nil
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns a yaml.v3 error into an *Error, taking the first of
// several.
func yamlError(err error) *Error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		l, _ := strconv.Atoi(m[1])
		return &Error{Line: l, Msg: m[2]}
	}
	return &Error{Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// decodeYAML decodes one YAML document into raw, returning where each field
// path is; empty is the message for a document with nothing in it.
func decodeYAML[T any](data []byte, raw *T, empty string) (map[string]int, *Error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &Error{Msg: empty}
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err != io.EOF {
		if err != nil {
			return nil, yamlError(err)
		}
		return nil, &Error{Line: next.Line, Msg: "a second YAML document (a file holds one)"}
	}
	w := walker{lines: map[string]int{}}
	if len(doc.Content) > 0 {
		w.walk(doc.Content[0], reflect.TypeFor[T](), "")
	}
	if w.err != nil {
		return nil, w.err
	}
	// The walk checked keys and kinds; the strict decoder is the backstop.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(raw); err != nil {
		return nil, yamlError(err)
	}
	return w.lines, nil
}

// jsonValid is json.Valid on one value, trailing space allowed.
func jsonValid(data []byte) bool { return json.Valid(data) }

// decodeJSON decodes one JSON object into raw, returning where each field
// path is; empty is the message for no input at all.
func decodeJSON[T any](data []byte, raw *T, empty string) (map[string]int, *Error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{Msg: empty}
	}
	// Syntax and trailing data first, with encoding/json's own verdict.
	dec := json.NewDecoder(bytes.NewReader(data))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return nil, jsonError(data, err, dec.InputOffset())
	}
	if err := dec.Decode(&v); err != io.EOF {
		return nil, &Error{Line: lineAt(data, dec.InputOffset()), Msg: "trailing data after the JSON object"}
	}
	// JSON is YAML: its node tree gives lines, exact-case keys, duplicate
	// keys and kinds with their paths.
	var doc yaml.Node
	w := walker{json: true, lines: map[string]int{}}
	if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) > 0 {
		w.walk(doc.Content[0], reflect.TypeFor[T](), "")
		if w.err != nil {
			return nil, w.err
		}
	}
	strict := json.NewDecoder(bytes.NewReader(data))
	strict.DisallowUnknownFields()
	if err := strict.Decode(raw); err != nil {
		return nil, jsonError(data, err, strict.InputOffset())
	}
	return w.lines, nil
}

func jsonError(data []byte, err error, off int64) *Error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
		if te.Field != "" {
			return &Error{Line: lineAt(data, off), Path: te.Field, Msg: fmt.Sprintf("want %s, got a JSON %s", kindName(te.Type), te.Value)}
		}
	case err == io.ErrUnexpectedEOF:
		return &Error{Line: lineAt(data, int64(len(data))), Msg: "unexpected end of JSON"}
	}
	return &Error{Line: lineAt(data, off), Msg: strings.TrimPrefix(err.Error(), "json: ")}
}

// lineAt is the 1-based line of byte offset off.
func lineAt(data []byte, off int64) int {
	if off < 0 {
		off = 0
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// walker checks a YAML node tree (also JSON's, parsed as YAML) against a
// raw type: exact keys, no duplicates, the right kind of value for each,
// and records each path's line. It does not follow aliases, so its work is
// linear in the document; what aliases bring in is checked by the decoder.
type walker struct {
	json  bool
	lines map[string]int
	err   *Error
}

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	if w.err == nil {
		w.err = &Error{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if w.err != nil {
		return
	}
	if _, ok := w.lines[path]; !ok {
		w.lines[path] = n.Line
	}
	if n.Kind == yaml.AliasNode || n.ShortTag() == "!!null" {
		return
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == scalarType {
		if n.Kind != yaml.ScalarNode || w.json && !isTag(n, "!!str", "!!int", "!!float") {
			w.fail(n, path, "want a string or number, got %s", describe(n))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "want a mapping, got %s", describe(n))
			return
		}
		w.mapping(n, t, path, map[string]int{})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "want a list, got %s", describe(n))
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode || w.json && !isTag(n, "!!str") {
			w.fail(n, path, "want a string, got %s", describe(n))
		}
	case reflect.Int:
		var v int
		if n.Kind != yaml.ScalarNode || !isTag(n, "!!int") || n.Decode(&v) != nil {
			w.fail(n, path, "want an integer, got %s", describe(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || !isTag(n, "!!bool") {
			w.fail(n, path, "want true or false, got %s", describe(n))
		}
	}
}

func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string, seen map[string]int) {
	for i := 0; i+1 < len(n.Content) && w.err == nil; i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !w.json && k.ShortTag() == "!!merge" {
			if v.Kind == yaml.MappingNode {
				w.mapping(v, t, path, map[string]int{})
			}
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			w.fail(k, path, "a key must be a plain name, got %s", describe(k))
			return
		}
		f, ok := fieldByTag(t, k.Value)
		if !ok {
			w.fail(k, p, "unknown key %q (known: %s)", k.Value, strings.Join(tagNames(t), ", "))
			return
		}
		if l, dup := seen[k.Value]; dup {
			w.fail(k, p, "duplicate key (also line %d)", l)
			return
		}
		seen[k.Value] = k.Line
		w.lines[p] = k.Line
		w.walk(v, f.Type, p)
	}
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("yaml") == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		names = append(names, t.Field(i).Tag.Get("yaml"))
	}
	return names
}

func isTag(n *yaml.Node, tags ...string) bool {
	tag := n.ShortTag()
	for _, t := range tags {
		if tag == t {
			return true
		}
	}
	return false
}

// describe names a node's value for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	return strconv.Quote(v)
}

// kindName names a Go type's kind for JSON type errors.
func kindName(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Pointer:
		return "an object"
	}
	return t.Kind().String()
}
