// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus), which
// Flux and Argo CD use to judge custom resources, makes of each object given on stdin: one
// JSON object per line in, one line "<status>\t<message>" out. The vmresize tests feed it
// VMResizes and Instances in every phase (tests/unit/operator/test_kstatus.py).
package main

import (
	"bufio"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: bad object:", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Printf("Error\t%v\n", err)
			continue
		}
		fmt.Printf("%s\t%s\n", res.Status, res.Message)
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}
