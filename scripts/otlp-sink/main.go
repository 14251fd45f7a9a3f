// otlp-sink: an OTLP/HTTP trace receiver for the tests. It decodes every request with the
// OpenTelemetry Collector's own pdata unmarshalers (JSON or protobuf, as the Content-Type says),
// so a payload the real collector would refuse is refused here too (HTTP 400, and a line on
// stderr), and prints each span it accepts as one JSON line on stdout.
//
//	otlp-sink [-listen 127.0.0.1:0]
//
// The first stdout line is "listening http://HOST:PORT".
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

type span struct {
	Service    string            `json:"service"`
	TraceID    string            `json:"trace_id"`
	SpanID     string            `json:"span_id"`
	ParentID   string            `json:"parent_span_id"`
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	StartNanos uint64            `json:"start_ns"`
	EndNanos   uint64            `json:"end_ns"`
	Attributes map[string]string `json:"attributes"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "otlp-sink:", err)
		os.Exit(1)
	}
	var out sync.Mutex
	fmt.Printf("listening http://%s\n", ln.Addr())
	http.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var traces ptrace.Traces
		contentType := r.Header.Get("Content-Type")
		switch {
		case strings.HasPrefix(contentType, "application/json"):
			traces, err = (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(body)
		case strings.HasPrefix(contentType, "application/x-protobuf"):
			traces, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(body)
		default:
			err = fmt.Errorf("unsupported Content-Type %q", contentType)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "otlp-sink: refused:", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var lines []string
		rss := traces.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			rs := rss.At(i)
			service := ""
			if v, ok := rs.Resource().Attributes().Get("service.name"); ok {
				service = v.AsString()
			}
			sss := rs.ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				spans := sss.At(j).Spans()
				for k := 0; k < spans.Len(); k++ {
					s := spans.At(k)
					attributes := map[string]string{}
					s.Attributes().Range(func(key string, v pcommon.Value) bool {
						attributes[key] = v.AsString()
						return true
					})
					parent := ""
					if !s.ParentSpanID().IsEmpty() {
						parent = s.ParentSpanID().String()
					}
					line, _ := json.Marshal(span{
						Service:    service,
						TraceID:    s.TraceID().String(),
						SpanID:     s.SpanID().String(),
						ParentID:   parent,
						Name:       s.Name(),
						Kind:       s.Kind().String(),
						StartNanos: uint64(s.StartTimestamp()),
						EndNanos:   uint64(s.EndTimestamp()),
						Attributes: attributes,
					})
					lines = append(lines, string(line))
				}
			}
		}
		out.Lock()
		for _, l := range lines {
			fmt.Println(l)
		}
		out.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	})
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "otlp-sink:", err)
		os.Exit(1)
	}
}
