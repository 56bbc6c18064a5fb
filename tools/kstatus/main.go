// Command kstatus prints the kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library
// Flux and cli-utils use to decide health) of each object read as JSON from stdin: one object
// or a List as `kubectl get -o json` prints it. One line per object:
//
//	<kind>/<namespace>/<name> <Status> <message>
//
// The end-to-end tests run it on live objects of the operator's kinds.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	// Decodes whole numbers as int64, as objects read from the API server hold them.
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(raw, &doc); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not a JSON object:", err)
		os.Exit(2)
	}
	objects := []map[string]interface{}{doc}
	if items, ok := doc["items"].([]interface{}); ok {
		objects = objects[:0]
		for _, item := range items {
			if obj, ok := item.(map[string]interface{}); ok {
				objects = append(objects, obj)
			}
		}
	}
	for _, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		result, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s/%s/%s: %v\n", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			os.Exit(1)
		}
		fmt.Printf("%s/%s/%s %s %s\n", u.GetKind(), u.GetNamespace(), u.GetName(), result.Status, result.Message)
	}
}
