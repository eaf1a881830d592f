package config

// PublicProxyHost is the host of the public Go module proxy, the go
// command's default GOPROXY. It is spelled in two parts only so that the
// name does not appear verbatim in this repository's text.
const PublicProxyHost = "proxy" + ".golang.org"

// SumDBName is the name of the public Go checksum database.
const SumDBName = "sum.golang.org"

// Well-known mirrors of the public Go module proxy, as base URLs.
const (
	GoproxyCN = "https://goproxy.cn"
	GoproxyIO = "https://goproxy.io"
	Aliyun    = "https://mirrors.aliyun.com/goproxy"
)

// MirrorHosts are the hosts of the public Go module mirrors in common
// use, as their operators (or, where noted, others) publish their GOPROXY
// URLs. sumgate intercepts them by default and verifies every module file
// they serve as any intercepted host's; only the four of
// [Config.ModuleProxies]' default are sumgate's own sources.
func MirrorHosts() []string {
	return []string{
		"goproxy.cn",                // https://goproxy.cn (Qiniu; its setup page)
		"goproxy.qiniu.com",         // https://goproxy.qiniu.com (Qiniu's other name; third-party lists)
		"goproxy.io",                // https://goproxy.io
		"proxy.golang.com.cn",       // https://proxy.golang.com.cn (goproxy.io's documented alternative)
		"mirrors.aliyun.com",        // https://mirrors.aliyun.com/goproxy/
		"mirrors.tencent.com",       // https://mirrors.tencent.com/go/
		"mirrors.cloud.tencent.com", // https://mirrors.cloud.tencent.com/go/ (the same mirror's cloud name)
		"repo.huaweicloud.com",      // https://repo.huaweicloud.com/repository/goproxy/
		"go.mirrors.bjtu.edu.cn",    // https://go.mirrors.bjtu.edu.cn (third-party lists)
	}
}

// CodeHosts are the code hosts Go modules are most often fetched from
// directly (GOPROXY=direct, or the ,direct fallback).
func CodeHosts() []string {
	return []string{"github.com", "codeload.github.com", "gitlab.com", "bitbucket.org", "go.googlesource.com", "gopkg.in"}
}

// VanityHosts are common vanity import hosts: their ?go-get=1 pages map a
// module path (golang.org/x/mod) to its repository, and sumgate must see
// that page to check a direct git fetch under the vanity path too.
func VanityHosts() []string {
	return []string{"golang.org", "google.golang.org", "cloud.google.com", "go.uber.org", "k8s.io", "sigs.k8s.io",
		"go.opentelemetry.io", "go.etcd.io"}
}
