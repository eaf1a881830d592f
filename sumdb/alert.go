package sumdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// An Alert is a security alert on record: evidence that the checksum
// database showed two inconsistent tree heads (a fork).
type Alert struct {
	Since    time.Time // when the fork was seen
	Evidence string    // the client's message, with both signed tree heads
	Where    string    // the file or etcd key that holds it
}

// A Clearance records that an operator cleared an alert.
type Clearance struct {
	By    string    `json:"by"`    // who cleared it, as the operator said
	At    time.Time `json:"at"`    // when
	Host  string    `json:"host"`  // the host sumgate alert clear ran on
	Alert string    `json:"alert"` // the evidence cleared, with its time
	Where string    `json:"where"` // where the clearance is recorded
}

// ReadAlert returns the alert on record for cfg's key: in etcd with
// cfg.Etcd, in the data directory otherwise, or, with cfg.Etcd, an
// alert a replica using this data directory could not record in etcd
// yet. It reports false if there is none.
func ReadAlert(ctx context.Context, cfg Config) (Alert, bool, error) {
	st, sh, err := openAlertState(ctx, cfg)
	if err != nil {
		return Alert{}, false, err
	}
	if data, err := os.ReadFile(st.alertPath()); err == nil {
		a := parseAlert(data)
		return Alert{Since: a.since, Evidence: a.evidence, Where: st.alertPath()}, true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Alert{}, false, fmt.Errorf("reading security alert: %w", err)
	}
	if sh == nil {
		return Alert{}, false, nil
	}
	resp, err := sh.getAlert(ctx)
	if err != nil {
		return Alert{}, false, err
	}
	if len(resp.Kvs) == 0 {
		return Alert{}, false, nil
	}
	a := parseAlert(resp.Kvs[0].Value)
	return Alert{Since: a.since, Evidence: a.evidence, Where: "etcd key " + sh.dir + "alert"}, true, nil
}

// ClearAlert removes the alert on record for cfg's key, as ReadAlert
// finds it, and records who cleared it, when and what: next to the
// SECURITY-ALERT file (SECURITY-ALERT.cleared-<unix seconds>, the
// evidence and the clearance), or in etcd (alert-cleared/<unix
// nanoseconds>, JSON), in the same transaction that deletes the alert
// if it is still the one read. Every replica sees the deletion through
// its watch and serves again. by must name the operator. It returns
// false if there was no alert.
func ClearAlert(ctx context.Context, cfg Config, by string) (Clearance, bool, error) {
	if by == "" {
		return Clearance{}, false, errors.New("clearing security alert: say who clears it")
	}
	host, _ := os.Hostname()
	cl := Clearance{By: by, At: time.Now().UTC(), Host: host}
	st, sh, err := openAlertState(ctx, cfg)
	if err != nil {
		return Clearance{}, false, err
	}
	if data, err := os.ReadFile(st.alertPath()); err == nil {
		cl.Alert = string(data)
		cl.Where = st.alertPath() + ".cleared-" + strconv.FormatInt(cl.At.Unix(), 10)
		record, _ := json.MarshalIndent(cl, "", "  ")
		if err := writeFileAtomic(cl.Where, append(append(data, "\ncleared: "...), record...), durable); err != nil {
			return Clearance{}, false, fmt.Errorf("recording the clearance: %w", err)
		}
		if err := os.Remove(st.alertPath()); err != nil {
			return Clearance{}, false, fmt.Errorf("clearing security alert: %w", err)
		}
		if sh == nil {
			return cl, true, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Clearance{}, false, fmt.Errorf("reading security alert: %w", err)
	} else if sh == nil {
		return Clearance{}, false, nil
	}
	resp, err := sh.getAlert(ctx)
	if err != nil {
		return Clearance{}, false, err
	}
	if len(resp.Kvs) == 0 {
		return cl, cl.Alert != "", nil
	}
	kv := resp.Kvs[0]
	cl.Alert = string(kv.Value)
	cl.Where = "etcd key " + sh.dir + "alert-cleared/" + strconv.FormatInt(cl.At.UnixNano(), 10)
	record, err := json.Marshal(cl)
	if err != nil {
		return Clearance{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, sh.timeout)
	defer cancel()
	txn, err := sh.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(sh.dir+"alert"), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(sh.dir+"alert"), clientv3.OpPut(sh.dir+"alert-cleared/"+strconv.FormatInt(cl.At.UnixNano(), 10), string(record))).
		Commit()
	if err != nil {
		return Clearance{}, false, unavailable("clearing the security alert", err)
	}
	if !txn.Succeeded {
		return Clearance{}, false, errors.New("clearing security alert: it changed while being cleared; read it again")
	}
	return cl, true, nil
}

// openAlertState opens the alert's state for cfg: the data directory's,
// and with cfg.Etcd the shared state.
func openAlertState(ctx context.Context, cfg Config) (*store, *shared, error) {
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	st, err := openStore(cfg.DataDir, cfg.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sumdb: %w", err)
	}
	if cfg.Etcd == nil {
		return st, nil, nil
	}
	sh, err := openSharedFor(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("sumdb: %w", err)
	}
	return st, sh, nil
}
