// Command flux-health evaluates Flux kustomize-controller healthCheckExprs over
// objects with Flux's own status reader (github.com/fluxcd/pkg/runtime/cel), so
// the expressions hyft ships are tested exactly as Flux runs them.
//
//	stdin:  {"healthCheckExprs": [{apiVersion, kind, current, inProgress, failed}], "objects": [obj, ...]}
//	stdout: [{"status": "Current|InProgress|Failed|Unknown|...", "error": "..."}, ...]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// version is set at build time to a digest of this module's files.
var version = "dev"

type input struct {
	HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
	Objects          []json.RawMessage             `json:"objects"`
}

type result struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("flux-health", version)
		return
	}
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("reading input: %v", err)
	}
	newReader, err := cel.NewStatusReader(in.HealthCheckExprs)
	if err != nil {
		fail("%v", err)
	}
	reader := newReader(nil) // a RESTMapper is only needed to fetch objects; ours are given
	out := make([]result, 0, len(in.Objects))
	for i, raw := range in.Objects {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil { // integers stay int64, as from the API server
			fail("objects[%d]: %v", i, err)
		}
		status, err := reader.ReadStatusForObject(context.Background(), nil, obj)
		if err != nil {
			fail("objects[%d]: %v", i, err)
		}
		r := result{Status: status.Status.String()}
		if status.Error != nil {
			r.Error = status.Error.Error()
		}
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "flux-health: "+format+"\n", args...)
	os.Exit(2)
}
