// cri-reset stops and removes every pod sandbox of a CRI runtime, so the runtime tears down each pod's network
// (CNI DEL) and containers the way the kubelet would. The local node's `stop` runs it after the kubelet has
// stopped and before containerd does, so nothing of the node's pods outlives it.
//
//	cri-reset -endpoint unix:///path/to/containerd.sock [-timeout 60s]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI endpoint, e.g. unix:///run/containerd/containerd.sock")
	timeout := flag.Duration("timeout", 60*time.Second, "time allowed for the whole reset")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "cri-reset: -endpoint is required")
		os.Exit(2)
	}
	if err := reset(*endpoint, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "cri-reset: %v\n", err)
		os.Exit(1)
	}
}

func reset(endpoint string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	defer conn.Close()
	runtime := runtimeapi.NewRuntimeServiceClient(conn)

	sandboxes, err := runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	failed := 0
	for _, sandbox := range sandboxes.Items {
		name := sandbox.Metadata.Namespace + "/" + sandbox.Metadata.Name
		// Stop kills the containers and releases the network; remove deletes what is left.
		if _, err := runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sandbox.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-reset: stop %s: %v\n", name, err)
			failed++
			continue
		}
		if _, err := runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sandbox.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-reset: remove %s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Printf("removed pod sandbox %s\n", name)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d pod sandboxes could not be removed", failed, len(sandboxes.Items))
	}
	return nil
}
