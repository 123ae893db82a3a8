// The test bed's cluster DNS: CoreDNS with only the plugins its Corefile uses (tests/testbed/dns.py),
// linked the way CoreDNS documents for builds from external source
// (coredns.io/2017/07/25/compile-time-enabling-or-disabling-plugins). The full plugin set pulls in the
// AWS, Azure, Google and Datadog SDKs, which no test bed query needs and a cold build would compile.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order of a query's plugin chain: the subset of CoreDNS's plugin.cfg, in plugin.cfg's order.
var directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes", "forward"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
