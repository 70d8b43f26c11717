package main

import (
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
)

// TestNATSPasswordNotShown: a password in a -nats URL
// (nats://user:password@host) is shown nowhere: not in the node's banner,
// not in the log when the connection comes back, not in the error when
// the cluster cannot be reached.
func TestNATSPasswordNotShown(t *testing.T) {
	const secret = "s3cret-nats-pw"
	port := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}()
	start := func() *server.Server {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, Username: "rvpd", Password: secret, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS server not ready")
		}
		return ns
	}
	ns := start()
	url := "nats://rvpd:" + secret + "@127.0.0.1:" + strconv.Itoa(port)
	logs := newSyncBuffer()
	log := slog.New(slog.NewTextHandler(logs, nil))
	nc, _, release, err := clusterLink("rvpd-node-test", url, natsclient.Flags{}, log)()
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	var banner strings.Builder
	printNodeBanner(&banner, nodeFlags{name: "n1", data: "./node-data"}, roleSet{}, nc)
	if strings.Contains(banner.String(), secret) {
		t.Errorf("the node's banner shows the NATS password:\n%s", banner.String())
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	defer ns.Shutdown()
	if _, err := logs.waitMatch(regexp.MustCompile(`NATS connection back`), 15*time.Second, nil); err != nil {
		t.Fatalf("no reconnection logged: %v\n%s", err, logs.String())
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log shows the NATS password:\n%s", logs.String())
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	if _, _, release, err := clusterLink("rvpd-node-test", url, natsclient.Flags{}, log)(); err == nil {
		release()
		t.Error("connected to a stopped NATS server")
	} else if strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the NATS password: %v", err)
	}
}
