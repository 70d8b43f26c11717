package directory

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// Keyring holds the cluster key: the secret that seals password verifiers
// before they enter any event, and from which the keys that sign Digest
// and administrator nonces are derived. Every gateway and every directory
// service of a deployment has the same cluster key.
type Keyring struct {
	aead cipher.AEAD
	macs map[string][]byte
}

// KeySize is the size of a cluster key.
const KeySize = 32

// NewKeyring returns the keyring of a 32-byte cluster key.
func NewKeyring(key []byte) (*Keyring, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("cluster key: want %d bytes, have %d", KeySize, len(key))
	}
	sealKey, err := hkdf.Key(sha256.New, key, nil, "rvpd seal v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(sealKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Keyring{aead: aead, macs: map[string][]byte{}}
	for _, purpose := range []string{"digest-nonce", "admin-nonce", "demo-password", "key-check", "console-session"} {
		if k.macs[purpose], err = hkdf.Key(sha256.New, key, nil, "rvpd mac "+purpose+" v1", 32); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// ParseKey decodes a cluster key written as 64 hex digits.
func ParseKey(s string) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("cluster key: want %d hex digits", 2*KeySize)
	}
	return key, nil
}

// LoadOrCreateKey reads the cluster key kept in path, creating it (mode
// 0600) when it does not exist. Development mode keeps its key this way.
func LoadOrCreateKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil {
		key, err := ParseKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, KeySize)
	rand.Read(key)
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("keep the cluster key: %w", err)
	}
	return key, nil
}

// Seal encrypts plain, bound to ad (the subject it belongs to).
func (k *Keyring) Seal(plain, ad []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead()+1)
	rand.Read(nonce)
	out := append([]byte{1}, nonce...) // version 1
	return k.aead.Seal(out, nonce, plain, ad)
}

// Open decrypts what Seal sealed with the same ad.
func (k *Keyring) Open(sealed, ad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != 1 {
		return nil, errors.New("sealed secret: unknown format")
	}
	plain, err := k.aead.Open(nil, sealed[1:1+n], sealed[1+n:], ad)
	if err != nil {
		return nil, errors.New("sealed secret: cannot open it with this cluster key")
	}
	return plain, nil
}

// MAC returns an HMAC-SHA256 of data under the key derived for purpose
// ("digest-nonce", "admin-nonce", "demo-password", "key-check" or
// "console-session").
func (k *Keyring) MAC(purpose string, data []byte) []byte {
	key, ok := k.macs[purpose]
	if !ok {
		panic("keyring: unknown purpose " + purpose)
	}
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// KeyCheck identifies the cluster key without revealing it: 16 hex
// digits of a MAC of a fixed text under it. rvpd init records it
// (events.ClusterCreated) and nodes compare theirs.
func (k *Keyring) KeyCheck() string {
	return hex.EncodeToString(k.MAC("key-check", []byte("rvpd cluster key"))[:8])
}

// SealVerifiers seals v for the directory event of subject.
func (k *Keyring) SealVerifiers(v rvp.Verifiers, subject string) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return k.Seal(data, []byte(subject)), nil
}

// OpenVerifiers opens verifiers sealed for subject.
func (k *Keyring) OpenVerifiers(sealed []byte, subject string) (*rvp.Verifiers, error) {
	data, err := k.Open(sealed, []byte(subject))
	if err != nil {
		return nil, err
	}
	var v rvp.Verifiers
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("verifiers: %w", err)
	}
	return &v, nil
}

// AdminVerifier checks an administrator's password without keeping it:
// the PBKDF2 key of the password, which answers challenges
// (HMAC(key, challenge)); the password never travels.
type AdminVerifier struct {
	Salt []byte `json:"salt"`
	Iter int    `json:"iter"`
	Key  []byte `json:"key"`
}

// Check reports whether password is the one v was derived from.
func (v AdminVerifier) Check(password string) bool {
	key, err := AdminKey(password, v.Salt, v.Iter)
	return err == nil && hmac.Equal(key, v.Key)
}

// SealAdminVerifier seals v for the directory event of administrator
// name.
func (k *Keyring) SealAdminVerifier(v AdminVerifier, name string) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return k.Seal(data, []byte(events.AdminSubject(name))), nil
}

// OpenAdminVerifier opens the verifier sealed for administrator name.
func (k *Keyring) OpenAdminVerifier(sealed []byte, name string) (*AdminVerifier, error) {
	data, err := k.Open(sealed, []byte(events.AdminSubject(name)))
	if err != nil {
		return nil, err
	}
	var v AdminVerifier
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("administrator verifier: %w", err)
	}
	return &v, nil
}

// AdminIterations is the PBKDF2 work factor of administrator passwords.
const AdminIterations = 200_000

// NewAdminVerifier derives the verifier of an administrator's password.
func NewAdminVerifier(password string) (AdminVerifier, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	key, err := AdminKey(password, salt, AdminIterations)
	return AdminVerifier{Salt: salt, Iter: AdminIterations, Key: key}, err
}

// AdminKey is the key both sides derive from an administrator's password.
func AdminKey(password string, salt []byte, iter int) ([]byte, error) {
	return pbkdf2.Key(sha256.New, password, salt, iter, 32)
}

// AdminProof is the answer to an administrator challenge for a request
// body: HMAC-SHA256(key, challenge || SHA-256(body)).
func AdminProof(key, challenge, body []byte) []byte {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, key)
	m.Write(challenge)
	m.Write(sum[:])
	return m.Sum(nil)
}
