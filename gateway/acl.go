package gateway

import (
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// acl answers the ACL method. Reading returns the node's ACL; clients
// (Messenger, Miranda, librvp) read it at sign-on and librvp will not
// finish signing on without a 200.
//
// Stored ACLs and their enforcement are not built yet: every node has the
// default ACL, and a write is answered with it unchanged (and logged), so
// that librvp's block/unblock writes do not disconnect it.
func (g *Gateway) acl(req *rvp.Request, base *events.Req) (*rvp.Response, error) {
	if base.FromUser != base.Node || base.FromUser.IsZero() {
		return nil, refuse(403, "only %s may read or write the ACL of its node", base.Node)
	}
	if len(req.Body) > 0 {
		g.log.Warn("ACL write not stored: stored ACLs are not implemented yet; the default ACL stays", "node", base.Node.String())
	}
	resp := &rvp.Response{Status: 200, Body: rvp.ACL(events.DefaultACL(base.NodeURL))}
	resp.Set(rvp.HdrContentType, rvp.ContentTypeXML)
	return resp, nil
}
