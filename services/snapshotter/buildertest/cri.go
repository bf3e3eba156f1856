package buildertest

import (
	"context"
	"fmt"
	"net/http"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
)

// CRIUserAgent is the User-Agent of PullCRI's registry requests, so that a
// registry's log tells them apart from the daemons' and the fleet's.
const CRIUserAgent = "buildertest-cri/1"

// PullCRI pulls and unpacks ref into the daemon the way containerd's CRI
// plugin does: containerd's Go client with
// snapshotters.AppendInfoHandlerWrapper, so every layer's Prepare carries
// the containerd.io/snapshot/cri.* labels and a remote snapshotter can
// answer it with AlreadyExists. The snapshotter is ProxyPluginName; the
// registry is reached over plain http.
func (c *Containerd) PullCRI(ctx context.Context, ref string) error {
	cl, err := client.New(c.Address, client.WithDefaultNamespace(Namespace))
	if err != nil {
		return fmt.Errorf("containerd client: %w", err)
	}
	defer func() { _ = cl.Close() }()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts:   docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
		Headers: http.Header{"User-Agent": {CRIUserAgent}},
	})
	if _, err := cl.Pull(ctx, ref,
		client.WithPullUnpack,
		client.WithPullSnapshotter(ProxyPluginName),
		client.WithResolver(resolver),
		client.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	); err != nil {
		return fmt.Errorf("CRI-style pull of %s: %w", ref, err)
	}
	return nil
}
