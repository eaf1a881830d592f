// Package gateway will hold sumgate's intercepting egress proxy: the
// CONNECT and transparent listeners, the policy decision, the module
// protocol handling, verify-before-pass and the audit spans. It is built
// in a later issue; see docs/architecture.md.
package gateway
