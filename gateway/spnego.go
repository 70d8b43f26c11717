package gateway

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// Negotiate (SPNEGO, RFC 4178) carrying NTLM, for the exchange profile:
// Windows clients offered "Negotiate" choose it. Only the NTLM mechanism is
// spoken; the NTLM message is found inside the client's token, and the
// challenge goes back wrapped in a NegTokenResp. A token that is a bare
// NTLM message (some clients send that) is answered bare.

// ntlmOID is 1.3.6.1.4.1.311.2.2.10, DER-encoded.
var ntlmOID = []byte{0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a}

func (c *Credentials) negotiate(st *ConnState, ar AuthRequest, token string) Outcome {
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return c.challenge(ar, false)
	}
	i := bytes.Index(raw, []byte(ntlmSignature))
	if i < 0 {
		// Kerberos or another mechanism: not spoken here.
		c.log.Info("Negotiate token without NTLM refused", "client", ar.Client)
		return c.challenge(ar, false)
	}
	scheme := "Negotiate"
	if i == 0 {
		scheme = "NegotiateRaw"
	}
	out := c.ntlm(st, ar, scheme, base64.StdEncoding.EncodeToString(raw[i:]))
	if scheme == "NegotiateRaw" {
		for j, v := range out.Challenge {
			if rest, ok := strings.CutPrefix(v, "NegotiateRaw"); ok {
				out.Challenge[j] = "Negotiate" + rest
			}
		}
	}
	return out
}

// derLen encodes a DER length.
func derLen(n int) []byte {
	switch {
	case n < 0x80:
		return []byte{byte(n)}
	case n < 0x100:
		return []byte{0x81, byte(n)}
	default:
		return []byte{0x82, byte(n >> 8), byte(n)}
	}
}

func der(tag byte, content ...[]byte) []byte {
	body := bytes.Join(content, nil)
	return append(append([]byte{tag}, derLen(len(body))...), body...)
}

// spnegoChallenge wraps an NTLM challenge in a NegTokenResp:
// negState accept-incomplete, supportedMech NTLM, responseToken.
func spnegoChallenge(type2 []byte) []byte {
	return der(0xa1, der(0x30,
		der(0xa0, []byte{0x0a, 0x01, 0x01}),
		der(0xa1, ntlmOID),
		der(0xa2, der(0x04, type2)),
	))
}
