package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
)

// AdminClient speaks to the DirectoryService as an administrator: a
// challenge, then the request with a proof bound to it. The password
// stays here; only the key derived from it proves anything, and only for
// one request.
type AdminClient struct {
	Conn     *nats.Conn
	Name     string
	Password string

	mu   sync.Mutex
	keys map[string][]byte // derived keys, by salt
}

// AdminError is the directory service's refusal.
type AdminError struct {
	Code int // 401, 403, 400, 404, 409, 500
	Msg  string
}

func (e *AdminError) Error() string { return e.Msg }

func (a *AdminClient) request(ctx context.Context, req AdminRequest) (*AdminResponse, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := a.Conn.RequestWithContext(ctx, events.DirectoryAdminSubject, data)
	if err != nil {
		return nil, fmt.Errorf("ask the directory service: %w (is rvpd running?)", err)
	}
	var resp AdminResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("answer of the directory service: %w", err)
	}
	if resp.Error != "" {
		return nil, &AdminError{Code: resp.Code, Msg: resp.Error}
	}
	return &resp, nil
}

// Do performs op with args and decodes its result into out (when not nil).
func (a *AdminClient) Do(ctx context.Context, op string, args, out any) error {
	argData, err := json.Marshal(args)
	if err != nil {
		return err
	}
	ch, err := a.request(ctx, AdminRequest{Op: "challenge", Admin: a.Name})
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.keys == nil {
		a.keys = map[string][]byte{}
	}
	key, ok := a.keys[string(ch.Salt)]
	a.mu.Unlock()
	if !ok {
		if key, err = AdminKey(a.Password, ch.Salt, ch.Iter); err != nil {
			return err
		}
		a.mu.Lock()
		a.keys[string(ch.Salt)] = key
		a.mu.Unlock()
	}
	resp, err := a.request(ctx, AdminRequest{
		Op: op, Admin: a.Name, Challenge: ch.Challenge, Args: argData,
		Proof: AdminProof(key, ch.Challenge, ProofBody(op, argData)),
	})
	if err != nil {
		return err
	}
	if out != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}
