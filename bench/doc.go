// Package bench races sumgate against the proxies it is compared with
// (Squid with ssl-bump, mitmproxy) on one workload in the hermetic test
// world. It has no code outside its tests: TestPeerRace runs only with
// -sumgate.peers, and peers.sh installs the peers and runs it.
package bench
