// Package certs will hold sumgate's enterprise CA (an embedded local CA or
// a real step-ca) and the minting of leaf certificates for intercepted
// hosts. It is built in a later issue; see docs/architecture.md.
package certs
